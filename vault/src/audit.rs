//! Storage audits: every vault checks, now and then, that the other members of its chunks'
//! close groups still hold the shards they say they hold.
//!
//! A round picks a random sample of the chunks this vault holds a shard of and runs the repair
//! examination on each with audits on: the vault re-reads its own shard (a missing or corrupt
//! one is dropped, so it stops claiming it), asks every other group member which indices it
//! holds, and challenges each claimed shard with a random-slice Bao proof
//! ([`kura_node::audit`]), checked against the shard hash in its own header. That header was
//! checked against the chunk's address when this vault stored it (the address commits to every
//! shard hash), so the proof is checked against the address alone: no client can make two
//! vaults' headers of one address differ. A member that claims a shard and cannot prove it, or
//! has answered no audit for `audit_silence_secs`, is reported (a warning, and the
//! `audit_failures` counter in status) and penalized: dropped from this vault's routing table
//! for a while, so lookups and placement stop counting on it. A member that answers "busy" or
//! "rate limited", or misses an answer now and then, keeps its claim and is asked again later. Its shards count as lost in the
//! plan, and the chunk's coordinator rebuilds them on other members; every holder audits, so
//! the coordinator finds the loss in its own rounds too. A member that handed the shard on
//! between claiming and being challenged says so ([`RemoteError::Released`]): its claim is
//! void, but it is not penalized, since handing on is what repair asks of it.
//!
//! Owns: the audit counters and the vaults silent lately. Talks to: the records (to answer a
//! challenge), peers (through `Ctx`). The audit round, an examination of what this vault
//! holds with audits on, is run by repair (`crate::repair::AuditWorker`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kura_node::audit::{self, Challenge};
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{Address, NodeError, PeerId, RecordKey, ShardHeader};
use tracing::{debug, warn};

use crate::context::{internal, Ctx};
use crate::recent::Recent;
use crate::records::{Records, MEMORY_LEN};


/// Counters of the audit worker.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Challenges answered with a valid proof.
    pub passed: AtomicU64,
    /// Challenges failed: wrong proof, claimed shard gone, or no answer.
    pub failed: AtomicU64,
    /// Rounds run.
    pub rounds: AtomicU64,
}

/// What came of challenging one claimed shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The proof verified.
    Passed,
    /// The holder failed (the reason is logged).
    Failed,
    /// No conclusion (the holder was busy); ask again another time.
    Inconclusive,
    /// The holder handed the shard on since it claimed it: the claim is void, nothing failed.
    Withdrawn,
}

/// What a challenge came to, before it is counted.
enum Outcome {
    Proved,
    Busy,
    Released,
    /// No answer at all (a timeout, a dropped connection): why.
    Silent(String),
    /// Why the holder failed.
    Failed(String),
}

/// The auditor: challenges the holders of shards, and answers their challenges.
#[derive(Clone)]
pub(crate) struct Auditor {
    ctx: Ctx,
    records: Records,
    state: Arc<State>,
}

struct State {
    stats: AuditStats,
    /// Vaults that left audits unanswered, since when (forgotten when they answer).
    silent: Recent<PeerId>,
}

impl Auditor {
    /// The auditor of the vault whose context is `ctx`.
    pub(crate) fn new(ctx: Ctx, records: Records) -> Auditor {
        // A spell of silence is forgotten a while after it ends, so an old one is not added to a new.
        let memory = Duration::from_secs(ctx.config().audit_silence_secs.saturating_mul(4).max(60));
        let state = State { stats: AuditStats::default(), silent: Recent::new(memory, MEMORY_LEN) };
        Auditor { ctx, records, state: Arc::new(state) }
    }

    /// The audit counters.
    pub(crate) fn stats(&self) -> &AuditStats {
        &self.state.stats
    }

