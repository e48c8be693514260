//! The SQLite backend: the only module that speaks SQL.
//!
//! One writer thread owns the only connection that writes. It takes every write
//! queued for it, applies them in one `BEGIN IMMEDIATE ... COMMIT` (group commit,
//! so one fsync serves many requests), gives each its own savepoint so one
//! failure undoes only itself, and answers each only after the commit is on disk.
//! Reads use a small pool of other connections on the blocking thread pool, so
//! they never wait behind the writer (WAL readers do not block on writers).
//!
//! The store also watches its own file: before every commit (and once a second
//! when idle) the writer checks that the database path still names the file it
//! has open. A file deleted or replaced under a running server would otherwise
//! split the data in two: the server writing into a file nobody else can see,
//! the admin commands into a new one. Once that happens the store refuses every
//! write and read and says so in `/health`, until the path names its file again.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::{
    AccountOrigin, AccountRecord, Delivery, DeliveryResult, InviteDetails, InviteRecord, KeyRecord,
    ListedKey, NewAccount, NewInvite, NewReservation, NewResetInvite, NewSession,
    PendingReservation, Purged, SessionRecord, StatusFilter, Store, StoreError, Unhealthy,
};
use crate::crypto::{FormKey, SecretDigest};
use crate::domain::{AccountName, HostName, InviteLookup, KeyId};
use crate::webhooks::{EventKind, Routes};
use migrations::{configure, create_if_missing, migrate};
use readers::Readers;
use writer::{rewrite_version, Health, Job, Pending, Undo, Watch, Writer};

mod accounts;
mod audit;
mod backup;
mod census;
mod dump;
mod invites;
mod keys;
mod migrations;
mod outbox;
mod readers;
mod reservations;
mod rows;
mod secrets;
mod sessions;
#[cfg(test)]
mod test_support;
mod writer;

pub use backup::{BackupError, BackupSummary};

