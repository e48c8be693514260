//! API keys: making them, checking one a client presents (its secret, its
//! expiry, its mint rate), recording its use, and deleting it with the
//! invites it left pending. Every surface that takes a key goes through
//! [`verify`], so they refuse the same keys for the same reasons.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::{Config, HostConfig};
use crate::domain::{ApiKey, HostName, KeyId, KeyScope, MintRate};
use crate::store::{KeyRecord, Store, StoreError};

/// What a new key is to be, besides its host.
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    /// A label to remember what it is for; blank means none.
    pub name: Option<String>,
    /// What it may do.
    pub scope: KeyScope,
    /// How long it works, from now; `None` for as long as it exists.
    pub expires_in: Option<Duration>,
    /// How fast it may mint; `None` for no limit.
    pub rate: Option<MintRate>,
}

/// Makes and stores a new API key for `host`, audited as made by `actor`;
/// the secret is returned this once.
pub async fn create(
    store: &dyn Store,
    host: &HostConfig,
    options: KeyOptions,
    actor: &str,
) -> Result<ApiKey, StoreError> {
    let key = ApiKey::generate()?;
    let now = Utc::now();
    let expires_at = match options.expires_in {
        // The command line bounds it to 100 years, well inside chrono's range.
        Some(d) => Some(
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| StoreError::permanent("key expiry out of range"))?,
        ),
        None => None,
    };
    store
        .create_key(
            KeyRecord {
                id: key.id.clone(),
                host: host.name.clone(),
                name: options.name.filter(|n| !n.trim().is_empty()),
                created_at: now,
                secret_digest: key.secret.digest(),
                scope: options.scope,
                expires_at,
                rate: options.rate,
                last_used_at: None,
            },
            actor,
        )
        .await?;
    Ok(key)
}

/// Deletes a key of `host`; unless `keep_invites`, its pending invites are
/// revoked in the same write. How many were revoked.
pub async fn delete(
    store: &dyn Store,
    host: &HostName,
    id: &KeyId,
    keep_invites: bool,
    actor: &str,
) -> Result<u64, StoreError> {
    store.delete_key(host, id, !keep_invites, actor).await
}

/// A key whose secret matched and which has not expired.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    /// Its record, scope included.
    pub record: KeyRecord,
}

impl VerifiedKey {
    /// What it may do.
    pub fn scope(&self) -> KeyScope {
        self.record.scope
    }

    /// How it is named as an actor in the audit log: `key <id>`.
    pub fn actor(&self) -> String {
        format!("key {}", self.record.id)
    }
}

/// Why a presented key is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Unknown, deleted, or its secret is wrong: not told apart, so a
    /// client cannot learn which ids exist.
    Invalid,
    /// The right secret of a key past its expiry. Told apart only after the
    /// secret matched, so it says nothing to those who do not hold the key.
    Expired,
    /// A good key whose scope does not allow what was asked (a mint-only
    /// key at the admin API).
    Scope,
    /// A good key of a host that is no longer configured here.
    HostGone(HostName),
    /// The store failed.
    Store(StoreError),
}

/// Whether a key of `scope` may do what `needed` names: an admin key may
/// also mint, a mint key only mint.
fn permits(scope: KeyScope, needed: KeyScope) -> bool {
    match (scope, needed) {
        (KeyScope::Admin, _) | (KeyScope::Mint, KeyScope::Mint) => true,
        (KeyScope::Mint, KeyScope::Admin) => false,
    }
}

/// Checks a key a client presented for a request that needs `needed`: as
/// [`verify`] does, then its scope, then that its host is still served.
/// Every surface that takes a key calls this, so they refuse alike.
pub async fn authorize<'c>(
    store: &dyn Store,
    config: &'c Config,
    key: &ApiKey,
    needed: KeyScope,
) -> Result<(VerifiedKey, &'c HostConfig), KeyRefusal> {
    let key = verify(store, key).await?;
    if !permits(key.scope(), needed) {
        return Err(KeyRefusal::Scope);
    }
    if needed == KeyScope::Admin {
        // `verify` may have answered from the key cache, which does not see
        // a deletion by another node or the CLI. A mint re-checks the key in
        // its own transaction; admin requests (listing, revoking) have no
        // such write, so the key is confirmed in the database here. Only
        // after its secret matched: an unknown id and a wrong secret are
        // still answered alike from memory.
        match store.confirm_key(&key.record.id).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Err(KeyRefusal::Invalid),
            Err(e) => return Err(KeyRefusal::Store(e)),
        }
    }
    match config.hosts.get(&key.record.host) {
        Some(host) => Ok((key, host)),
        None => Err(KeyRefusal::HostGone(key.record.host.clone())),
    }
}

