//! The store boundary. Everything the server and the admin commands persist goes
//! through [`Store`]; only the backend modules below speak SQL, so another
//! backend can be added without touching handlers or commands.

pub mod dump;
mod key_cache;
mod postgres;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use dump::{Dump, ImportError, Table, TableCounts};
pub use key_cache::KeyCache;
pub use postgres::{
    BadUrl, OpenError as PostgresOpenError, PostgresStore, PostgresUrl, SslMode, DEFAULT_POOL_SIZE,
};
pub use sqlite::{BackupError, BackupSummary};
pub use sqlite::{OpenError, SqliteStore};

use crate::crypto::{FormKey, SecretDigest};
use crate::domain::{AccountName, HostName, InviteLookup, KeyId, KeyScope, MintRate};

/// Where the store lives, as `database`, `INVITE_SERVER_DATABASE` or `--db`
/// name it: a `postgres://` or `postgresql://` URL selects PostgreSQL,
/// anything else is the path of a SQLite file. Shown (Display, Debug)
/// without any password.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum DatabaseLocation {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (boxed: its parsed settings are large).
    Postgres(Box<PostgresUrl>),
}

impl DatabaseLocation {
    /// Parses a configured location; only a malformed URL is refused.
    pub fn parse(text: &str) -> Result<Self, BadUrl> {
        if PostgresUrl::is_postgres(text) {
            PostgresUrl::parse(text).map(|url| Self::Postgres(Box::new(url)))
        } else {
            Ok(Self::Sqlite(PathBuf::from(text)))
        }
    }
}

impl TryFrom<String> for DatabaseLocation {
    type Error = BadUrl;
    fn try_from(text: String) -> Result<Self, BadUrl> {
        Self::parse(&text)
    }
}

impl std::fmt::Display for DatabaseLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => write!(f, "{url}"),
        }
    }
}

/// Why a store could not be opened, whichever backend it is.
#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    /// The SQLite file could not be opened.
    #[error(transparent)]
    Sqlite(#[from] OpenError),
    /// The PostgreSQL database could not be opened.
    #[error(transparent)]
    Postgres(#[from] PostgresOpenError),
}

/// What the caller will do with an opened store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Serve requests: the store must prove it takes writes before the
    /// server listens, and answers key lookups through a [`KeyCache`].
    Serve,
    /// One admin command: no cache, and no write beyond what it asks for.
    Admin,
}

/// Opens (creating or migrating as needed) the store `location` names, with
/// an outbox row for every change `routes` takes and (PostgreSQL) at most
/// `pool_size` connections: the one way `serve` and every admin command
/// open their store.
pub async fn open(
    location: &DatabaseLocation,
    pool_size: usize,
    routes: crate::webhooks::Routes,
    purpose: Purpose,
) -> Result<Arc<dyn Store>, OpenStoreError> {
    Ok(match location {
        DatabaseLocation::Sqlite(path) => {
            let store = SqliteStore::open(path)?.with_webhooks(routes);
            match purpose {
                Purpose::Serve => {
                    store.check_writable().await?;
                    Arc::new(KeyCache::new(store))
                }
                Purpose::Admin => Arc::new(store),
            }
        }
        DatabaseLocation::Postgres(url) => {
            let store = PostgresStore::open(url, pool_size)
                .await?
                .with_webhooks(routes);
            match purpose {
                Purpose::Serve => {
                    store.check_writable().await?;
                    Arc::new(KeyCache::new(store))
                }
                Purpose::Admin => Arc::new(store),
            }
        }
    })
}

/// Applies the schema migrations the database at `location` lacks; the
/// versions before and after.
pub async fn migrate(location: &DatabaseLocation) -> Result<(i64, i64), OpenStoreError> {
    match location {
        DatabaseLocation::Sqlite(path) => {
            let before = sqlite_version(path);
            // Opening a SQLite store migrates it, in one IMMEDIATE transaction.
            drop(SqliteStore::open(path)?);
            Ok((before, sqlite_version(path)))
        }
        DatabaseLocation::Postgres(url) => Ok(PostgresStore::migrate_only(url).await?),
    }
}

/// The schema version of the SQLite file at `path` (its `user_version`); 0
/// for a file that does not exist yet or cannot be read.
fn sqlite_version(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
        .unwrap_or(0)
}

/// Times an insert draws a new invite id after landing on one already taken.
pub(crate) const ID_ATTEMPTS: usize = 16;

