//! When the repair worker runs which round, as plain state with time passed in.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use kura_node::Address;
use tokio::time::Instant;

use super::Round;
use crate::worker::Periodic;

/// Most addresses waiting in one set (updates, retries); more are left to the sweep.
const MAX_WAITING: usize = 1 << 14;
/// Failures in a row retried after the plain retry delay: while vaults join or leave, a repair
/// fails for a few seconds until views agree, and backing off then slowed convergence.
const QUICK_RETRIES: u32 = 3;
/// A chunk whose repair keeps failing then waits the retry delay doubled per further failure,
/// up to this many doublings (2 s becomes at most about 4 minutes).
const MAX_DOUBLINGS: u32 = 7;

/// The repair worker's schedule: routing changes (debounced), records updated here, failed
/// repairs to retry, the baseline tick and the sweep.
#[derive(Debug)]
pub struct Schedule {
    sweep: Periodic,
    baseline: Periodic,
    debounce: Duration,
    retry_after: Duration,
    changed_at: Option<Instant>,
    retry: BTreeSet<Address>,
    retry_at: Option<Instant>,
    updated: BTreeSet<Address>,
    updated_at: Option<Instant>,
    /// Chunks to look at again, each at its own time.
    rechecks: BTreeSet<(Instant, Address)>,
    /// Chunks whose repair failed lately: failures in a row, and when the last was.
    failures: HashMap<Address, (u32, Instant)>,
}

impl Schedule {
    /// A schedule whose first sweep and baseline are due at once.
    pub fn new(now: Instant, sweep: Duration, baseline: Duration, debounce: Duration, retry_after: Duration) -> Self {
        Schedule {
            sweep: Periodic::new(now, Duration::ZERO, sweep),
            baseline: Periodic::new(now, Duration::ZERO, baseline),
            debounce,
            retry_after,
            changed_at: None,
            retry: BTreeSet::new(),
            retry_at: None,
            updated: BTreeSet::new(),
            updated_at: None,
            rechecks: BTreeSet::new(),
            failures: HashMap::new(),
        }
    }

    /// The routing table changed: a round of changed groups is due after the debounce (more
    /// changes meanwhile join it).
    pub fn routing_changed(&mut self, now: Instant) {
        self.changed_at.get_or_insert(now + self.debounce);
    }

    /// A replicated record at `address` was updated here at `now`: spread it at once.
    pub fn updated(&mut self, now: Instant, address: Address) {
        if self.updated.len() < MAX_WAITING {
            self.updated.insert(address);
            self.updated_at.get_or_insert(now);
        }
    }

    /// These repairs failed: try each again after the retry delay, doubled for every failure
    /// in a row before it (a chunk that cannot be repaired, say for want of holders, must not
    /// make its vault ask the network about it every two seconds forever).
    pub fn failed(&mut self, now: Instant, addresses: impl IntoIterator<Item = Address>) {
        let longest = self.retry_after * (1 << MAX_DOUBLINGS);
        if self.failures.len() >= MAX_WAITING {
            // A failure streak ends when the chunk has not failed for two of the longest waits.
            self.failures.retain(|_, (_, last)| now.saturating_duration_since(*last) < longest * 2);
        }
        for a in addresses {
            let streak = match self.failures.get(&a) {
                Some((n, last)) if now.saturating_duration_since(*last) < longest * 2 => n + 1,
                _ => 1,
            };
            if self.failures.contains_key(&a) || self.failures.len() < MAX_WAITING {
                self.failures.insert(a, (streak, now));
            }
            if streak > QUICK_RETRIES {
                self.recheck(now + self.retry_after * (1 << (streak - QUICK_RETRIES).min(MAX_DOUBLINGS)), a);
                continue;
            }
            if self.retry.len() >= MAX_WAITING {
                break;
            }
            self.retry.insert(a);
        }
        if !self.retry.is_empty() {
            self.retry_at = Some(now + self.retry_after);
        }
    }

    /// Look at `address` again at `at` (a loss waiting on its coordinator).
    pub fn recheck(&mut self, at: Instant, address: Address) {
        if self.rechecks.len() < MAX_WAITING {
            self.rechecks.insert((at, address));
        }
    }

    /// The round due at `now` that has waited longest, if any. Oldest first keeps every
    /// kind of round moving: while routing changes keep coming, a retry that is due still runs
    /// (taking them in a fixed priority order starved retries during churn).
    pub fn next(&mut self, now: Instant) -> Option<Round> {
        let due = [
            (self.updated_at, 0),
            (self.changed_at, 1),
            (self.retry_at, 2),
            (Some(self.baseline.next()), 3),
            (Some(self.sweep.next()), 4),
            (self.rechecks.first().map(|r| r.0), 5),
        ];
        let (_, which) = due.into_iter().filter_map(|(t, w)| Some((t?, w))).filter(|(t, _)| *t <= now).min()?;
        match which {
            0 => {
                self.updated_at = None;
                Some(Round::Retry(std::mem::take(&mut self.updated)))
            }
            1 => {
                self.changed_at = None;
                Some(Round::Changed)
            }
            2 => {
                self.retry_at = None;
                Some(Round::Retry(std::mem::take(&mut self.retry)))
            }
            3 => self.baseline.take(now).then_some(Round::Baseline),
            4 => self.sweep.take(now).then_some(Round::Sweep),
            _ => {
                let mut due = BTreeSet::new();
                while self.rechecks.first().is_some_and(|r| r.0 <= now) {
                    if let Some((_, a)) = self.rechecks.pop_first() {
                        due.insert(a);
                    }
                }
                Some(Round::Retry(due))
            }
        }
    }

