//! Checking a session: the identity cookie's token -> the session -> its
//! account, with idle expiry and throttled use records. One use case behind
//! `/api/auth/check`, the account page and every request that may come
//! signed in, so they all refuse the same sessions.

use std::time::Duration;

use chrono::Utc;

use crate::domain::IdentityToken;
use crate::store::{AccountRecord, Store, StoreError};

/// A session's use is written back at most this often, so checks stay
/// reads; more often when the idle expiry is short (see [`check`]).
const TOUCH_EVERY_SECS: i64 = 60;

/// Why a token signs no one in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// No such session: never made, signed out, ended by a password change,
    /// or its account is disabled or deleted.
    Unknown,
    /// It went unused for longer than the idle expiry, and has been ended.
    Expired,
    /// The store failed; nothing is known about the session.
    Store(StoreError),
}

/// The account `token` signs in, if its session exists and has been used
/// within `idle_expiry`. An expired session is deleted so it cannot come
/// back; a live one is recorded as used when its last record is older than
/// a tenth of the idle expiry or a minute, whichever is less. One read per
/// check, and a write at most that often: `/api/auth/check` is on every
/// request to the apps behind forward-auth.
pub async fn check(
    store: &dyn Store,
    token: &IdentityToken,
    idle_expiry: Duration,
) -> Result<AccountRecord, SessionError> {
    let digest = token.digest();
    let session = match store.find_session(digest).await {
        Ok(s) => s,
        Err(StoreError::NotFound) => return Err(SessionError::Unknown),
        Err(e) => return Err(SessionError::Store(e)),
    };
    let now = Utc::now();
    // Configuration bounds the expiry to years, well inside chrono's range.
    let idle = chrono::Duration::from_std(idle_expiry).unwrap_or(chrono::Duration::days(30));
    if now - session.last_used_at > idle {
        // Refused whether or not the deletion succeeds: the expiry decides.
        if let Err(e) = store.delete_session(digest).await {
            tracing::warn!(error = %e.chain(), "could not delete an expired session");
        }
        return Err(SessionError::Expired);
    }
    // Throttled writes record use up to `touch_every` late; a tenth of the idle
    // expiry keeps a session in steady use from expiring even when that is short.
    let touch_every = (idle / 10).min(chrono::Duration::seconds(TOUCH_EVERY_SECS));
    if now - session.last_used_at >= touch_every {
        store
            .touch_session(digest, now)
            .await
            .map_err(SessionError::Store)?;
    }
    Ok(session.account)
}

/// Signs out: ends the session of `token`, if there is one.
pub async fn end(store: &dyn Store, token: &IdentityToken) -> Result<(), StoreError> {
    store.delete_session(token.digest()).await
}

/// Signs `account` out everywhere but here: ends every session of it but
/// the one of `token`; how many ended.
pub async fn end_others(
    store: &dyn Store,
    account: &AccountRecord,
    token: &IdentityToken,
) -> Result<u64, StoreError> {
    store.end_other_sessions(account.id, token.digest()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountName, HostName};
    use crate::store::{NewAccount, NewSession, SqliteStore};

    const IDLE: Duration = Duration::from_secs(3600);

    /// A store with one account and a session of it last used `ago`.
    async fn session_used(
        ago: chrono::Duration,
    ) -> (tempfile::TempDir, SqliteStore, IdentityToken) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let account = store
            .create_account(NewAccount {
                host: HostName::parse("example.com").unwrap(),
                name: AccountName::parse("alice").unwrap(),
                password_hash: "$argon2id$test".into(),
                created_at: Utc::now(),
                invited_by: "cli".into(),
                invite_id: None,
            })
            .await
            .unwrap();
        let token = IdentityToken::generate().unwrap();
        let session = NewSession {
            token_digest: token.digest(),
            created_at: Utc::now() - ago,
        };
        store.create_session(account.id, session).await.unwrap();
        (dir, store, token)
    }

    async fn last_used(store: &SqliteStore, token: &IdentityToken) -> chrono::DateTime<Utc> {
        store
            .find_session(token.digest())
            .await
            .unwrap()
            .last_used_at
    }

    #[tokio::test]
    async fn a_session_idle_past_the_expiry_is_refused_and_ended() {
        let (_dir, store, token) = session_used(chrono::Duration::hours(2)).await;
        assert_eq!(
            check(&store, &token, IDLE).await.unwrap_err(),
            SessionError::Expired
        );
        assert_eq!(
            store.find_session(token.digest()).await.unwrap_err(),
            StoreError::NotFound
        );
        assert_eq!(
            check(&store, &token, IDLE).await.unwrap_err(),
            SessionError::Unknown
        );
    }

    #[tokio::test]
    async fn a_session_in_use_is_recorded_as_used_at_most_once_per_throttle_period() {
        // Used 10 s ago: within a minute (and a tenth of the hour), no write.
        let (_dir, store, token) = session_used(chrono::Duration::seconds(10)).await;
        let before = last_used(&store, &token).await;
        let account = check(&store, &token, IDLE).await.unwrap();
        assert_eq!(account.name.as_str(), "alice");
        assert_eq!(last_used(&store, &token).await, before);

        // Used 2 minutes ago: recorded as used now.
        let (_dir, store, token) = session_used(chrono::Duration::minutes(2)).await;
        let before = last_used(&store, &token).await;
        check(&store, &token, IDLE).await.unwrap();
        assert!(last_used(&store, &token).await > before);
    }

    #[tokio::test]
    async fn a_token_with_no_session_signs_no_one_in() {
        let (_dir, store, _) = session_used(chrono::Duration::zero()).await;
        let stranger = IdentityToken::generate().unwrap();
        assert_eq!(
            check(&store, &stranger, IDLE).await.unwrap_err(),
            SessionError::Unknown
        );
    }
}