/// A new invite id, the same scheme in every backend: milliseconds since the
/// epoch above 20 random bits. Ids so made follow time, so inserts land at
/// the end of the table (in random order within a millisecond); they say
/// when an invite was made (its page says as much) but not how many came
/// before; and two processes minting in the same millisecond rarely pick the
/// same one (the insert then draws again). Never below 2^32, where token
/// parsing expects schema 1 ids, even for a clock set before 1970; positive
/// until the year 2248.
pub(crate) fn new_invite_id(created_at: DateTime<Utc>) -> i64 {
    let millis = created_at.timestamp_millis().clamp(1 << 12, (1 << 43) - 1);
    (millis << 20) | i64::from(rand::random::<u32>() & 0xF_FFFF)
}

/// When the invite with row id `id` was minted, read from the id itself
/// (its high bits, see [`new_invite_id`]); `None` for a schema 1 id.
pub(crate) fn invite_minted_at(id: i64) -> Option<DateTime<Utc>> {
    (id >= crate::domain::LEGACY_INVITE_ID_LIMIT)
        .then(|| DateTime::from_timestamp_millis(id >> 20))
        .flatten()
}

/// What the audit row of an operator's bulk mint says about the batch.
pub(crate) fn bulk_mint_detail(first: &NewInvite) -> String {
    format!(
        "uses {}{}{}",
        first.uses_allowed,
        first
            .fixed_name
            .as_ref()
            .map_or(String::new(), |n| format!(", name {n}")),
        first
            .note
            .as_ref()
            .map_or(String::new(), |n| format!(", note {n:?}")),
    )
}

/// What can go wrong in the store. `NotFound` and the conflicts are answers;
/// `Backend` is a failure of the store itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such record (or, for invites, nothing that may be used).
    #[error("not found")]
    NotFound,
    /// The invite was used already.
    #[error("the invite has been used")]
    InviteUsed,
    /// The invite is past its expiry.
    #[error("the invite has expired")]
    InviteExpired,
    /// The invite was revoked by an operator.
    #[error("the invite was withdrawn")]
    InviteRevoked,
    /// The invite is for one fixed account name, and another was asked for.
    #[error("this invite is for another name")]
    NameNotAllowed,
    /// The minting account holds as many pending invites as it may.
    #[error("the account holds as many pending invites as it may")]
    InviteQuota,
    /// An account of that name exists on that host.
    #[error("that name is taken")]
    NameTaken,
    /// The database or its files failed; whether trying again soon may help
    /// is [`BackendError::is_transient`].
    #[error(transparent)]
    Backend(BackendError),
    /// Every remaining use of the invite is held by a registration still in
    /// progress (see [`Store::reserve`]); it may come free again.
    #[error("a registration with this invite is in progress")]
    InviteReserved,
    /// The service the host's accounts are provisioned in said no, or could
    /// not be reached; nothing was changed here.
    #[error("{0}")]
    Provision(crate::provision::ProvisionError),
}

/// A failure of the store itself, with its cause kept for the log and a
/// verdict on whether it may pass by itself. Transient failures (a lock held
/// past the busy timeout, a store shutting down, a serialization failure or
/// lost connection on a database server) are answered 503 with
/// `Retry-After`; permanent ones (a bug, damaged data, a statement the schema
/// cannot run) 500 with a generic body, logged once with their whole chain.
#[derive(Debug, Clone)]
pub struct BackendError {
    transient: bool,
    // An Arc, not a Box, so that one failed group commit can answer every
    // write in its batch with the same error (StoreError is Clone).
    cause: Arc<dyn std::error::Error + Send + Sync>,
}

impl BackendError {
    /// A failure that may pass if the request is tried again soon.
    pub fn transient(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            transient: true,
            cause: Arc::from(cause.into()),
        }
    }

    /// A failure that trying again will not mend.
    pub fn permanent(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            transient: false,
            cause: Arc::from(cause.into()),
        }
    }

    /// Whether trying again soon may succeed.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The backend's own error, to look at (a driver's error code, say).
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.cause
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cause is named here, so every log line that shows a store
        // error by its Display alone still says what failed; `source` then
        // goes on below the cause, so [`ErrorChain`] repeats nothing.
        let kind = if self.transient {
            "the store is temporarily unavailable"
        } else {
            "storage failure"
        };
        write!(f, "{kind}: {}", self.cause)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

/// Two backend errors are equal when they are the same failure (clones of
/// one error), which is what tests of a batch's shared answer ask.
impl PartialEq for BackendError {
    fn eq(&self, other: &Self) -> bool {
        self.transient == other.transient && Arc::ptr_eq(&self.cause, &other.cause)
    }
}