/// Checks a key a client presented: its secret, then its expiry; records
/// its use (throttled by the store, see [`Store::touch_key`]).
pub async fn verify(store: &dyn Store, key: &ApiKey) -> Result<VerifiedKey, KeyRefusal> {
    let record = match store.find_key(&key.id).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => return Err(KeyRefusal::Invalid),
        Err(e) => return Err(KeyRefusal::Store(e)),
    };
    if !record.secret_digest.matches(&key.secret.digest()) {
        return Err(KeyRefusal::Invalid);
    }
    let now = Utc::now();
    if record.expired_at(now) {
        return Err(KeyRefusal::Expired);
    }
    if let Err(e) = store.touch_key(&record.id, now).await {
        // Only a statistic: the request it came with goes on, and its own
        // write will report the store's trouble if there is one.
        tracing::warn!(error = %e, key = %record.id, "could not record a key's use");
    }
    Ok(VerifiedKey { record })
}

/// Why a mint with a verified key was refused by the store: `NotFound`
/// means the store's own re-check at commit time found the key deleted or,
/// if it is past its expiry by now, expired.
pub fn refusal_at_commit(key: &KeyRecord, error: StoreError) -> KeyRefusal {
    match error {
        StoreError::NotFound if key.expired_at(Utc::now()) => KeyRefusal::Expired,
        StoreError::NotFound => KeyRefusal::Invalid,
        other => KeyRefusal::Store(other),
    }
}

/// Rate limits remembered at most; past it they start over (a key's budget
/// refills early, at worst).
const MAX_LIMITED_KEYS: usize = 65_536;

/// The mint rates of keys that have one, counted in this process's memory:
/// each server node counts on its own, and a restart starts every key
/// afresh (see docs/cli.md on sizing a rate for several nodes).
#[derive(Default)]
pub struct MintLimiter {
    by_key: Mutex<HashMap<KeyId, (MintRate, DefaultDirectRateLimiter)>>,
}

impl MintLimiter {
    /// Counts one mint with `key`; `Err(seconds)` to wait (rounded up, at
    /// least 1) when its rate is used up. Keys without a rate always pass.
    pub fn check(&self, key: &KeyRecord) -> Result<(), u64> {
        let Some(rate) = key.rate else {
            return Ok(());
        };
        let mut by_key = self.lock();
        if by_key.len() >= MAX_LIMITED_KEYS && !by_key.contains_key(&key.id) {
            by_key.clear();
        }
        let entry = by_key
            .entry(key.id.clone())
            .or_insert_with(|| (rate, limiter(rate)));
        if entry.0 != rate {
            *entry = (rate, limiter(rate));
        }
        entry.1.check().map_err(|not_until| {
            crate::metrics::rate_limited("key_mint");
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<KeyId, (MintRate, DefaultDirectRateLimiter)>> {
        // The map is valid after any panic: each change is one insert or clear.
        self.by_key
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A limiter letting `rate`'s whole number through at once, refilled evenly
/// over its period (governor's GCRA, as the sign-in limits use).
fn limiter(rate: MintRate) -> DefaultDirectRateLimiter {
    let limit = rate.limit();
    // At most 31 days over at least 1: never zero, so with_period succeeds;
    // the fallback only satisfies the type.
    let quota = Quota::with_period(rate.period() / limit.get())
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(limit);
    RateLimiter::direct(quota)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretDigest;

    fn verified(rate: Option<&str>) -> VerifiedKey {
        VerifiedKey {
            record: KeyRecord {
                id: KeyId::parse("RateLimited1").unwrap(),
                host: HostName::parse("example.com").unwrap(),
                name: None,
                created_at: Utc::now(),
                secret_digest: SecretDigest::of("s"),
                scope: KeyScope::Mint,
                expires_at: None,
                rate: rate.map(|r| MintRate::parse(r).unwrap()),
                last_used_at: None,
            },
        }
    }

    #[test]
    fn a_rate_lets_its_number_through_then_says_how_long_to_wait() {
        let limiter = MintLimiter::default();
        let key = verified(Some("3/h"));
        for _ in 0..3 {
            assert_eq!(limiter.check(&key.record), Ok(()));
        }
        // 3 an hour refill one every 20 minutes.
        let wait = limiter.check(&key.record).unwrap_err();
        assert!((1_190..=1_200).contains(&wait), "{wait}");
        let unlimited = verified(None);
        for _ in 0..100 {
            assert_eq!(limiter.check(&unlimited.record), Ok(()));
        }
    }

    #[test]
    fn an_admin_key_may_mint_and_a_mint_key_may_not_administer() {
        assert!(permits(KeyScope::Admin, KeyScope::Admin));
        assert!(permits(KeyScope::Admin, KeyScope::Mint));
        assert!(permits(KeyScope::Mint, KeyScope::Mint));
        assert!(!permits(KeyScope::Mint, KeyScope::Admin));
    }

    #[test]
    fn an_expired_key_refused_at_commit_is_told_apart_from_a_deleted_one() {
        let mut key = verified(None);
        assert_eq!(
            refusal_at_commit(&key.record, StoreError::NotFound),
            KeyRefusal::Invalid
        );
        key.record.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        assert_eq!(
            refusal_at_commit(&key.record, StoreError::NotFound),
            KeyRefusal::Expired
        );
        let failure = StoreError::transient("x");
        assert_eq!(
            refusal_at_commit(&key.record, failure.clone()),
            KeyRefusal::Store(failure)
        );
    }
}