    /// When something is next due.
    pub fn next_wake(&self) -> Instant {
        [
            self.updated_at,
            self.changed_at,
            self.retry_at,
            Some(self.baseline.next()),
            Some(self.sweep.next()),
            self.rechecks.first().map(|r| r.0),
        ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| self.sweep.next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn kind(r: Option<Round>) -> &'static str {
        match r {
            None => "none",
            Some(Round::Changed) => "changed",
            Some(Round::Sweep) => "sweep",
            Some(Round::Baseline) => "baseline",
            Some(Round::Retry(_)) => "retry",
        }
    }

    #[test]
    fn a_new_schedule_notes_groups_and_sweeps_at_once_then_waits() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, secs(600), secs(5), Duration::from_millis(500), secs(2));
        assert_eq!(kind(s.next(t0)), "baseline");
        assert_eq!(kind(s.next(t0)), "sweep");
        assert_eq!(kind(s.next(t0)), "none");
        assert_eq!(s.next_wake(), t0 + secs(5));
        assert_eq!(kind(s.next(t0 + secs(5))), "baseline");
    }

    #[test]
    fn routing_changes_are_debounced_into_one_round() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, secs(600), secs(5), Duration::from_millis(500), secs(2));
        while s.next(t0).is_some() {}
        s.routing_changed(t0 + secs(1));
        s.routing_changed(t0 + Duration::from_millis(1200));
        assert_eq!(s.next_wake(), t0 + Duration::from_millis(1500));
        assert_eq!(kind(s.next(t0 + Duration::from_millis(1400))), "none");
        assert_eq!(kind(s.next(t0 + Duration::from_millis(1500))), "changed");
        assert_eq!(kind(s.next(t0 + Duration::from_millis(1600))), "none", "one round for both changes");
    }

    #[test]
    fn failures_retry_after_the_delay_and_updates_go_first() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, secs(600), secs(5), Duration::from_millis(500), secs(2));
        while s.next(t0).is_some() {}
        let (a, b) = (Address::random(), Address::random());
        s.failed(t0, [a]);
        s.updated(t0, b);
        match s.next(t0) {
            Some(Round::Retry(set)) => assert_eq!(set, BTreeSet::from([b]), "an update is spread at once"),
            other => panic!("{}", kind(other)),
        }
        assert_eq!(kind(s.next(t0 + secs(1))), "none");
        match s.next(t0 + secs(2)) {
            Some(Round::Retry(set)) => assert_eq!(set, BTreeSet::from([a])),
            other => panic!("{}", kind(other)),
        }
    }

    #[test]
    fn a_due_retry_is_not_starved_by_routing_changes_that_keep_coming() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, secs(600), secs(5), Duration::from_millis(500), secs(2));
        while s.next(t0).is_some() {}
        s.failed(t0, [Address::random()]);
        let mut now = t0;
        let mut retried = false;
        // A change every 300 ms, each round taking 400 ms: a changed round is always due.
        for _ in 0..20 {
            s.routing_changed(now);
            now += Duration::from_millis(400);
            match s.next(now) {
                Some(Round::Retry(_)) => retried = true,
                Some(_) | None => {}
            }
        }
        assert!(retried, "the retry ran while changes kept coming");
    }

    #[test]
    fn rechecks_come_due_each_at_its_own_time() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, secs(600), secs(50), Duration::from_millis(500), secs(2));
        while s.next(t0).is_some() {}
        let (a, b) = (Address::random(), Address::random());
        s.recheck(t0 + secs(10), a);
        s.recheck(t0 + secs(20), b);
        assert_eq!(s.next_wake(), t0 + secs(10));
        assert_eq!(kind(s.next(t0 + secs(9))), "none");
        match s.next(t0 + secs(10)) {
            Some(Round::Retry(set)) => assert_eq!(set, BTreeSet::from([a])),
            other => panic!("{}", kind(other)),
        }
        assert_eq!(s.next_wake(), t0 + secs(20));
        match s.next(t0 + secs(25)) {
            Some(Round::Retry(set)) => assert_eq!(set, BTreeSet::from([b])),
            other => panic!("{}", kind(other)),
        }
    }

    #[test]
    fn a_chunk_that_keeps_failing_waits_longer_each_time() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, secs(6000), secs(5000), Duration::from_millis(500), secs(2));
        while s.next(t0).is_some() {}
        let a = Address::random();
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..12 {
            s.failed(now, [a]);
            let due = s.next_wake();
            assert_eq!(kind(s.next(due - Duration::from_millis(1))), "none");
            match s.next(due) {
                Some(Round::Retry(set)) => assert_eq!(set, BTreeSet::from([a])),
                other => panic!("{}", kind(other)),
            }
            waits.push((due - now).as_secs());
            now = due;
        }
        assert_eq!(waits, vec![2, 2, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256]);
        // Long after its last failure, a new failure starts again at the shortest wait.
        let later = now + secs(3600);
        s.failed(later, [a]);
        assert_eq!(s.next_wake(), later + secs(2));
    }

    #[test]
    fn waiting_sets_are_bounded() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, secs(600), secs(5), Duration::from_millis(500), secs(2));
        for _ in 0..MAX_WAITING + 10 {
            s.updated(t0, Address::random());
        }
        s.failed(t0, (0..MAX_WAITING + 10).map(|_| Address::random()));
        assert_eq!(s.updated.len(), MAX_WAITING);
        assert_eq!(s.retry.len(), MAX_WAITING);
    }
}