impl Eq for BackendError {}

impl StoreError {
    /// A transient [`StoreError::Backend`] failure.
    pub fn transient(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend(BackendError::transient(cause))
    }

    /// A permanent [`StoreError::Backend`] failure.
    pub fn permanent(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend(BackendError::permanent(cause))
    }

    /// The whole chain of causes, for the log.
    pub fn chain(&self) -> ErrorChain<'_> {
        ErrorChain(self)
    }
}

/// An error and its sources, `outer: inner: innermost`, as one log field.
/// Written here rather than taken from anyhow: its `{:#}` needs an owned
/// `anyhow::Error`, and a store error is logged where it is only borrowed.
pub struct ErrorChain<'e>(pub &'e (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        // Bounded: a chain longer than this is a cycle or a bug, not news.
        let mut next = self.0.source();
        for _ in 0..16 {
            let Some(e) = next else { break };
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

/// Why a store cannot serve right now, in a few words for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unhealthy(pub &'static str);

/// Where an invite came from: Prosody's `source` field, extended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteSource {
    /// Minted through the HTTP API with this key (`api/token/<id>`).
    Key(KeyId),
    /// Minted by a signed-in account.
    Account(i64),
    /// Minted by an operator with `invite-server invites create`.
    Cli,
}

impl InviteSource {
    /// The stored and reported form: `api/token/<id>`, `account/<id>` or `cli`.
    pub fn to_text(&self) -> String {
        match self {
            Self::Key(id) => format!("api/token/{id}"),
            Self::Account(id) => format!("account/{id}"),
            Self::Cli => "cli".to_owned(),
        }
    }
}

/// An API key as stored: never the secret, only its digest.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// The key's public id.
    pub id: KeyId,
    /// The host it mints for.
    pub host: HostName,
    /// An optional label.
    pub name: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// SHA-256 of the secret.
    pub secret_digest: SecretDigest,
    /// What it may do.
    pub scope: KeyScope,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// How fast it may mint, if limited.
    pub rate: Option<MintRate>,
    /// When it was last used to mint, to within a minute (see
    /// [`Store::touch_key`]); `None` if never.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    /// Whether the key has expired at `now`.
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// What the audit row of its creation says about it: everything but
    /// its secret. The same words in every backend.
    pub(crate) fn created_detail(&self) -> String {
        let mut detail = format!("scope {}", self.scope);
        if let Some(at) = self.expires_at {
            detail.push_str(&format!(", expires {}", at.to_rfc3339()));
        }
        if let Some(rate) = self.rate {
            detail.push_str(&format!(", rate {rate}"));
        }
        detail
    }
}

/// A key as `keys list` shows it: its record and how many invites it minted.
#[derive(Debug, Clone)]
pub struct ListedKey {
    /// The key.
    pub key: KeyRecord,
    /// Invites it minted: those still stored and those purged since.
    pub invites_minted: u64,
}

/// A new invite to store.
#[derive(Debug, Clone)]
pub struct NewInvite {
    /// SHA-256 of the token's secret half (see [`crate::domain::InviteSecret`]).
    pub token_digest: SecretDigest,
    /// The host it is for.
    pub host: HostName,
    /// Who made it.
    pub source: InviteSource,
    /// The inviter's name as shown on the page, kept even if the key goes.
    pub issuer_name: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// How many accounts may register with it.
    pub uses_allowed: u32,
    /// The operator's note.
    pub note: Option<String>,
    /// The only account name that may register with it.
    pub fixed_name: Option<AccountName>,
    /// The most pending invites the minter may hold, this one included,
    /// checked in the same statement as the insert; `None` for no limit.
    pub pending_limit: Option<u32>,
}

/// What an invite is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteKind {
    /// Registers new accounts.
    Account,
    /// Resets an existing account's password.
    Reset,
}

impl InviteKind {
    /// The stored and reported form: `account` or `reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Reset => "reset",
        }
    }
}

/// Where an invite stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteStatus {
    /// Can still be used.
    Pending,
    /// Every use is spent.
    Used,
    /// Past its expiry.
    Expired,
    /// Withdrawn by an operator.
    Revoked,
}