/// How long any connection waits for another process's write lock (the CLI and
/// the server share the file) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory the database should be in does not exist. The store
    /// creates the file but never directories: a typo in the path should be
    /// an error, not a new empty database somewhere unexpected.
    #[error("cannot open database {path}: the directory {dir} does not exist (create it first)")]
    NoDirectory {
        /// The database file.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// The database file is missing but its write-ahead log is not: the file
    /// was deleted (or moved without it) while in use.
    #[error("cannot create database {path}: {wal} is left over from a database deleted or moved while in use; put that database back, or move {wal} and the -shm file beside it away first")]
    LeftoverWal {
        /// The database file.
        path: PathBuf,
        /// Its write-ahead log.
        wal: PathBuf,
    },
    /// A missing database file could not be created.
    #[error("cannot create database {path}")]
    Create {
        /// The database file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file SQLite opened could not be looked up by its path.
    #[error("cannot look up database file {path}")]
    Stat {
        /// The database file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("cannot open database {path}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer invite-server.
    #[error("database {path} has schema version {found}, newer than this invite-server knows ({known}); refusing to downgrade it")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this binary knows.
        known: i64,
    },
    /// The schema version is one no invite-server ever writes (negative).
    #[error("database {path} has schema version {found}, which no invite-server writes: the file is damaged or not an invite-server database; refusing to open it")]
    BadVersion {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// The database opened but a write to it failed.
    #[error("database {path} cannot be written: {reason} (check the owner and mode of the file and its directory, and that the filesystem is writable and not full)")]
    NotWritable {
        /// The database file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A read connection could not be opened.
    #[error("cannot open a read connection to {path}: {reason}")]
    Reader {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
    /// The writer thread could not be started.
    #[error("cannot start the database writer: {0}")]
    Thread(std::io::Error),
}

/// The SQLite implementation of [`Store`]. Its one cache is of sessions,
/// checked against the WAL index on every use (see `readers::SessionCache`);
/// [`super::KeyCache`] adds the key cache over any store.
pub struct SqliteStore {
    path: PathBuf,
    writer: mpsc::Sender<Box<dyn Job>>,
    readers: Arc<Readers>,
    health: Arc<Health>,
    /// Which events of which host go to a webhook: the outbox rows each
    /// write adds (none when empty).
    routes: Arc<Routes>,
}

/// Flags for every connection: read-write, and never `SQLITE_OPEN_CREATE`.
/// [`SqliteStore::open`] creates a missing file itself (mode 0600); a
/// connection opened later must fail on a deleted file, not quietly start an
/// empty database beside the server's. Without `SQLITE_OPEN_URI` the path is
/// always a file path, as the mode and identity checks take it to be.
fn open_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

impl SqliteStore {
    /// Opens (creating if needed, with mode 0600) and migrates the database
    /// at `path`, and starts its writer thread. The directory must exist.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let sqlite = |source| OpenError::Sqlite {
            path: path.to_owned(),
            source,
        };
        create_if_missing(path)?;
        let mut conn = Connection::open_with_flags(path, open_flags()).map_err(sqlite)?;
        configure(&conn).map_err(sqlite)?;
        migrate(&mut conn, path)?;
        conn.set_prepared_statement_cache_capacity(64);
        // Taken after SQLite has opened the file, so it names that file.
        let watch = Watch::new(path).map_err(|source| OpenError::Stat {
            path: path.to_owned(),
            source,
        })?;
        let health = Arc::new(Health::new(path));

        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let writer = Writer {
            conn,
            watch,
            health: Arc::clone(&health),
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(OpenError::Thread)?;

        let readers = Arc::new(Readers {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            health: Arc::clone(&health),
            sessions: Default::default(),
        });
        // Open one reader now so a bad path fails here, not on the first request.
        let first = readers.open().map_err(|e| OpenError::Reader {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        readers.give_back(first);
        Ok(Self {
            path: path.to_owned(),
            writer: tx,
            readers,
            health,
            routes: Arc::new(Routes::default()),
        })
    }

    /// Writes an outbox row, in the same transaction, for every change that
    /// a webhook in `routes` takes.
    pub fn with_webhooks(self, routes: Routes) -> Self {
        Self {
            routes: Arc::new(routes),
            ..self
        }
    }

    /// Proves the database can be written: commits a write that changes
    /// nothing (the schema version, rewritten with its own value) through the
    /// writer, fsync included. `serve` calls it before it starts listening, so
    /// a read-only file or filesystem fails at startup instead of after the
    /// server has reported itself healthy.
    pub async fn check_writable(&self) -> Result<(), OpenError> {
        self.write(Undo::Statement, rewrite_version)
            .await
            .map_err(|e| OpenError::NotWritable {
                path: self.path.clone(),
                reason: e.chain().to_string(),
            })
    }

    /// Runs `f` in the writer's next batch and waits until its batch has committed.
    async fn write<T, F>(&self, undo: Undo, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            f: Some(f),
            undo,
            result: None,
            reply,
        });
        // The writer is gone only while the server shuts down: another
        // node (or this one, restarted) can take the request.
        let stopped = || StoreError::transient("the database writer has stopped");
        self.writer.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `f` on a read connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| {
                // Cancelled: the runtime is shutting down. Panicked: a bug.
                if e.is_cancelled() {
                    StoreError::transient(e)
                } else {
                    StoreError::permanent(e)
                }
            })?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_key(&self, key: KeyRecord, actor: &str) -> Result<(), StoreError> {
        let actor = actor.to_owned();
        self.write(Undo::Savepoint, move |conn| {
            keys::insert_key(conn, &key, &actor)
        })
        .await
    }

    async fn list_keys(&self, host: &HostName) -> Result<Vec<ListedKey>, StoreError> {
        let host = host.clone();
        self.read(move |conn| keys::list_keys(conn, &host)).await
    }

    async fn find_key(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        let id = id.clone();
        self.read(move |conn| keys::find_key(conn, &id)).await
    }

    async fn delete_key(
        &self,
        host: &HostName,
        id: &KeyId,
        revoke_invites: bool,
        actor: &str,
    ) -> Result<u64, StoreError> {
        let (host, id, actor) = (host.clone(), id.clone(), actor.to_owned());
        let routes = Arc::clone(&self.routes);
        self.write(Undo::Savepoint, move |conn| {
            keys::delete_key(
                conn,
                &routes,
                &host,
                &id,
                revoke_invites,
                &actor,
                Utc::now(),
            )
        })
        .await
    }

    async fn touch_key(&self, id: &KeyId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let id = id.clone();
        self.write(Undo::Statement, move |conn| keys::touch_key(conn, &id, now))
            .await
    }

    async fn create_invite(&self, invite: NewInvite) -> Result<i64, StoreError> {
        let routes = Arc::clone(&self.routes);
        // One statement undoes itself; with an outbox row it takes two.
        let undo = match routes
            .targets(&invite.host, EventKind::InviteCreated)
            .next()
        {
            None => Undo::Statement,
            Some(_) => Undo::Savepoint,
        };
        self.write(undo, move |conn| invites::minted(conn, &routes, &invite))
            .await
    }

    async fn create_invites(&self, invites: Vec<NewInvite>) -> Result<Vec<i64>, StoreError> {
        let routes = Arc::clone(&self.routes);
        self.write(Undo::Savepoint, move |conn| {
            let ids = invites
                .iter()
                .map(|inv| invites::minted(conn, &routes, inv))
                .collect::<Result<Vec<_>, _>>()?;
            // An operator's bulk mint is one audit row per transaction (a
            // chunk of `invites create --count`), not one per invite.
            if let Some(first) = invites.first() {
                let detail = super::bulk_mint_detail(first);
                audit::audit(
                    conn,
                    first.created_at,
                    &first.host,
                    "cli",
                    "invite.create",
                    &format!("{} invites", ids.len()),
                    Some(&detail),
                )?;
            }
            Ok(ids)
        })
        .await
    }

    async fn find_invite(&self, lookup: InviteLookup) -> Result<InviteRecord, StoreError> {
        self.read(move |conn| invites::find_invite(conn, &lookup))
            .await
    }

    async fn list_invites(
        &self,
        host: &HostName,
        status: StatusFilter,
        after: Option<i64>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<InviteDetails>, StoreError> {
        let host = host.clone();
        self.read(move |conn| invites::list(conn, &host, status, after, limit, now))
            .await
    }

    async fn invite_details(&self, host: &HostName, id: i64) -> Result<InviteDetails, StoreError> {
        let host = host.clone();
        self.read(move |conn| invites::details(conn, &host, id))
            .await
    }

    async fn revoke_invite(
        &self,
        host: &HostName,
        id: i64,
        actor: String,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (host, routes) = (host.clone(), Arc::clone(&self.routes));
        self.write(Undo::Savepoint, move |conn| {
            invites::revoke(conn, &routes, &host, id, &actor, now)
        })
        .await
    }

    async fn purge(
        &self,
        host: &HostName,
        ended_before: DateTime<Utc>,
        idle_before: DateTime<Utc>,
        actor: String,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        let host = host.clone();
        self.write(Undo::Savepoint, move |conn| {
            invites::purge(conn, &host, ended_before, idle_before, &actor, now)
        })
        .await
    }

    async fn redeem_invite(
        &self,
        lookup: InviteLookup,
        account: NewAccount,
        session: NewSession,
        now: DateTime<Utc>,
    ) -> Result<AccountRecord, StoreError> {
        let routes = Arc::clone(&self.routes);
        self.write(Undo::Savepoint, move |conn| {
            invites::redeem(conn, &routes, &lookup, account, &session, now)
        })
        .await
    }

    async fn create_account(&self, account: NewAccount) -> Result<AccountRecord, StoreError> {
        let routes = Arc::clone(&self.routes);
        self.write(Undo::Savepoint, move |conn| {
            accounts::create_account_audited(conn, &routes, &account)
        })
        .await
    }

    async fn list_accounts(&self, host: &HostName) -> Result<Vec<AccountRecord>, StoreError> {
        let host = host.clone();
        self.read(move |conn| accounts::list(conn, &host)).await
    }

    async fn find_account(
        &self,
        host: &HostName,
        name: &AccountName,
    ) -> Result<AccountRecord, StoreError> {
        let (host, name) = (host.clone(), name.clone());
        self.read(move |conn| accounts::find(conn, &host, &name))
            .await
    }

    async fn set_password(
        &self,
        account_id: i64,
        password_hash: String,
        keep: Option<SecretDigest>,
        actor: &str,
    ) -> Result<(), StoreError> {
        let actor = actor.to_owned();
        self.write(Undo::Savepoint, move |conn| {
            accounts::set_password(conn, account_id, &password_hash, keep.as_ref(), &actor)
        })
        .await
    }

    async fn delete_account(
        &self,
        host: &HostName,
        name: &AccountName,
        actor: &str,
    ) -> Result<(), StoreError> {
        let (host, name, actor) = (host.clone(), name.clone(), actor.to_owned());
        let routes = Arc::clone(&self.routes);
        self.write(Undo::Savepoint, move |conn| {
            accounts::delete(conn, &routes, &host, &name, &actor, Utc::now())
        })
        .await
    }

    async fn find_account_by_id(&self, id: i64) -> Result<AccountRecord, StoreError> {
        self.read(move |conn| accounts::find_by_id(conn, id)).await
    }

    async fn account_origin(
        &self,
        host: &HostName,
        name: &AccountName,
    ) -> Result<AccountOrigin, StoreError> {
        let (host, name) = (host.clone(), name.clone());
        self.read(move |conn| accounts::origin(conn, &host, &name))
            .await
    }

    async fn set_account_disabled(
        &self,
        host: &HostName,
        name: &AccountName,
        disabled: bool,
        at: DateTime<Utc>,
        actor: &str,
    ) -> Result<(), StoreError> {
        let (host, name, actor) = (host.clone(), name.clone(), actor.to_owned());
        self.write(Undo::Savepoint, move |conn| {
            accounts::set_disabled(conn, &host, &name, disabled, at, &actor)
        })
        .await
    }

    async fn create_reset_invite(&self, invite: NewResetInvite) -> Result<i64, StoreError> {
        self.write(Undo::Savepoint, move |conn| {
            accounts::insert_reset(conn, &invite)
        })
        .await
    }

    async fn redeem_reset_invite(
        &self,
        lookup: InviteLookup,
        password_hash: String,
        session: NewSession,
        now: DateTime<Utc>,
    ) -> Result<AccountRecord, StoreError> {
        self.write(Undo::Savepoint, move |conn| {
            accounts::redeem_reset(conn, &lookup, &password_hash, &session, now)
        })
        .await
    }

    async fn create_session(&self, account_id: i64, session: NewSession) -> Result<(), StoreError> {
        self.write(Undo::Statement, move |conn| {
            sessions::insert_session(conn, account_id, &session)
        })
        .await
    }

    async fn find_session(&self, token_digest: SecretDigest) -> Result<SessionRecord, StoreError> {
        self.readers.find_session(&token_digest)
    }

    async fn touch_session(
        &self,
        token_digest: SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(Undo::Statement, move |conn| {
            sessions::touch(conn, &token_digest, now)
        })
        .await
    }

    async fn delete_session(&self, token_digest: SecretDigest) -> Result<(), StoreError> {
        self.write(Undo::Statement, move |conn| {
            sessions::delete(conn, &token_digest)
        })
        .await
    }

    async fn end_other_sessions(
        &self,
        account_id: i64,
        keep: SecretDigest,
    ) -> Result<u64, StoreError> {
        self.write(Undo::Statement, move |conn| {
            sessions::end_sessions(conn, account_id, Some(&keep))
        })
        .await
    }

    async fn form_key(&self, candidate: [u8; FormKey::LEN]) -> Result<FormKey, StoreError> {
        // Almost always there already: read it without the write lock, so
        // read-only commands work on a read-only file and take no fsync.
        let stored = self.read(secrets::stored_form_key).await?;
        if let Some(key) = stored {
            return Ok(key);
        }
        // In the writer's transaction, so two servers starting on one new
        // file agree: the first insert wins and both read it back.
        self.write(Undo::Savepoint, move |conn| {
            secrets::insert_form_key(conn, &candidate)
        })
        .await
    }

    fn health(&self) -> Result<(), Unhealthy> {
        self.health.check()
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.write(Undo::Statement, move |conn| {
            outbox::claim(conn, now, until, limit)
        })
        .await
    }

    async fn finish_delivery(
        &self,
        id: i64,
        result: DeliveryResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(Undo::Statement, move |conn| {
            outbox::finish(conn, id, &result, now)
        })
        .await
    }

    async fn list_deliveries(
        &self,
        host: &HostName,
        failed_only: bool,
    ) -> Result<Vec<Delivery>, StoreError> {
        let host = host.clone();
        self.read(move |conn| outbox::list(conn, &host, failed_only))
            .await
    }

    async fn retry_delivery(
        &self,
        host: &HostName,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let host = host.clone();
        self.write(Undo::Statement, move |conn| {
            outbox::retry(conn, &host, id, now)
        })
        .await
    }

    async fn reserve(&self, reservation: NewReservation) -> Result<i64, StoreError> {
        self.write(Undo::Savepoint, move |conn| {
            reservations::reserve(conn, &reservation)
        })
        .await
    }

    async fn finalize_reservation(
        &self,
        id: i64,
        invite: Option<InviteLookup>,
        account: NewAccount,
        session: Option<NewSession>,
        reserved_at: DateTime<Utc>,
    ) -> Result<AccountRecord, StoreError> {
        let routes = Arc::clone(&self.routes);
        self.write(Undo::Savepoint, move |conn| {
            reservations::finalize(
                conn,
                &routes,
                id,
                invite.as_ref(),
                account,
                session.as_ref(),
                reserved_at,
            )
        })
        .await
    }

    async fn release_reservation(&self, id: i64) -> Result<(), StoreError> {
        self.write(Undo::Statement, move |conn| reservations::release(conn, id))
            .await
    }

    async fn pending_reservations(
        &self,
        host: &HostName,
        now: DateTime<Utc>,
    ) -> Result<Vec<PendingReservation>, StoreError> {
        let host = host.clone();
        self.read(move |conn| reservations::pending(conn, host.as_str(), now))
            .await
    }

    async fn export(&self) -> Result<super::Dump, StoreError> {
        self.read(dump::export).await
    }

    async fn import_into_empty(&self, dump: super::Dump) -> Result<(), super::ImportError> {
        // One savepoint in the writer's transaction: a failure part way
        // undoes every row, and the emptiness check sees what it writes into.
        self.write(Undo::Savepoint, move |conn| dump::import(conn, &dump))
            .await?
    }

    async fn table_counts(&self) -> Result<super::TableCounts, StoreError> {
        self.read(dump::counts).await
    }

    async fn census(&self, host: Option<&HostName>) -> Result<super::Census, StoreError> {
        let host = host.cloned();
        self.read(move |conn| census::census(conn, host.as_ref()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::migrations::MIGRATIONS;
    use super::rows::micros;
    use super::test_support::{account, cli_invite};
    use super::writer::State;
    use super::*;
    use rusqlite::params;

    #[tokio::test]
    async fn a_bulk_mint_from_the_cli_is_audited_once_per_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).unwrap();
        let now = Utc::now();
        let batch = (0..3)
            .map(|i| cli_invite(SecretDigest::of(&format!("s{i}")), now))
            .collect();
        assert_eq!(store.create_invites(batch).await.unwrap().len(), 3);
        let conn = Connection::open(&path).unwrap();
        let (actor, action, subject): (String, String, String) = conn
            .query_row("SELECT actor, action, subject FROM audit_log", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((actor.as_str(), action.as_str()), ("cli", "invite.create"));
        assert_eq!(subject, "3 invites");
    }

    #[tokio::test]
    async fn a_new_password_ends_every_session_but_the_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let alice = store.create_account(account("alice")).await.unwrap();
        let session = |s: &str| NewSession {
            token_digest: SecretDigest::of(s),
            created_at: Utc::now(),
        };
        for s in ["kept", "other", "third"] {
            store.create_session(alice.id, session(s)).await.unwrap();
        }
        store
            .set_password(
                alice.id,
                "$argon2id$new".into(),
                Some(SecretDigest::of("kept")),
                "cli",
            )
            .await
            .unwrap();
        let kept = store.find_session(SecretDigest::of("kept")).await.unwrap();
        assert_eq!(kept.account.password_hash, "$argon2id$new");
        for s in ["other", "third"] {
            let gone = store.find_session(SecretDigest::of(s)).await.unwrap_err();
            assert_eq!(gone, StoreError::NotFound);
        }
        store
            .set_password(alice.id, "$argon2id$again".into(), None, "cli")
            .await
            .unwrap();
        let gone = store
            .find_session(SecretDigest::of("kept"))
            .await
            .unwrap_err();
        assert_eq!(gone, StoreError::NotFound);
        let missing = store
            .set_password(-1, "x".into(), None, "cli")
            .await
            .unwrap_err();
        assert_eq!(missing, StoreError::NotFound);
    }

    #[tokio::test]
    async fn an_invite_is_found_by_its_id_only_with_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let digest = SecretDigest::of("secret");
        let id = store
            .create_invite(cli_invite(digest, Utc::now()))
            .await
            .unwrap();
        assert_eq!(
            store
                .find_invite(InviteLookup::ById { id, digest })
                .await
                .unwrap()
                .id,
            id
        );
        let wrong = InviteLookup::ById {
            id,
            digest: SecretDigest::of("guess"),
        };
        assert_eq!(
            store.find_invite(wrong).await.unwrap_err(),
            StoreError::NotFound
        );
        // The digest alone finds nothing: only schema 1 rows are indexed by it.
        assert_eq!(
            store
                .find_invite(InviteLookup::Legacy(digest))
                .await
                .unwrap_err(),
            StoreError::NotFound
        );
    }

    #[tokio::test]
    async fn schema_1_invites_survive_the_migration_and_are_found_by_their_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let old_token = "abcdefghijklmnopqrstuvwx";
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let now = micros(Utc::now());
            conn.execute(
                "INSERT INTO invites (token_digest, host, source, created_at, expires_at)
                 VALUES (?1, 'example.com', 'cli', ?2, ?3)",
                params![
                    SecretDigest::of(old_token).as_bytes().as_slice(),
                    now,
                    now + 86_400_000_000
                ],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let lookup = crate::domain::InviteToken::parse(old_token)
            .unwrap()
            .lookup();
        let found = store.find_invite(lookup).await.unwrap();
        assert_eq!((found.id, found.source.as_str()), (1, "cli"));
        // And it can still be redeemed.
        let session = NewSession {
            token_digest: SecretDigest::of("session"),
            created_at: Utc::now(),
        };
        store
            .redeem_invite(lookup, account("olga"), session, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            store
                .find_invite(lookup)
                .await
                .unwrap()
                .usable_at(Utc::now()),
            Err(StoreError::InviteUsed)
        );
    }

    #[tokio::test]
    async fn a_store_whose_file_is_moved_away_refuses_writes_and_reads_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let away = dir.path().join("away.db");
        let store = SqliteStore::open(&path).unwrap();
        store.create_account(account("alice")).await.unwrap();
        assert_eq!(store.health(), Ok(()));

        std::fs::rename(&path, &away).unwrap();
        assert!(matches!(
            store.create_account(account("bob")).await,
            Err(StoreError::Backend(_))
        ));
        assert_eq!(store.health(), Err(Unhealthy(State::Lost.reason())));
        let host = HostName::parse("example.com").unwrap();
        assert!(matches!(
            store.list_accounts(&host).await,
            Err(StoreError::Backend(_))
        ));

        std::fs::rename(&away, &path).unwrap();
        store.create_account(account("carol")).await.unwrap();
        assert_eq!(store.health(), Ok(()));
        let names: Vec<String> = store
            .list_accounts(&host)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name.to_string())
            .collect();
        assert_eq!(names, ["alice", "carol"], "bob was never written");
    }
}
