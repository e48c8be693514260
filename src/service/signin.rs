//! Signing in with a name and password, and changing one's own password:
//! one use case behind `POST /api/auth/login`, the `/login` page and the
//! `/account` page, so every surface has the same limits and timing.

use std::net::IpAddr;

use crate::config::{Config, HostConfig};
use crate::crypto::SecretDigest;
use crate::domain::{AccountName, IdentityToken, Password};
use crate::metrics::{self, SignInFailure};
use crate::passwords::{HashError, Hasher};
use crate::store::{AccountRecord, Store, StoreError};

use super::login_limits::LoginLimiter;
use super::{HashedWriteError, Outage};

/// Why a sign-in (or a password check) did not succeed; each surface words it.
#[derive(Debug, PartialEq, Eq)]
pub enum SignInError {
    /// Too many attempts from this address or at this account: retry after
    /// this many seconds.
    TooMany(u64),
    /// The request names no host and the name carries none: which host's
    /// account is meant cannot be told.
    AmbiguousHost,
    /// Wrong name or password (or an unknown name, or another host's).
    Wrong,
    /// The store or the hasher failed or is busy (logged already, if it is
    /// worth logging); nothing was changed.
    Unavailable(Outage),
}

/// Where a sign-in comes from and what it is addressed to.
pub struct SignInContext<'c> {
    /// The limits on attempts.
    pub limiter: &'c LoginLimiter,
    /// The client's address, when known (see `trusted_proxies`).
    pub client: Option<IpAddr>,
    /// The host the request is addressed to, if any.
    pub addressed: Option<&'c HostConfig>,
}

impl<'c> SignInContext<'c> {
    /// Counts one attempt against the client's address; callers do this
    /// before judging what was sent, so malformed attempts are limited too.
    /// Only a counted attempt can go on to [`sign_in`].
    pub fn count_attempt(self) -> Result<CountedAttempt<'c>, SignInError> {
        if let Some(ip) = self.client {
            self.limiter.check_address(ip).map_err(|secs| {
                metrics::sign_in_failed(SignInFailure::RateLimitedAddress);
                SignInError::TooMany(secs)
            })?;
        }
        Ok(CountedAttempt(self))
    }
}

/// A sign-in attempt already counted against its client's address.
pub struct CountedAttempt<'c>(SignInContext<'c>);

/// A successful sign-in: the account, its host and the new session's token.
#[derive(Debug)]
pub struct SignedIn<'c> {
    /// The account signed in.
    pub account: AccountRecord,
    /// Its host.
    pub host: &'c HostConfig,
    /// The secret for the identity cookie, shown this once.
    pub identity: IdentityToken,
}

fn unavailable_hash(e: HashError) -> SignInError {
    metrics::sign_in_failed(match e {
        HashError::Busy => SignInFailure::Busy,
        HashError::Failed(_) => SignInFailure::Unavailable,
    });
    SignInError::Unavailable(Outage::of_hash(&e, "signing in"))
}

fn unavailable_store(e: StoreError) -> SignInError {
    metrics::sign_in_failed(SignInFailure::Unavailable);
    SignInError::Unavailable(Outage::of_store(&e, "signing in"))
}

/// A wrong name or password, counted.
fn wrong() -> SignInError {
    metrics::sign_in_failed(SignInFailure::WrongPassword);
    SignInError::Wrong
}

/// The host a sign-in is for: the one the request is addressed to; `name@host`
/// must name that same host. On a multi-host server reached by an address
/// that names none of them, `name@host` decides. `Ok(None)` when they
/// disagree (answered, after the same work, like a wrong password).
fn login_host<'c>(
    config: &'c Config,
    addressed: Option<&'c HostConfig>,
    host_part: Option<&str>,
) -> Result<Option<&'c HostConfig>, SignInError> {
    match (addressed, host_part) {
        (Some(addressed), Some(h)) => {
            Ok(config.host(h).filter(|named| named.name == addressed.name))
        }
        (Some(addressed), None) => Ok(Some(addressed)),
        (None, Some(h)) => Ok(config.host(h)),
        (None, None) => {
            metrics::sign_in_failed(SignInFailure::AmbiguousHost);
            Err(SignInError::AmbiguousHost)
        }
    }
}

