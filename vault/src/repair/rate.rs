//! A byte-rate limit for repair and handover traffic, so that a vault rebuilding after a big
//! loss leaves its disk and uplink to client requests.
//!
//! A token bucket, written out rather than taken from `governor`: the worker needs one bucket
//! with byte-sized costs and an async wait, about thirty lines, where `governor` would add
//! eight crates to the build.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes per second, with a burst allowance.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Bytes that may go now; negative when the last transfers ran ahead of the rate.
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A limit of `bytes_per_sec`, allowing bursts of one second's worth (at least 8 MiB, so a
    /// whole shard message fits).
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = rate.max(8.0 * 1024.0 * 1024.0);
        RateLimit { rate, burst, bucket: Mutex::new(Bucket { tokens: burst, at: Instant::now() }) }
    }

    /// Charges `bytes` at `now`; returns how long the caller must wait before its next transfer
    /// to stay within the rate.
    pub fn charge(&self, bytes: u64, now: Instant) -> Duration {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst) - bytes as f64;
        b.at = now;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.rate)
        }
    }

    /// Charges `bytes` and sleeps as long as the rate asks.
    pub async fn spend(&self, bytes: u64) {
        let wait = self.charge(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn bursts_pass_then_the_rate_holds() {
        let limit = RateLimit::new(16 * MIB);
        let t0 = Instant::now();
        assert_eq!(limit.charge(16 * MIB, t0), Duration::ZERO, "one second's worth passes at once");
        assert_eq!(limit.charge(8 * MIB, t0), Duration::from_millis(500));
        // Half a second later the debt is paid; another 16 MiB costs a second.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limit.charge(16 * MIB, t1), Duration::from_secs(1));
        // Long idle refills only up to the burst.
        let t2 = t1 + Duration::from_secs(100);
        assert_eq!(limit.charge(16 * MIB, t2), Duration::ZERO);
        assert!(limit.charge(1, t2) > Duration::ZERO);
    }

    #[test]
    fn sustained_transfers_average_the_rate() {
        let limit = RateLimit::new(10 * MIB);
        let mut now = Instant::now();
        let start = now;
        let mut sent = 0;
        for _ in 0..200 {
            now += limit.charge(MIB, now);
            sent += MIB;
        }
        let secs = (now - start).as_secs_f64();
        let rate = (sent - 10 * MIB) as f64 / secs / MIB as f64;
        assert!((rate - 10.0).abs() < 0.1, "{rate} MiB/s");
    }
}
