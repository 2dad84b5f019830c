//! Handover probation: a vault lets its copy of a shard go only after the vault that now holds
//! it has been seen holding it for a while.
//!
//! Peer ids cost nothing, so an attacker can make ids closer to a chunk than its group, join,
//! receive every shard as the old holders hand them over, and drop them all at once. So a holder
//! that the plan tells to drop its copy (or to hand it over and then drop it) keeps it until
//! it has seen the other holder hold the shard for [`Probation::period`], and that holder then
//! passes an audit of it. The clock starts when this vault first sees the other holder with
//! the shard (when it hands it over, or at its first examination after); it is this vault's
//! own observation, not anyone's word. An attacker must hold the data, and answer audits, for
//! the whole period before any honest copy goes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kura_node::{Address, PeerId};

/// When this vault first saw each other holder with a shard it also holds.
#[derive(Debug)]
pub struct Probation {
    period: Duration,
    cap: usize,
    seen: HashMap<(Address, u8, PeerId), Instant>,
}

impl Probation {
    /// A probation of `period`, remembering at most `cap` holdings.
    pub fn new(period: Duration, cap: usize) -> Self {
        Probation { period, cap: cap.max(1), seen: HashMap::new() }
    }

    /// How long a new holder must be seen holding a shard.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Whether this vault may let its copy of shard `index` of `chunk` go now that `holder`
    /// holds it: `Ok` once `holder` has been seen holding it for the whole period, else how
    /// long to wait. The first call for a holding starts its clock. When the memory is full a
    /// new holding is not tracked and the copy is kept (the safe side).
    pub fn may_release(&mut self, chunk: Address, index: u8, holder: PeerId, now: Instant) -> Result<(), Duration> {
        let key = (chunk, index, holder);
        if !self.seen.contains_key(&key) && self.seen.len() >= self.cap {
            // Holdings seen long ago and never acted on (the shard was repaired otherwise).
            let stale = self.period.saturating_mul(4);
            self.seen.retain(|_, at| now.saturating_duration_since(*at) < stale);
            if self.seen.len() >= self.cap {
                return Err(self.period);
            }
        }
        let since = *self.seen.entry(key).or_insert(now);
        let held_for = now.saturating_duration_since(since);
        if held_for >= self.period {
            Ok(())
        } else {
            Err(self.period - held_for)
        }
    }

    /// Whether the clock for `holder` holding shard `index` of `chunk` has not started yet.
    pub fn is_new(&self, chunk: Address, index: u8, holder: PeerId) -> bool {
        !self.seen.contains_key(&(chunk, index, holder))
    }

    /// Forgets the holdings of shard `index` of `chunk` (this vault's copy is gone, or the
    /// holder failed an audit and must start over).
    pub fn forget(&mut self, chunk: Address, index: u8) {
        self.seen.retain(|(c, i, _), _| !(*c == chunk && *i == index));
    }

    /// Holdings being watched.
    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_goes_only_after_the_new_holder_held_it_for_the_period() {
        let mut p = Probation::new(Duration::from_secs(60), 100);
        let (chunk, holder, t0) = (Address::random(), PeerId::random(), Instant::now());
        assert!(p.is_new(chunk, 3, holder));
        assert_eq!(p.may_release(chunk, 3, holder, t0), Err(Duration::from_secs(60)), "first sight starts the clock");
        assert!(!p.is_new(chunk, 3, holder));
        assert_eq!(p.may_release(chunk, 3, holder, t0 + Duration::from_secs(45)), Err(Duration::from_secs(15)));
        assert_eq!(p.may_release(chunk, 3, holder, t0 + Duration::from_secs(60)), Ok(()));
        // Another holder of the same shard starts its own clock.
        let other = PeerId::random();
        assert!(p.may_release(chunk, 3, other, t0 + Duration::from_secs(60)).is_err());
        p.forget(chunk, 3);
        assert_eq!(p.len(), 0);
        assert!(p.is_new(chunk, 3, holder), "a holder that failed starts over");
    }

    #[test]
    fn a_full_memory_keeps_copies() {
        let mut p = Probation::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        for _ in 0..2 {
            let _ = p.may_release(Address::random(), 0, PeerId::random(), t0);
        }
        let (chunk, holder) = (Address::random(), PeerId::random());
        for later in [10, 100, 200] {
            assert!(p.may_release(chunk, 0, holder, t0 + Duration::from_secs(later)).is_err(), "untracked: kept");
            assert_eq!(p.len(), 2);
        }
        assert!(p.may_release(chunk, 0, holder, t0 + Duration::from_secs(3600)).is_err(), "first sight");
        assert_eq!(p.len(), 1, "stale holdings were forgotten to make room");
    }
}
