//! Background workers (repair, audit; later ledger sync and inbox expiry) under one small
//! trait, run by one processor that lists them for status.
//!
//! The shape is Garage's: a worker does one unit of work per [`Worker::work`] call and says
//! how that went ([`WorkState`]); when idle, the processor waits on [`Worker::wait_for_work`];
//! a failing step backs off exponentially ([`Backoff`]). Each worker owns its state; what is
//! due when is plain state with time passed in (the repair worker's
//! [`crate::repair::Schedule`], [`Periodic`] here), so scheduling is tested without sockets or
//! sleeps. At shutdown a worker is told to stop ([`Workers::spawn`]'s stop signal), finishes
//! the step under way and is aborted if it has not within the vault's deadline; store writes
//! it started run to completion on the store's threads first (see `Vault::shutdown`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kura_node::wire::WorkerStatus;
use kura_node::NodeError;
use tokio::time::Instant;
use tracing::warn;

/// What one step of a worker came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkState {
    /// It did work and may have more: call again at once.
    Busy,
    /// Nothing to do until [`Worker::wait_for_work`] returns.
    Idle,
    /// It has work but holds back (a rate limit); call again after a short pause.
    Throttled,
    /// It is finished for good.
    Done,
}

impl WorkState {
    /// The state's name in status output.
    pub fn name(&self) -> &'static str {
        match self {
            WorkState::Busy => "busy",
            WorkState::Idle => "idle",
            WorkState::Throttled => "throttled",
            WorkState::Done => "stopped",
        }
    }
}

/// A background worker.
#[async_trait::async_trait]
pub trait Worker: Send + 'static {
    /// Its name in status output.
    fn name(&self) -> &'static str;
    /// Its counters, for status output.
    fn counters(&self) -> Vec<(String, u64)>;
    /// Does one unit of work. An error is logged and retried after a backoff; the node shutting
    /// down ends the worker.
    async fn work(&mut self) -> Result<WorkState, NodeError>;
    /// Returns when there may be work again.
    async fn wait_for_work(&mut self);
}

/// Exponential backoff after failures: `base`, doubling, at most `max`; a success resets it.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff from `base` up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, failures: 0 }
    }

    /// Notes a failure; returns how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        let delay = self.base.saturating_mul(1u32 << self.failures.min(16)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Notes a success.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// Something due every `every`, first after `first`, measured from when it last ran (a slow
/// run delays the next rather than bunching them).
#[derive(Debug, Clone, Copy)]
pub struct Periodic {
    every: Duration,
    next: Instant,
}

impl Periodic {
    /// Due first at `now + first`, then every `every`.
    pub fn new(now: Instant, first: Duration, every: Duration) -> Self {
        Periodic { every, next: now + first }
    }

    /// Whether it is due at `now`; if so, the next is set `every` after `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.every;
        true
    }

    /// When it is next due.
    pub fn next(&self) -> Instant {
        self.next
    }
}

/// The shared view of the running workers, for status.
#[derive(Debug, Default, Clone)]
pub struct Workers {
    list: Arc<Mutex<Vec<Arc<Mutex<WorkerStatus>>>>>,
}