    /// Answers a storage audit of shard `index` of `chunk`: reads it (verifying it, so a
    /// damaged or vanished one is dropped and reported as not held) and proves the slices asked.
    /// A shard handed on since the auditor asked what this vault holds is reported as such.
    pub(crate) async fn prove(&self, chunk: Address, index: u8, challenge: Challenge) -> Result<Vec<u8>, RemoteError> {
        let shards = self.records.read_shards(chunk).await.map_err(internal)?;
        let Some(shard) = shards.into_iter().find(|s| s.header.index == index) else {
            if self.records.released(RecordKey::shard(chunk, index)) {
                return Err(RemoteError::Released { chunk, index });
            }
            return Err(RemoteError::NotHeld { chunk, index });
        };
        tokio::task::spawn_blocking(move || audit::prove(&shard.data, &challenge))
            .await
            .map_err(internal)?
            .map_err(|e| RemoteError::Invalid(e.to_string()))
    }

    /// Audits shard `index` of `header`'s chunk on `peer`, counts the verdict and penalizes a
    /// failure.
    pub(crate) async fn audit_and_report(&self, peer: PeerId, header: &ShardHeader, index: u8) -> Result<Verdict, NodeError> {
        let outcome = self.audit_holder(peer, header, index).await;
        match &outcome {
            Outcome::Silent(_) => {}
            _ => self.state.silent.forget(&peer),
        }
        let outcome = match outcome {
            // One missed answer is load or a passing fault; only silence that lasts is a
            // failure, so a flood aimed at a vault cannot get it dropped by everyone.
            Outcome::Silent(reason) => {
                let spell = self.state.silent.noted_for(peer);
                if spell >= Duration::from_secs(self.ctx.config().audit_silence_secs) {
                    Outcome::Failed(format!("{reason}; silent for {} s", spell.as_secs()))
                } else {
                    debug!(%peer, %reason, secs = spell.as_secs(), "audit unanswered; asking again later");
                    Outcome::Busy
                }
            }
            other => other,
        };
        match outcome {
            Outcome::Proved => {
                self.state.stats.passed.fetch_add(1, Ordering::Relaxed);
                Ok(Verdict::Passed)
            }
            Outcome::Busy => Ok(Verdict::Inconclusive),
            Outcome::Released => {
                debug!(%peer, chunk = %header.address(), index, "audited shard was handed on meanwhile");
                Ok(Verdict::Withdrawn)
            }
            Outcome::Silent(reason) | Outcome::Failed(reason) => {
                self.state.stats.failed.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, chunk = %header.address(), index, %reason, "storage audit failed");
                self.ctx.node().penalize(peer, format!("failed a storage audit: {reason}")).await?;
                // It loses its age here too: it votes, and holds alone, no more.
                self.ctx.elders().demote(peer);
                Ok(Verdict::Failed)
            }
        }
    }

    /// Challenges `peer` to prove it holds shard `index` of `header`'s chunk.
    async fn audit_holder(&self, peer: PeerId, header: &ShardHeader, index: u8) -> Outcome {
        let Some(hash) = header.shard_hashes.get(usize::from(index)) else {
            return Outcome::Failed(format!("claims shard {index} of a chunk of {} shards", header.n()));
        };
        let len = header.shard_len() as u64;
        let challenge = Challenge::random(len, &mut rand::thread_rng());
        let request = Request::Audit { chunk: header.address(), index, challenge: challenge.clone() };
        // One retry: a single lost answer on a loaded machine is not yet a failure.
        let mut answer = self.ctx.ask(peer, request.clone()).await;
        if matches!(answer, Err(NodeError::Request { .. })) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            answer = self.ctx.ask(peer, request).await;
        }
        match answer {
            Ok(Response::Proof(proof)) => match audit::verify(hash, len, &challenge, &proof) {
                Ok(()) => {
                    debug!(%peer, chunk = %header.address(), index, "storage audit passed");
                    Outcome::Proved
                }
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Ok(other) => Outcome::Failed(format!("answered an audit with {other:?}")),
            Err(NodeError::Remote { error, .. }) if error.is_load() => Outcome::Busy,
            // A vault that says it handed the shard on gains nothing by lying: it is no longer
            // counted as holding it, so the shard is placed elsewhere if the group lacks it.
            Err(NodeError::Remote { error: RemoteError::Released { .. }, .. }) => Outcome::Released,
            Err(NodeError::Remote { error, .. }) => Outcome::Failed(error.to_string()),
            Err(e) => Outcome::Silent(format!("no answer: {e}")),
        }
    }
}
