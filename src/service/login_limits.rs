//! Limits on password guessing at `/api/auth/login`: per client address (an
//! IPv6 client by its /64), and per account name on a host, each a burst of
//! its per-minute number refilled evenly over the minute.
//!
//! The per-address limit slows one client; the per-account limit caps the
//! guesses against one account however many addresses they come from, and is
//! what still protects accounts when every client shares one address (a
//! proxy, a NAT). Both live in this process's memory: each server node counts
//! on its own, and a restart forgets them.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::domain::{AccountName, HostName};

/// How many checks pass between sweeps of keys that have gone quiet.
const SWEEP_EVERY: u64 = 4096;

/// The bits of an IPv6 address that name its network: one site or one
/// customer typically gets a whole /64, so counting each of its 2^64 addresses
/// apart would give a single client 2^64 budgets.
const IPV6_NETWORK_BITS: u32 = 64;

/// Sign-in attempts allowed per client address and per account.
pub struct LoginLimiter {
    by_address: Keyed<IpAddr>,
    by_account: Keyed<(HostName, AccountName)>,
}

impl LoginLimiter {
    /// `per_address` attempts per client address per minute and `per_account`
    /// per account name per minute, each with a burst of the same size; 0
    /// turns that limit off.
    pub fn new(per_address: u32, per_account: u32) -> Self {
        Self {
            by_address: Keyed::new(per_address),
            by_account: Keyed::new(per_account),
        }
    }

    /// Counts one attempt from `ip`; `Err(seconds)` to wait when it is over
    /// its limit.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), u64> {
        self.by_address.check(address_key(ip))
    }

    /// Counts one attempt at `name` on `host`; `Err(seconds)` to wait when
    /// that account is over its limit.
    pub fn check_account(&self, host: &HostName, name: &AccountName) -> Result<(), u64> {
        self.by_account.check((host.clone(), name.clone()))
    }
}

/// The key an address is counted under: IPv4 as it is (an IPv4-mapped IPv6
/// address, as a dual-stack listener sees IPv4 clients, counts as its IPv4
/// address, not as part of the /64 all of IPv4 would fall in), IPv6 by its
/// /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & (u128::MAX << (128 - IPV6_NETWORK_BITS));
            IpAddr::V6(Ipv6Addr::from(network))
        }
        v4 => v4,
    }
}

/// One keyed limit, or none.
struct Keyed<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n).allow_burst(n))),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one attempt for `key`; `Err(seconds)` (rounded up, at least 1,
    /// so a client that waits that long is let in) when it is over the limit.
    fn check(&self, key: K) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Keeps memory bounded by the keys seen recently.
            limiter.retain_recent();
        }
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            secs.max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_burst_passes_and_the_next_attempt_waits() {
        let l = LoginLimiter::new(3, 0);
        for _ in 0..3 {
            assert!(l.check_address(ip("127.0.0.1")).is_ok());
        }
        // 3 a minute refill one every 20 s.
        assert_eq!(l.check_address(ip("127.0.0.1")), Err(20));
        assert!(l.check_address(ip("127.0.0.2")).is_ok());
        let off = LoginLimiter::new(0, 0);
        for _ in 0..100 {
            assert!(off.check_address(ip("127.0.0.1")).is_ok());
        }
    }

    #[test]
    fn an_ipv6_network_shares_one_limit_and_ipv4_clients_do_not() {
        let l = LoginLimiter::new(2, 0);
        assert!(l.check_address(ip("2001:db8:1:2::1")).is_ok());
        assert!(l.check_address(ip("2001:db8:1:2:ffff::9")).is_ok());
        assert!(l.check_address(ip("2001:db8:1:2:abcd::1")).is_err());
        assert!(l.check_address(ip("2001:db8:1:3::1")).is_ok());
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d, all in
        // one /64: each must still count on its own, as its IPv4 address.
        for _ in 0..2 {
            assert!(l.check_address(ip("::ffff:192.0.2.1")).is_ok());
        }
        assert!(l.check_address(ip("192.0.2.1")).is_err());
        assert!(l.check_address(ip("::ffff:192.0.2.2")).is_ok());
    }

    #[test]
    fn each_account_on_each_host_has_its_own_limit() {
        let l = LoginLimiter::new(0, 2);
        let host = HostName::parse("example.com").unwrap();
        let other_host = HostName::parse("example.org").unwrap();
        let alice = AccountName::parse("alice").unwrap();
        let bob = AccountName::parse("bob").unwrap();
        assert!(l.check_account(&host, &alice).is_ok());
        assert!(l.check_account(&host, &alice).is_ok());
        assert_eq!(l.check_account(&host, &alice), Err(30));
        assert!(l.check_account(&host, &bob).is_ok());
        assert!(l.check_account(&other_host, &alice).is_ok());
    }
}
