//! Network health: routing tables full enough, and close groups that every vault agrees on.
//!
//! A vault is healthy when its routing table holds at least min(N−1, 20) peers. The network is
//! healthy when, for `probes` random addresses, the `group` closest vaults found by lookups
//! started from `starters` different vaults equal the true closest computed from every vault id.

use std::time::Duration;

use futures::{stream, StreamExt};
use kura_client::Client;
use kura_node::wire::VaultStatus;
use kura_node::{close_group, Address, PeerId};
use rand::seq::SliceRandom;

/// How long one status query or lookup may take during a health check.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a health check does.
#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    /// Random addresses probed.
    pub probes: usize,
    /// Vaults each address is looked up from.
    pub starters: usize,
    /// Close group size compared.
    pub group: usize,
    /// Queries in flight at once.
    pub concurrency: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { probes: 100, starters: 3, group: 8, concurrency: 32 }
    }
}

/// One vault's part of a health report.
#[derive(Debug, Clone)]
pub struct VaultHealth {
    /// Testnet index.
    pub index: usize,
    /// Peer id.
    pub peer: PeerId,
    /// The vault's status, or why it could not be read.
    pub status: Result<VaultStatus, String>,
}

impl VaultHealth {
    /// Its routing table size, if it answered.
    pub fn routing_table(&self) -> Option<u32> {
        self.status.as_ref().ok().map(|s| s.routing_table_size)
    }
}

/// A lookup whose answer differed from the true close group.
#[derive(Debug, Clone)]
pub struct Disagreement {
    /// The address probed.
    pub target: Address,
    /// The vault that ran the lookup.
    pub from: PeerId,
    /// The true closest vaults.
    pub expected: Vec<PeerId>,
    /// What the lookup returned, or why it failed.
    pub got: Result<Vec<PeerId>, String>,
}

/// The outcome of a health check.
#[derive(Debug, Clone, Default)]
pub struct HealthReport {
    /// Per vault.
    pub vaults: Vec<VaultHealth>,
    /// The routing table size each vault needs.
    pub required_table: usize,
    /// Lookups run (0 when the routing tables were not yet full enough to bother).
    pub lookups: usize,
    /// Lookups that disagreed with the truth.
    pub disagreements: Vec<Disagreement>,
}

/// The routing table size a vault of an `n`-vault network needs to be healthy.
pub fn required_table_size(n: usize) -> usize {
    n.saturating_sub(1).min(20)
}

impl HealthReport {
    /// Whether every vault and every lookup passed.
    pub fn healthy(&self) -> bool {
        !self.vaults.is_empty()
            && self.lookups > 0
            && self.disagreements.is_empty()
            && self.vaults.iter().all(|v| self.table_ok(v))
    }

    fn table_ok(&self, v: &VaultHealth) -> bool {
        v.routing_table().is_some_and(|n| n as usize >= self.required_table)
    }

    /// What is wrong, one line per problem (empty when healthy).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.vaults.is_empty() {
            out.push("no vault is running".to_string());
        }
        for v in self.vaults.iter().filter(|v| !self.table_ok(v)) {
            out.push(match &v.status {
                Ok(s) => format!(
                    "vault {} ({}) has {} peers in its routing table, needs {}",
                    v.index, v.peer, s.routing_table_size, self.required_table
                ),
                Err(e) => format!("vault {} ({}) did not answer: {e}", v.index, v.peer),
            });
        }
        for d in self.disagreements.iter().take(5) {
            out.push(match &d.got {
                Ok(got) => {
                    let missing = d.expected.iter().filter(|p| !got.contains(p)).count();
                    format!(
                        "lookup of {} from {} missed {missing} of the {} closest vaults",
                        d.target,
                        d.from,
                        d.expected.len()
                    )
                }
                Err(e) => format!("lookup of {} from {} failed: {e}", d.target, d.from),
            });
        }
        if self.disagreements.len() > 5 {
            out.push(format!("... and {} more lookups disagreed", self.disagreements.len() - 5));
        }
        out
    }
}