impl InviteStatus {
    /// The reported form: `pending`, `used`, `expired` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Used => "used",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// One account registered with an invite.
#[derive(Debug, Clone)]
pub struct InviteUse {
    /// The account's name (kept after the account is deleted).
    pub name: String,
    /// When it registered.
    pub used_at: DateTime<Utc>,
}

/// An invite with the accounts registered with it, as operators list it.
#[derive(Debug, Clone)]
pub struct InviteDetails {
    /// The invite.
    pub invite: InviteRecord,
    /// The accounts registered with it, oldest first.
    pub uses: Vec<InviteUse>,
}

/// Which invites a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Only those of this status.
    Only(InviteStatus),
    /// All of them.
    All,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    /// Invites deleted.
    pub invites: u64,
    /// Sessions deleted.
    pub sessions: u64,
}

/// An invite as stored.
#[derive(Debug, Clone)]
pub struct InviteRecord {
    /// Row id, a non-secret handle.
    pub id: i64,
    /// The host it is for.
    pub host: HostName,
    /// `api/token/<id>`, `account/<id>` or `cli`.
    pub source: String,
    /// The inviter's name, if known.
    pub issuer_name: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// What it is for.
    pub kind: InviteKind,
    /// How many accounts may register with it.
    pub uses_allowed: u32,
    /// How many have.
    pub uses_spent: u32,
    /// The operator's note.
    pub note: Option<String>,
    /// The only account name that may register with it.
    pub fixed_name: Option<String>,
    /// For a password-reset invite, the row id of the account it resets;
    /// `None` for an invite that creates an account.
    pub reset_account_id: Option<i64>,
    /// When an operator withdrew it.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl InviteRecord {
    /// Where it stands at `now`; revocation first, then spent uses, then expiry.
    pub fn status_at(&self, now: DateTime<Utc>) -> InviteStatus {
        if self.revoked_at.is_some() {
            InviteStatus::Revoked
        } else if self.uses_spent >= self.uses_allowed {
            InviteStatus::Used
        } else if self.expires_at <= now {
            InviteStatus::Expired
        } else {
            InviteStatus::Pending
        }
    }

    /// Whether it can still be used at `now`, and if not, why.
    pub fn usable_at(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        match self.status_at(now) {
            InviteStatus::Pending => Ok(()),
            InviteStatus::Used => Err(StoreError::InviteUsed),
            InviteStatus::Expired => Err(StoreError::InviteExpired),
            InviteStatus::Revoked => Err(StoreError::InviteRevoked),
        }
    }

    /// Whether it may register the account `name` on `host` at `now`, as
    /// every backend checks before spending (or holding) a use: `NotFound`
    /// for another host's invite or a reset invite (which never registers a
    /// new account), then the invite's own status, then `NameNotAllowed`
    /// when it is for another fixed name.
    pub fn admits(
        &self,
        host: &HostName,
        name: &AccountName,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if self.host != *host || self.kind != InviteKind::Account {
            return Err(StoreError::NotFound);
        }
        self.usable_at(now)?;
        if self
            .fixed_name
            .as_deref()
            .is_some_and(|fixed| fixed != name.as_str())
        {
            return Err(StoreError::NameNotAllowed);
        }
        Ok(())
    }

    /// Uses left (0 once it is not pending).
    pub fn uses_remaining(&self) -> u32 {
        self.uses_allowed.saturating_sub(self.uses_spent)
    }
}

/// A new account to store.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The host it belongs to.
    pub host: HostName,
    /// Its name.
    pub name: AccountName,
    /// The Argon2id PHC string.
    pub password_hash: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Who invited it, readable without a lookup: `key <id>`,
    /// `account <name>` or `cli` (see [`AccountRecord::invited_by`]). The
    /// caller's choice ([`crate::service::invited_by`] for an invite); the
    /// store records it as given.
    pub invited_by: String,
    /// The row id of the invite it registered with; `None` for an account
    /// made with `accounts create`.
    pub invite_id: Option<i64>,
}

impl NewAccount {
    /// The record of this account once stored under row id `id`.
    pub(crate) fn saved_as(&self, id: i64) -> AccountRecord {
        AccountRecord {
            id,
            host: self.host.clone(),
            name: self.name.clone(),
            password_hash: self.password_hash.clone(),
            created_at: self.created_at,
            invited_by: self.invited_by.clone(),
            invite_id: self.invite_id,
            disabled_at: None,
        }
    }
}

