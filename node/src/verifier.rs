//! Signature checks batched on a thread of their own.
//!
//! A vault under load checks many BLS signatures at once: owners' signatures of transfers it
//! is asked to sign, and certificates it is asked to store. Checked one by one each costs a
//! full pairing; checked together ([`verify_batch`]) each costs about half. The verifier
//! thread takes every check waiting when it is free, so batches grow with the load and a lone
//! check waits for nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kura_types::ledger::{verify_batch, SigCheck};
use tokio::sync::{mpsc, oneshot};

/// Most checks waiting at once; callers beyond it wait their turn to queue.
const QUEUE: usize = 1024;

/// Most checks in one batch: bounds the time one batch holds the thread (about 0.6 ms each).
const MAX_BATCH: usize = 64;

struct Job {
    check: SigCheck,
    reply: oneshot::Sender<bool>,
}

/// Most distinct keyed checks under way at once ([`Verifier::holds_once`]); past it checks
/// are not shared.
const MAX_KEYED: usize = 4096;

/// Callers waiting on the answer to a keyed check, by key.
type Waiting = Arc<Mutex<HashMap<[u8; 32], Vec<oneshot::Sender<bool>>>>>;

/// A handle to the verifier thread; cheap to clone. The thread ends when every handle is
/// dropped.
#[derive(Clone, Debug)]
pub struct Verifier {
    jobs: mpsc::Sender<Job>,
    waiting: Waiting,
}

/// Removes a keyed check when its leader finishes or is dropped, and passes the answer on
/// (none if the leader was dropped: the waiters then check for themselves).
struct Leader {
    waiting: Waiting,
    key: [u8; 32],
    answer: Option<bool>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let waiters = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key).unwrap_or_default();
        if let Some(ok) = self.answer {
            for w in waiters {
                let _ = w.send(ok);
            }
        }
    }
}

impl Verifier {
    /// Starts the verifier thread.
    pub fn start() -> std::io::Result<Verifier> {
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        std::thread::Builder::new().name("kura-verify".into()).spawn(move || {
            while let Some(first) = queue.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let (checks, replies): (Vec<SigCheck>, Vec<_>) = batch.into_iter().map(|j| (j.check, j.reply)).unzip();
                let answers = verify_batch(&checks);
                tracing::trace!(checks = checks.len(), failed = answers.iter().filter(|a| !**a).count(), "verified a batch");
                for (reply, ok) in replies.into_iter().zip(answers) {
                    let _ = reply.send(ok);
                }
            }
        })?;
        Ok(Verifier { jobs, waiting: Waiting::default() })
    }

    /// Whether the signature named by `key` (a certificate's digest) holds, checked once
    /// however many callers ask at the same moment: a vault in both the payer's and the
    /// payee's group is sent one certificate twice at once.
    pub async fn holds_once(&self, key: [u8; 32], check: SigCheck) -> bool {
        enum Turn {
            Lead,
            Wait(oneshot::Receiver<bool>),
            Alone,
        }
        let turn = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let room = waiting.len() < MAX_KEYED;
            match waiting.get_mut(&key) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Turn::Wait(rx)
                }
                None if room => {
                    waiting.insert(key, Vec::new());
                    Turn::Lead
                }
                None => Turn::Alone,
            }
        };
        match turn {
            Turn::Lead => {
                let mut leader = Leader { waiting: self.waiting.clone(), key, answer: None };
                let ok = self.holds(check).await;
                leader.answer = Some(ok);
                ok
            }
            // A leader dropped before it answered: check for ourselves.
            Turn::Wait(rx) => match rx.await {
                Ok(ok) => ok,
                Err(_) => self.holds(check).await,
            },
            Turn::Alone => self.holds(check).await,
        }
    }

    /// Whether the signature holds. Checked on the verifier thread, with whatever else waits.
    pub async fn holds(&self, check: SigCheck) -> bool {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(Job { check, reply }).await {
            // The thread is gone (it panicked): check on a blocking thread rather than refuse
            // everything.
            return tokio::task::spawn_blocking(move || job.check.holds()).await.unwrap_or(false);
        }
        answer.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_types::ledger::{Output, WalletKey};
    use kura_types::Address;

    #[tokio::test]
    async fn many_checks_at_once_each_get_their_own_answer() {
        let verifier = Verifier::start().unwrap();
        let to = Address::random();
        let mut checks = Vec::new();
        for i in 0..40u64 {
            let owner = WalletKey::random();
            let mut signed = owner.sign(1, vec![Output { to, amount: i + 1, memo: [0; 32] }]);
            if i % 7 == 3 {
                // Signed by someone else.
                signed.signature = WalletKey::random().sign(1, signed.transfer.outputs.clone()).signature;
            }
            checks.push((i % 7 != 3, signed.prepare().unwrap().1));
        }
        let answers = futures::future::join_all(checks.iter().map(|(_, c)| verifier.holds(c.clone()))).await;
        let want: Vec<bool> = checks.iter().map(|(ok, _)| *ok).collect();
        assert_eq!(answers, want);
    }

    #[tokio::test]
    async fn one_keyed_check_asked_at_once_is_answered_for_all() {
        let verifier = Verifier::start().unwrap();
        let owner = WalletKey::random();
        let good = owner.sign(1, vec![Output { to: Address::random(), amount: 1, memo: [0; 32] }]);
        let mut bad = good.clone();
        bad.signature = WalletKey::random().sign(1, good.transfer.outputs.clone()).signature;
        let asks = (0..20).map(|i| {
            let (key, signed) = if i % 2 == 0 { ([1; 32], &good) } else { ([2; 32], &bad) };
            verifier.holds_once(key, signed.prepare().unwrap().1)
        });
        let answers = futures::future::join_all(asks).await;
        assert_eq!(answers, (0..20).map(|i| i % 2 == 0).collect::<Vec<_>>());
        assert!(verifier.waiting.lock().unwrap().is_empty());
    }
}