impl Workers {
    /// Runs `worker` on the current runtime until it is done, the node shuts down, or `stop`
    /// says so; returns its task. A step under way when `stop` comes is finished (the caller
    /// waits for that within a deadline); a wait is cut short.
    pub fn spawn<W: Worker>(&self, mut worker: W, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let status = Arc::new(Mutex::new(WorkerStatus {
            name: worker.name().to_string(),
            state: WorkState::Idle.name().to_string(),
            counters: worker.counters(),
        }));
        self.list.lock().unwrap_or_else(|e| e.into_inner()).push(status.clone());
        let set = move |state: WorkState, counters: Vec<(String, u64)>| {
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            s.state = state.name().to_string();
            s.counters = counters;
        };
        // Told to stop, or its stopper is gone.
        let stopped = |stop: &tokio::sync::watch::Receiver<bool>| *stop.borrow() || stop.has_changed().is_err();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
            loop {
                if stopped(&stop) {
                    set(WorkState::Done, worker.counters());
                    return;
                }
                set(WorkState::Busy, worker.counters());
                let state = match worker.work().await {
                    Ok(state) => {
                        backoff.succeeded();
                        state
                    }
                    Err(NodeError::Shutdown) => WorkState::Done,
                    Err(e) => {
                        let delay = backoff.failed();
                        warn!(worker = worker.name(), error = %e, retry_in = ?delay, "worker step failed");
                        set(WorkState::Throttled, worker.counters());
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => {}
                        }
                        continue;
                    }
                };
                set(state, worker.counters());
                match state {
                    WorkState::Busy => tokio::task::yield_now().await,
                    WorkState::Idle => tokio::select! {
                        _ = worker.wait_for_work() => {}
                        _ = stop.changed() => {}
                    },
                    WorkState::Throttled => tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.changed() => {}
                    },
                    WorkState::Done => return,
                }
            }
        })
    }

    /// Every worker's current status.
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u128> = (0..6).map(|_| b.failed().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(100));
    }

    #[test]
    fn periodic_is_due_after_first_then_every_period_from_the_last_run() {
        let t0 = Instant::now();
        let mut p = Periodic::new(t0, Duration::from_secs(5), Duration::from_secs(10));
        assert!(!p.take(t0));
        assert!(!p.take(t0 + Duration::from_secs(4)));
        assert!(p.take(t0 + Duration::from_secs(5)));
        assert!(!p.take(t0 + Duration::from_secs(6)));
        // A late run pushes the next one back, rather than running twice.
        assert!(p.take(t0 + Duration::from_secs(30)));
        assert_eq!(p.next(), t0 + Duration::from_secs(40));
    }

    struct Counter {
        left: u32,
        done: Arc<Mutex<u32>>,
    }

    #[async_trait::async_trait]
    impl Worker for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }
        fn counters(&self) -> Vec<(String, u64)> {
            vec![("left".into(), u64::from(self.left))]
        }
        async fn work(&mut self) -> Result<WorkState, NodeError> {
            if self.left == 0 {
                return Ok(WorkState::Done);
            }
            self.left -= 1;
            *self.done.lock().unwrap() += 1;
            Ok(WorkState::Busy)
        }
        async fn wait_for_work(&mut self) {}
    }

    #[tokio::test]
    async fn the_processor_runs_a_worker_to_done_and_lists_it() {
        let workers = Workers::default();
        let done = Arc::new(Mutex::new(0));
        let (_stop, stopper) = tokio::sync::watch::channel(false);
        workers.spawn(Counter { left: 5, done: done.clone() }, stopper).await.unwrap();
        assert_eq!(*done.lock().unwrap(), 5);
        let s = workers.statuses();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].name.as_str(), s[0].state.as_str()), ("counter", "stopped"));
        assert_eq!(s[0].counters, vec![("left".to_string(), 0)]);
    }

    /// Idle until told; then it finishes the step under way.
    struct Sleeper {
        steps: Arc<Mutex<u32>>,
    }

    #[async_trait::async_trait]
    impl Worker for Sleeper {
        fn name(&self) -> &'static str {
            "sleeper"
        }
        fn counters(&self) -> Vec<(String, u64)> {
            Vec::new()
        }
        async fn work(&mut self) -> Result<WorkState, NodeError> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            *self.steps.lock().unwrap() += 1;
            Ok(WorkState::Idle)
        }
        async fn wait_for_work(&mut self) {
            std::future::pending::<()>().await
        }
    }

    #[tokio::test]
    async fn a_stop_ends_a_waiting_worker_and_lets_a_step_under_way_finish() {
        let workers = Workers::default();
        let steps = Arc::new(Mutex::new(0));
        let (stop, stopper) = tokio::sync::watch::channel(false);
        let task = workers.spawn(Sleeper { steps: steps.clone() }, stopper);
        // Told to stop in the middle of its first step: that step still counts.
        tokio::time::sleep(Duration::from_millis(10)).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("the worker stopped").unwrap();
        assert_eq!(*steps.lock().unwrap(), 1);
        assert_eq!(workers.statuses()[0].state, "stopped");
        // A worker whose stopper is gone stops too.
        let (stop, stopper) = tokio::sync::watch::channel(false);
        let task = workers.spawn(Sleeper { steps: steps.clone() }, stopper);
        drop(stop);
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("the worker stopped").unwrap();
    }
}
