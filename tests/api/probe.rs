//! A read-only look into a test server's store, for assertions on what it
//! kept ("exactly one account", "the invite was spent once", "only digests are
//! stored"). It goes through the library's `Store` trait, not through SQL, so
//! the same assertions hold on every backend the suite runs on; only
//! [`open`] knows which backend that is.

use invite_server::crypto::SecretDigest;
use invite_server::domain::{AccountName, HostName, InviteLookup, KeyId};
use std::sync::Arc;

use invite_server::store::{
    self, AccountRecord, Census, DatabaseLocation, InviteRecord, KeyRecord, SessionRecord,
    StatusFilter, Store, StoreError,
};

use crate::helpers::{stored_form, TestApp};

/// Opens the store `app`'s servers use, as a second client of it, with the
/// opener every admin command uses (so SQLite or PostgreSQL alike). Inside
/// the runtime that will use it: a PostgreSQL pool's connections live there.
async fn open(location: &DatabaseLocation) -> Arc<dyn Store> {
    store::open(location, 2, Default::default(), store::Purpose::Admin)
        .await
        .unwrap_or_else(|e| panic!("open the test store {location}: {e}"))
}

/// Runs one question against `app`'s store on a runtime of its own, on a
/// thread of its own: the tests are synchronous, but some (the browser's)
/// ask from inside their own runtime, where no other may block.
fn ask<T, Fut>(app: &TestApp, question: impl FnOnce(Arc<dyn Store>) -> Fut + Send) -> T
where
    Fut: std::future::Future<Output = T>,
    T: Send,
{
    let location = DatabaseLocation::parse(&app.database()).expect("the test database location");
    std::thread::scope(|s| {
        s.spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the probe")
                .block_on(async { question(open(&location).await).await })
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// `Ok(Some)` for a record, `Ok(None)` for `NotFound`; any other error fails
/// the test.
fn found<T>(what: &str, answer: Result<T, StoreError>) -> Option<T> {
    match answer {
        Ok(record) => Some(record),
        Err(StoreError::NotFound) => None,
        Err(e) => panic!("probe: looking up {what} failed: {e}"),
    }
}

fn host(name: &str) -> HostName {
    HostName::parse(name).unwrap_or_else(|e| panic!("{name:?} is not a host name: {e}"))
}

/// Counts of everything the store holds, over every host.
pub fn census(app: &TestApp) -> Census {
    ask(app, |s| async move { s.census(None).await }).expect("probe: census")
}

/// Counts of everything the store holds for one host.
pub fn census_of(app: &TestApp, host_name: &str) -> Census {
    let host = host(host_name);
    ask(app, |s| async move { s.census(Some(&host)).await }).expect("probe: census")
}

/// How many accounts the store holds, on every host.
pub fn accounts(app: &TestApp) -> u64 {
    census(app).accounts
}

/// How many invites the store holds, of every kind and host.
pub fn invites(app: &TestApp) -> u64 {
    census(app).invites
}

/// How many sign-in sessions are open, on every host.
pub fn sessions(app: &TestApp) -> u64 {
    census(app).sessions
}

/// The account `name` of `host_name`, if there is one.
pub fn account_on(app: &TestApp, host_name: &str, name: &str) -> Option<AccountRecord> {
    let host = host(host_name);
    // A name the server would refuse cannot be stored.
    let name = AccountName::parse(name).ok()?;
    let answer = ask(app, |s| async move { s.find_account(&host, &name).await });
    found("an account", answer)
}

/// The account `name` of `localhost` (the default test host), if there is one.
pub fn account(app: &TestApp, name: &str) -> Option<AccountRecord> {
    account_on(app, "localhost", name)
}

/// The invite a token names, looked up as docs/storage.md says it is kept
/// (its row id, and the digest of its secret), if the store holds it.
pub fn invite(app: &TestApp, token: &str) -> Option<InviteRecord> {
    let (id, digest) = stored_form(token);
    let digest = SecretDigest::from_slice(&digest).expect("a SHA-256 digest is 32 bytes");
    let lookup = InviteLookup::ById { id, digest };
    found(
        "an invite",
        ask(app, |s| async move { s.find_invite(lookup).await }),
    )
}

/// The API key of public id `id`, if the store holds it.
pub fn key(app: &TestApp, id: &str) -> Option<KeyRecord> {
    let id = KeyId::parse(id).ok()?;
    let answer = ask(app, |s| async move { s.find_key(&id).await });
    found("a key", answer)
}

/// The session an identity cookie's token opens, if it is stored (sessions
/// are kept by the SHA-256 of their token, docs/storage.md).
pub fn session(app: &TestApp, token: &str) -> Option<SessionRecord> {
    let digest = SecretDigest::of(token);
    found(
        "a session",
        ask(app, |s| async move { s.find_session(digest).await }),
    )
}

/// The names of the accounts registered with the invite a token names,
/// oldest first (empty when it was never used or is not stored).
pub fn uses(app: &TestApp, token: &str) -> Vec<String> {
    let Some(invite) = invite(app, token) else {
        return Vec::new();
    };
    let (host, id) = (invite.host, invite.id);
    let answer = ask(app, |s| async move { s.invite_details(&host, id).await });
    found("an invite's uses", answer)
        .map(|details| details.uses.into_iter().map(|u| u.name).collect())
        .unwrap_or_default()
}

/// Every invite of `host_name`, newest first.
pub fn invites_of(app: &TestApp, host_name: &str) -> Vec<InviteRecord> {
    const PAGE: u32 = 500;
    let host = host(host_name);
    let total = census_of(app, host_name).invites;
    let mut all: Vec<InviteRecord> = Vec::new();
    // Bounded: one page more than the census says there are.
    for _ in 0..=total / u64::from(PAGE) + 1 {
        let (host, after) = (host.clone(), all.last().map(|i| i.id));
        let page = ask(app, |s| async move {
            s.list_invites(&host, StatusFilter::All, after, PAGE, chrono::Utc::now())
                .await
        })
        .expect("probe: list invites");
        if page.is_empty() {
            break;
        }
        all.extend(page.into_iter().map(|d| d.invite));
    }
    all
}

/// How many invites still have a use left (or were never used).
pub fn invites_not_used_up(app: &TestApp) -> u64 {
    let census = census(app);
    census.invites - census.invites_used_up
}

/// The key the store keeps for signing registration forms, shown as what it
/// signs for a fixed input (the key itself has no accessor, on purpose).
pub fn form_key_signature(app: &TestApp) -> String {
    // The servers stored their key at startup; this candidate is never kept.
    let candidate: [u8; 32] = rand::random();
    let key = ask(app, |s| async move { s.form_key(candidate).await }).expect("probe: form key");
    key.sign(1, "probe")
}

/// When the invite a token names was used up, in microseconds since the
/// epoch, and the row id of the account its last use made; `(None, None)`
/// while it has a use left (or is not stored).
pub fn used_up(app: &TestApp, token: &str) -> (Option<i64>, Option<i64>) {
    let Some(invite) = invite(app, token) else {
        return (None, None);
    };
    if invite.uses_spent < invite.uses_allowed {
        return (None, None);
    }
    let (host, id) = (invite.host.clone(), invite.id);
    let answer = ask(app, |s| async move { s.invite_details(&host, id).await });
    let Some(last) = found("an invite's uses", answer).and_then(|d| d.uses.into_iter().last())
    else {
        return (None, None);
    };
    let account = account_on(app, invite.host.as_str(), &last.name).map(|a| a.id);
    (Some(last.used_at.timestamp_micros()), account)
}
