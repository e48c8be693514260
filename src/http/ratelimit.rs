//! Per-address limits on password guessing at `/api/auth/login`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How many checks pass between sweeps of addresses that have gone quiet.
const SWEEP_EVERY: u64 = 4096;

/// Sign-in attempts allowed per client address, with a burst of the same size.
pub struct LoginLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
}

impl LoginLimiter {
    /// `per_minute` attempts per address; 0 turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n).allow_burst(n))),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one attempt from `ip`; `Err(wait)` when it is over its limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Keeps memory bounded by the addresses seen recently.
            limiter.retain_recent();
        }
        limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_passes_and_the_next_attempt_waits() {
        let l = LoginLimiter::new(3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(ip).is_ok());
        }
        assert!(l.check(ip).is_err());
        assert!(l.check("127.0.0.2".parse().unwrap()).is_ok());
        let off = LoginLimiter::new(0);
        for _ in 0..100 {
            assert!(off.check(ip).is_ok());
        }
    }
}