/// An account as stored.
#[derive(Debug, Clone)]
pub struct AccountRecord {
    /// Row id.
    pub id: i64,
    /// The host it belongs to.
    pub host: HostName,
    /// Its name.
    pub name: AccountName,
    /// The Argon2id PHC string.
    pub password_hash: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Who invited it: `key <id>`, `account <name>` or `cli`. `cli` with an
    /// [`AccountRecord::invite_id`] is an account registered with an invite
    /// from `invites create`; without one, an account from `accounts create`.
    pub invited_by: String,
    /// The row id of the invite it registered with, if any (kept after the
    /// invite itself is purged).
    pub invite_id: Option<i64>,
    /// When an operator disabled it; a disabled account cannot sign in.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// An account with where it came from, for `accounts show`.
#[derive(Debug, Clone)]
pub struct AccountOrigin {
    /// The account.
    pub account: AccountRecord,
    /// When its invite was minted, if it came with one. Known even after the
    /// invite was purged: new invite ids carry their minting time.
    pub invite_minted_at: Option<DateTime<Utc>>,
}

/// A new password-reset invite to store.
#[derive(Debug, Clone)]
pub struct NewResetInvite {
    /// SHA-256 of the token's secret half.
    pub token_digest: SecretDigest,
    /// The host of the account.
    pub host: HostName,
    /// The account whose password it resets.
    pub account: AccountName,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// Who minted it, for the audit log (`cli`, `key <id>`).
    pub actor: String,
    /// Where it came from, as invites record it: `cli`, or the admin key.
    pub source: InviteSource,
}

/// A new sign-in session.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// SHA-256 of the identity token.
    pub token_digest: SecretDigest,
    /// When it starts.
    pub created_at: DateTime<Utc>,
}

/// A session with the account it signs in.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The account.
    pub account: AccountRecord,
    /// The last time the token was seen.
    pub last_used_at: DateTime<Utc>,
}

/// A registration holding a name (and one use of an invite) while the
/// account is created in the host's service.
#[derive(Debug, Clone)]
pub struct NewReservation {
    /// The host.
    pub host: HostName,
    /// The name held.
    pub name: AccountName,
    /// The invite whose use is held; `None` for `accounts create`.
    pub invite: Option<InviteLookup>,
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// When it stops holding anything unless finished or given back.
    pub lease_until: DateTime<Utc>,
}

/// A reservation whose lease ended without the registration finishing: the
/// server stopped while the service was being called, so the account may
/// exist there but not here.
#[derive(Debug, Clone)]
pub struct PendingReservation {
    /// The name it held.
    pub name: AccountName,
    /// The row id of its invite, if it had one.
    pub invite_id: Option<i64>,
    /// When it was taken.
    pub since: DateTime<Utc>,
}