/// Signs in `name` (or `name@host`) with `password`: counts the attempt
/// against the account (the address was counted already), verifies the password
/// (hashing a dummy for unknown names and hosts, so timing reveals neither)
/// and opens a session.
pub async fn sign_in<'c>(
    store: &dyn Store,
    hasher: &Hasher,
    config: &'c Config,
    attempt: CountedAttempt<'c>,
    name: &str,
    password: String,
) -> Result<SignedIn<'c>, SignInError> {
    let ctx = attempt.0;
    let (name_part, host_part) = match name.rsplit_once('@') {
        Some((n, h)) => (n, Some(h)),
        None => (name, None),
    };
    let host = login_host(config, ctx.addressed, host_part)?;
    let name = AccountName::parse(name_part);
    if let (Some(host), Ok(name)) = (host, &name) {
        // Counted whether or not the account exists, so the answer does not
        // tell which names do.
        ctx.limiter
            .check_account(&host.name, name)
            .map_err(|secs| {
                metrics::sign_in_failed(SignInFailure::RateLimitedAccount);
                SignInError::TooMany(secs)
            })?;
    }
    let account = match (host, name) {
        (Some(host), Ok(name)) => match store.find_account(&host.name, &name).await {
            Ok(a) => Some(a),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(unavailable_store(e)),
        },
        _ => None,
    };
    let verified = hasher
        .verify(password, account.as_ref().map(|a| a.password_hash.clone()))
        .await
        .map_err(unavailable_hash)?;
    let (account, host) = match (account, host) {
        (Some(a), Some(h)) if verified => (a, h),
        _ => return Err(wrong()),
    };
    let (identity, session) = super::new_session().map_err(|e| unavailable_store(e.into()))?;
    match store.create_session(account.id, session).await {
        Ok(()) => Ok(SignedIn {
            account,
            host,
            identity,
        }),
        // Deleted between the check and the session: as if it never was.
        Err(StoreError::NotFound) => Err(wrong()),
        Err(e) => Err(unavailable_store(e)),
    }
}

/// Why a signed-in account's password was not changed.
#[derive(Debug, PartialEq, Eq)]
pub enum ChangeError {
    /// The current password was wrong, or attempts are over their limit.
    SignIn(SignInError),
    /// The account is gone.
    Gone,
}

/// Changes a signed-in account's password after checking its current one
/// (counted like a sign-in attempt: a stolen session must not become a
/// guessing oracle), then ends every session of the account but `keep`.
pub async fn change_password(
    store: &dyn Store,
    hasher: &Hasher,
    attempt: CountedAttempt<'_>,
    account: &AccountRecord,
    current: String,
    new: Password,
    keep: SecretDigest,
) -> Result<(), ChangeError> {
    let ctx = attempt.0;
    ctx.limiter
        .check_account(&account.host, &account.name)
        .map_err(|s| {
            metrics::sign_in_failed(SignInFailure::RateLimitedAccount);
            ChangeError::SignIn(SignInError::TooMany(s))
        })?;
    let verified = hasher
        .verify(current, Some(account.password_hash.clone()))
        .await
        .map_err(|e| ChangeError::SignIn(unavailable_hash(e)))?;
    if !verified {
        return Err(ChangeError::SignIn(wrong()));
    }
    // The account page only serves the account of the host it is on.
    let host = ctx
        .addressed
        .filter(|h| h.name == account.host)
        .ok_or(ChangeError::Gone)?;
    let actor = format!("account {}", account.name);
    match super::accounts::set_password(store, hasher, host, account, new, Some(keep), &actor).await
    {
        Ok(()) => Ok(()),
        Err(HashedWriteError::Store(StoreError::NotFound)) => Err(ChangeError::Gone),
        Err(HashedWriteError::Store(e)) => Err(ChangeError::SignIn(unavailable_store(e))),
        Err(HashedWriteError::Hash(e)) => Err(ChangeError::SignIn(unavailable_hash(e))),
    }
}
