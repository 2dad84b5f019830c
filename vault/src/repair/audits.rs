//! The audit worker: a round every audit interval examines a random sample of what this vault
//! holds with audits on (see [`crate::audit`]), and repairs what the audits find short.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kura_node::NodeError;
use rand::seq::IteratorRandom;
use tracing::debug;

use super::Repair;

/// The audit worker: a round every audit interval.
pub(crate) struct AuditWorker {
    repair: Repair,
    due: crate::worker::Periodic,
}

impl AuditWorker {
    /// The audit worker of `repair`, first round one period after start.
    pub(crate) fn new(repair: Repair, every: Duration) -> Self {
        AuditWorker { repair, due: crate::worker::Periodic::new(tokio::time::Instant::now(), every, every) }
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for AuditWorker {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let a = self.repair.auditor.stats();
        [("rounds", &a.rounds), ("passed", &a.passed), ("failed", &a.failed)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
            .collect()
    }

    async fn work(&mut self) -> Result<crate::worker::WorkState, NodeError> {
        if !self.due.take(tokio::time::Instant::now()) {
            return Ok(crate::worker::WorkState::Idle);
        }
        self.repair.audit_round().await?;
        Ok(crate::worker::WorkState::Busy)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep_until(self.due.next()).await;
    }
}

impl Repair {
    /// Audits a random sample of the chunks held here, and repairs what the audits find short.
    async fn audit_round(&self) -> Result<(), NodeError> {
        // Chunks and replicated records alike: a replicated record's examination fetches every
        // group member's copy and checks it against the key, which is its audit.
        let sample = self.ctx.held().into_iter().choose_multiple(&mut rand::thread_rng(), self.ctx.config().audit_sample);
        let mut result = Ok(());
        for (address, kind) in sample {
            let examined = self.examine(address, Some(kind), true).await.map(|_| ());
            match examined {
                Ok(()) => {}
                Err(NodeError::Shutdown) => {
                    result = Err(NodeError::Shutdown);
                    break;
                }
                Err(e) => debug!(%address, error = %e, "audit round: examination failed"),
            }
        }
        self.auditor.stats().rounds.fetch_add(1, Ordering::Relaxed);
        result
    }
}