/// Persistence for keys, invites, accounts and sessions.
///
/// Every write that returns `Ok` is durable: it has been committed to disk.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new API key, and an audit row naming `actor` (`cli`,
    /// `key <id>`, `account <name>`) in the same transaction.
    async fn create_key(&self, key: KeyRecord, actor: &str) -> Result<(), StoreError>;
    /// The keys of a host with what they minted, oldest first.
    async fn list_keys(&self, host: &HostName) -> Result<Vec<ListedKey>, StoreError>;
    /// Looks a key up by id. May answer from a cache and so return a key that
    /// another process has just deleted; [`Store::create_invite`] re-checks
    /// the key in its own transaction, which is what makes a deletion final.
    async fn find_key(&self, id: &KeyId) -> Result<KeyRecord, StoreError>;
    /// Looks a key up in the database itself, never in a cache: for
    /// requests that change or read what a key guards without a write that
    /// would re-check it (the admin API), so a key deleted by any node or
    /// the CLI is refused on its next such request. A store without a
    /// cache answers as [`Store::find_key`] does.
    async fn confirm_key(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.find_key(id).await
    }
    /// Deletes a key of a host and, with `revoke_invites`, revokes its
    /// pending invites, with an audit row naming `actor`, all in one
    /// transaction; how many invites it revoked. `NotFound` if the host has
    /// no such key.
    async fn delete_key(
        &self,
        host: &HostName,
        id: &KeyId,
        revoke_invites: bool,
        actor: &str,
    ) -> Result<u64, StoreError>;
    /// Records that a key was used at `now`. A store may skip the write when
    /// it recorded a use of that key less than a minute ago ([`KeyCache`]
    /// does), so a key in steady use costs one write a minute, not one per mint.
    async fn touch_key(&self, id: &KeyId, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Stores an invite and returns the id the store gave it, which becomes
    /// part of its token. Ids grow with `created_at` and carry random low
    /// bits, so they neither count invites nor collide between processes.
    /// When the invite is minted by a key or an account, that key or account
    /// must still exist at commit time, or the answer is `NotFound`.
    async fn create_invite(&self, invite: NewInvite) -> Result<i64, StoreError>;
    /// Stores many invites at once (bulk filling from the command line), all
    /// or none; their ids in the same order.
    async fn create_invites(&self, invites: Vec<NewInvite>) -> Result<Vec<i64>, StoreError>;
    /// Looks up the invite a token names; `NotFound` when the secret does not match.
    async fn find_invite(&self, lookup: InviteLookup) -> Result<InviteRecord, StoreError>;
    /// A host's invites of `status` at `now`, newest first: at most `limit`,
    /// starting after the row id `after` (the last of the previous page).
    async fn list_invites(
        &self,
        host: &HostName,
        status: StatusFilter,
        after: Option<i64>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<InviteDetails>, StoreError>;
    /// One invite of a host by its row id; `NotFound` for another host's.
    async fn invite_details(&self, host: &HostName, id: i64) -> Result<InviteDetails, StoreError>;
    /// Revokes a pending invite of a host in one conditional write, with an
    /// audit row by `actor`. Revoking a revoked invite changes nothing and
    /// succeeds; a used or expired one is `InviteUsed` / `InviteExpired`.
    async fn revoke_invite(
        &self,
        host: &HostName,
        id: i64,
        actor: String,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Deletes a host's invites that ended before `ended_before` (their last
    /// use, revocation or expiry) and its sessions unused since
    /// `idle_before`, counting removed key invites into the keys'
    /// `invites_purged`, with an audit row by `actor`.
    async fn purge(
        &self,
        host: &HostName,
        ended_before: DateTime<Utc>,
        idle_before: DateTime<Utc>,
        actor: String,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError>;

    /// In one transaction: checks the invite is usable at `now`, creates the
    /// account, marks the invite used and opens a session for the account.
    async fn redeem_invite(
        &self,
        lookup: InviteLookup,
        account: NewAccount,
        session: NewSession,
        now: DateTime<Utc>,
    ) -> Result<AccountRecord, StoreError>;

    /// Creates an account without an invite (operator command), audited as
    /// the operator's (`cli`).
    async fn create_account(&self, account: NewAccount) -> Result<AccountRecord, StoreError>;
    /// The accounts of a host, oldest first.
    async fn list_accounts(&self, host: &HostName) -> Result<Vec<AccountRecord>, StoreError>;
    /// Looks an account up by host and name.
    async fn find_account(
        &self,
        host: &HostName,
        name: &AccountName,
    ) -> Result<AccountRecord, StoreError>;
    /// Sets an account's password hash and ends every one of its sessions
    /// but `keep` (the session that made the change, if it stays signed in),
    /// in one transaction. `NotFound` when the account is gone.
    async fn set_password(
        &self,
        account_id: i64,
        password_hash: String,
        keep: Option<SecretDigest>,
        actor: &str,
    ) -> Result<(), StoreError>;
    /// Deletes an account and its sessions, and revokes the pending invites
    /// it minted, in one transaction, audited as done by `actor`.
    async fn delete_account(
        &self,
        host: &HostName,
        name: &AccountName,
        actor: &str,
    ) -> Result<(), StoreError>;
    /// Looks an account up by its row id.
    async fn find_account_by_id(&self, id: i64) -> Result<AccountRecord, StoreError>;
    /// An account with when its invite was minted.
    async fn account_origin(
        &self,
        host: &HostName,
        name: &AccountName,
    ) -> Result<AccountOrigin, StoreError>;
    /// Disables (ending every session) or enables an account, audited as
    /// done by `actor`. Doing it twice changes nothing more.
    async fn set_account_disabled(
        &self,
        host: &HostName,
        name: &AccountName,
        disabled: bool,
        at: DateTime<Utc>,
        actor: &str,
    ) -> Result<(), StoreError>;
    /// Stores a password-reset invite for an existing account (`NotFound`
    /// when there is none), audited; returns its row id.
    async fn create_reset_invite(&self, invite: NewResetInvite) -> Result<i64, StoreError>;
    /// In one transaction: checks the reset invite is usable at `now`, spends
    /// it, sets the account's password, ends every session of the account
    /// and opens `session` for it. `NotFound` when the invite is not a reset
    /// invite or the account is gone or disabled.
    async fn redeem_reset_invite(
        &self,
        lookup: InviteLookup,
        password_hash: String,
        session: NewSession,
        now: DateTime<Utc>,
    ) -> Result<AccountRecord, StoreError>;

    /// Opens a session for an account.
    async fn create_session(&self, account_id: i64, session: NewSession) -> Result<(), StoreError>;
    /// Looks a session up by the digest of its token.
    async fn find_session(&self, token_digest: SecretDigest) -> Result<SessionRecord, StoreError>;
    /// Records that a session was used at `now`.
    async fn touch_session(
        &self,
        token_digest: SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Ends a session.
    async fn delete_session(&self, token_digest: SecretDigest) -> Result<(), StoreError>;
    /// Ends every session of an account but `keep` (the one asking), and
    /// says how many ended.
    async fn end_other_sessions(
        &self,
        account_id: i64,
        keep: SecretDigest,
    ) -> Result<u64, StoreError>;

    /// The key that signs registration forms, one per database so that every
    /// server on it accepts the others' forms: `candidate` (fresh from the OS
    /// RNG) is stored if no key is yet, and the stored key is returned.
    async fn form_key(&self, candidate: [u8; FormKey::LEN]) -> Result<FormKey, StoreError>;

    /// Whether the store can take writes, as far as it knows without doing
    /// any I/O (it is asked on every `/health`): `Err` after a write has
    /// failed for a reason that will not go away by itself (a read-only or
    /// full disk, a deleted or replaced database file), until one succeeds.
    fn health(&self) -> Result<(), Unhealthy> {
        Ok(())
    }
    /// Claims up to `limit` webhook deliveries due at `now` whose lease is
    /// free or expired, leasing them until `until`.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Records the result of one attempt at a delivery and frees its lease.
    async fn finish_delivery(
        &self,
        id: i64,
        result: DeliveryResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// A host's webhook deliveries, newest first; with `failed_only`, only
    /// those given up on.
    async fn list_deliveries(
        &self,
        host: &HostName,
        failed_only: bool,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Makes one of a host's deliveries due at `now`; `NotFound` for none.
    async fn retry_delivery(
        &self,
        host: &HostName,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Holds a name, and a use of the invite if one is named (checked as
    /// [`Store::redeem_invite`] checks it, counting live reservations as
    /// spent), until the lease ends; its id. `NameTaken`, `InviteReserved`,
    /// or the invite's own errors.
    async fn reserve(&self, reservation: NewReservation) -> Result<i64, StoreError>;

    /// In one transaction: ends reservation `id` and creates the account
    /// (with an invite and a session, as [`Store::redeem_invite`] does, the
    /// use spent as at `reserved_at`; without, as the operator's
    /// [`Store::create_account`]). `NotFound` when the reservation is gone.
    async fn finalize_reservation(
        &self,
        id: i64,
        invite: Option<InviteLookup>,
        account: NewAccount,
        session: Option<NewSession>,
        reserved_at: DateTime<Utc>,
    ) -> Result<AccountRecord, StoreError>;

    /// Gives reservation `id` back.
    async fn release_reservation(&self, id: i64) -> Result<(), StoreError>;

    /// A host's reservations whose lease ended before `now` unfinished.
    async fn pending_reservations(
        &self,
        host: &HostName,
        now: DateTime<Utc>,
    ) -> Result<Vec<PendingReservation>, StoreError>;

    /// Every row of every table, read in one consistent transaction, for
    /// copying the whole store to another backend (`copy-db`).
    async fn export(&self) -> Result<Dump, StoreError>;

    /// Writes every row of `dump`, ids and all, in one transaction, into
    /// this store, which must be empty (`ImportError::NotEmpty`, checked in
    /// that transaction) and at the dump's schema version
    /// (`ImportError::SchemaMismatch`); on any error nothing is written.
    /// Afterwards the store's id generators continue above the imported ids.
    async fn import_into_empty(&self, dump: Dump) -> Result<(), ImportError>;

    /// How many rows each table holds, to check a copy.
    async fn table_counts(&self) -> Result<TableCounts, StoreError>;

    /// Counts what the store holds for `host` (every host with `None`), read
    /// in one consistent snapshot. Read-only; for tests and checks, never on
    /// a request's path (it scans).
    async fn census(&self, host: Option<&HostName>) -> Result<Census, StoreError>;
}

/// How many of each thing a store holds, all of one host or of every host:
/// what the black-box tests and operators' checks ask of any backend ("exactly
/// one account", "no invite over-spent") without reading its tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// API keys.
    pub keys: u64,
    /// Invites of every kind and status (reset invites included).
    pub invites: u64,
    /// Invites whose every use is spent.
    pub invites_used_up: u64,
    /// Password-reset invites.
    pub reset_invites: u64,
    /// Uses spent, summed over all invites.
    pub uses_spent: u64,
    /// Accounts, disabled ones included.
    pub accounts: u64,
    /// Disabled accounts.
    pub disabled_accounts: u64,
    /// Open sign-in sessions.
    pub sessions: u64,
    /// Provisioning reservations not yet finished or given back.
    pub reservations: u64,
    /// Webhook deliveries in the outbox, in any state.
    pub deliveries: u64,
    /// Webhook deliveries a receiver took.
    pub delivered: u64,
    /// Audit log entries.
    pub audit_entries: u64,
    /// Audit log entries by what was done and who did it, keyed
    /// `"<action> by <actor>"` (e.g. `"invite.revoke by key 0123abcd"`).
    pub audit: std::collections::BTreeMap<String, u64>,
}

/// One event for one webhook target, as the outbox keeps it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Row id: the handle for `webhooks retry`.
    pub id: i64,
    /// The `webhook-id`, the same on every attempt.
    pub event_id: String,
    /// The host whose webhook it is.
    pub host: HostName,
    /// The target URL.
    pub url: String,
    /// What happened.
    pub event: crate::webhooks::EventKind,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// The invite's row id, if the event is about one.
    pub invite_row: Option<i64>,
    /// The invite's source, if the event is about one.
    pub source: Option<String>,
    /// The account's name, if the event is about one.
    pub account: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's HTTP status, or what failed.
    pub last_status: Option<String>,
    /// When it is tried next; `None` once delivered or given up.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When a receiver took it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was given up on.
    pub failed_at: Option<DateTime<Utc>>,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone)]
pub struct DeliveryResult {
    /// The HTTP status, or what failed (`timeout`, `connection failed`).
    pub status: String,
    /// A 2xx answer: done.
    pub delivered: bool,
    /// When to try again; `None` when done or given up.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invite_id_says_when_it_was_minted_to_the_millisecond() {
        let now = Utc::now();
        for _ in 0..1000 {
            let id = new_invite_id(now);
            assert!(id >= crate::domain::LEGACY_INVITE_ID_LIMIT);
            let minted = invite_minted_at(id).unwrap();
            assert_eq!(minted.timestamp_millis(), now.timestamp_millis());
        }
        assert_eq!(invite_minted_at(7), None, "a schema 1 id carries no time");
    }

    #[test]
    fn a_location_is_postgresql_only_for_a_postgres_url() {
        for sqlite in [
            "invite-server.db",
            "/var/lib/x.db",
            "postgres.db",
            "./postgres:/x",
        ] {
            assert_eq!(
                DatabaseLocation::parse(sqlite),
                Ok(DatabaseLocation::Sqlite(PathBuf::from(sqlite)))
            );
        }
        for pg in [
            "postgres://u@h/d",
            "postgresql://u:p@h:5432/d?sslmode=require",
        ] {
            let location = DatabaseLocation::parse(pg).unwrap();
            assert!(matches!(location, DatabaseLocation::Postgres(_)), "{pg}");
            assert!(!location.to_string().contains(":p@"), "{location}");
        }
    }

    #[test]
    fn a_backend_error_keeps_its_cause_and_says_whether_it_may_pass() {
        let busy = StoreError::transient("database is locked");
        let broken = StoreError::permanent(std::io::Error::other("disk I/O error"));
        assert!(matches!(&busy, StoreError::Backend(b) if b.is_transient()));
        assert!(matches!(&broken, StoreError::Backend(b) if !b.is_transient()));
        assert_eq!(
            busy.chain().to_string(),
            "the store is temporarily unavailable: database is locked"
        );
        assert_eq!(
            broken.chain().to_string(),
            "storage failure: disk I/O error"
        );
        // Display alone names the cause too (background loops log that).
        assert_eq!(broken.to_string(), "storage failure: disk I/O error");
        let StoreError::Backend(b) = &broken else {
            unreachable!()
        };
        assert!(b.cause().downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn the_chain_goes_on_below_the_cause_without_repeating_it() {
        #[derive(Debug, thiserror::Error)]
        #[error("connection lost")]
        struct Outer(#[source] std::io::Error);
        let e = StoreError::transient(Outer(std::io::Error::other("reset by peer")));
        assert_eq!(
            e.chain().to_string(),
            "the store is temporarily unavailable: connection lost: reset by peer"
        );
    }

    #[test]
    fn a_backend_error_equals_its_clones_only() {
        let one = StoreError::permanent("x");
        assert_eq!(one, one.clone());
        assert_ne!(one, StoreError::permanent("x"));
        assert_ne!(StoreError::transient("x"), StoreError::NotFound);
    }
}