/// Checks the health of the vaults `(index, peer)` through `client`.
pub async fn check(client: &Client, vaults: &[(usize, PeerId)], cfg: HealthConfig) -> HealthReport {
    let mut report = HealthReport { required_table: required_table_size(vaults.len()), ..Default::default() };
    report.vaults = stream::iter(vaults.iter().copied())
        .map(|(index, peer)| async move {
            let status = match tokio::time::timeout(QUERY_TIMEOUT, client.vault_status(peer)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_string()),
            };
            VaultHealth { index, peer, status }
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    report.vaults.sort_by_key(|v| v.index);
    if report.vaults.is_empty() || !report.vaults.iter().all(|v| report.table_ok(v)) {
        return report;
    }

    let ids: Vec<PeerId> = vaults.iter().map(|(_, p)| *p).collect();
    let mut jobs = Vec::with_capacity(cfg.probes * cfg.starters);
    {
        let mut rng = rand::thread_rng();
        for _ in 0..cfg.probes {
            let target = Address::random();
            let expected = close_group(&target, ids.iter().copied(), cfg.group);
            for from in ids.choose_multiple(&mut rng, cfg.starters) {
                jobs.push((target, *from, expected.clone()));
            }
        }
    }
    report.lookups = jobs.len();
    let group = cfg.group as u16;
    report.disagreements = stream::iter(jobs)
        .map(|(target, from, expected)| async move {
            let got = match tokio::time::timeout(
                QUERY_TIMEOUT,
                client.node().remote_closest(from, target, group),
            )
            .await
            {
                Ok(Ok(peers)) => Ok(peers),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_string()),
            };
            Disagreement { target, from, expected, got }
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .filter(|d| std::future::ready(d.got.as_ref() != Ok(&d.expected)))
        .collect()
        .await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_table_is_capped_at_twenty() {
        assert_eq!(required_table_size(1), 0);
        assert_eq!(required_table_size(12), 11);
        assert_eq!(required_table_size(21), 20);
        assert_eq!(required_table_size(50), 20);
    }

    fn status(peer: PeerId, table: u32) -> Result<VaultStatus, String> {
        Ok(VaultStatus {
            peer_id: peer,
            listen_addrs: vec![],
            routing_table_size: table,
            records_stored: 0,
            records_by_kind: vec![],
            bytes_used: 0,
            capacity: 0,
            uptime_secs: 0,
            malformed_requests: 0,
            rate_limited: 0,
            refused_full: 0,
            corrupt_records: 0,
            pending_repairs: 0,
            shards_repaired: 0,
            shards_handed_over: 0,
            repair_bytes: 0,
            audits_passed: 0,
            audit_failures: 0,
            bad_shards_served: 0,
            account: kura_node::Address([0; 32]),
            earned: 0,
            balance: None,
            transfers_signed: 0,
            ledger_evidence: 0,
            workers: vec![],
            settings: vec![],
            version: String::new(),
        })
    }

    #[test]
    fn report_needs_tables_lookups_and_agreement() {
        let peer = PeerId::random();
        let mut r = HealthReport {
            vaults: vec![VaultHealth { index: 0, peer, status: status(peer, 11) }],
            required_table: 11,
            lookups: 3,
            disagreements: vec![],
        };
        assert!(r.healthy());
        r.vaults[0].status = status(peer, 10);
        assert!(!r.healthy());
        assert!(r.problems()[0].contains("needs 11"));
        r.vaults[0].status = status(peer, 11);
        r.disagreements.push(Disagreement {
            target: Address::random(),
            from: peer,
            expected: vec![peer],
            got: Ok(vec![]),
        });
        assert!(!r.healthy());
        assert!(r.problems()[0].contains("missed 1 of the 1"));
        r.disagreements.clear();
        r.lookups = 0;
        assert!(!r.healthy(), "a check that ran no lookup proves nothing");
    }
}
