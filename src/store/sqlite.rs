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
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};
use tokio::sync::oneshot;

use super::{
    AccountOrigin, AccountRecord, Delivery, DeliveryResult, InviteDetails, InviteKind,
    InviteRecord, InviteSource, KeyRecord, ListedKey, NewAccount, NewInvite, NewReservation,
    NewResetInvite, NewSession, PendingReservation, Purged, SessionRecord, StatusFilter, Store,
    StoreError, Unhealthy,
};
use crate::crypto::{FormKey, SecretDigest};
use crate::domain::{AccountName, HostName, InviteLookup, KeyId};
use crate::webhooks::{EventKind, Routes};
use outbox::Subject;

#[path = "sqlite/accounts.rs"]
mod accounts;
#[path = "sqlite/audit.rs"]
mod audit;
#[path = "sqlite/backup.rs"]
mod backup;
#[path = "sqlite/invites.rs"]
mod invites;
#[path = "sqlite/keys.rs"]
mod keys;
#[path = "sqlite/outbox.rs"]
mod outbox;
#[path = "sqlite/reservations.rs"]
mod reservations;
#[path = "sqlite/sessions.rs"]
mod sessions;

pub use backup::{BackupError, BackupSummary};

/// How long any connection waits for another process's write lock (the CLI and
/// the server share the file) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// The most writes one commit carries; bounds the latency of the last in line.
const MAX_BATCH: usize = 512;
/// Idle read connections kept open; more are opened under load and closed after.
const MAX_IDLE_READERS: usize = 4;
/// Page cache per read connection, in KiB (SQLite's default is 2000). Reads
/// are single indexed rows; a small cache keeps many readers cheap.
const READER_CACHE_KIB: i64 = 512;
/// How often an idle writer checks that the database path still names its
/// file (and, while writes are failing, whether they work again), so that
/// `/health` notices without a request having to write.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The schema, one migration per version, applied in order. Never edit a
/// published entry: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: keys, invites, accounts, sessions.
    "CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        name TEXT,
        secret_digest BLOB NOT NULL,
        created_at INTEGER NOT NULL
     );
     CREATE INDEX api_keys_by_host ON api_keys (host, created_at);
     CREATE TABLE invites (
        id INTEGER PRIMARY KEY,
        token_digest BLOB NOT NULL UNIQUE,
        host TEXT NOT NULL,
        source TEXT NOT NULL,
        issuer_name TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        used_by INTEGER
     );
     CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        host TEXT NOT NULL,
        name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        invited_by TEXT NOT NULL,
        UNIQUE (host, name)
     );
     CREATE TABLE sessions (
        token_digest BLOB PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX sessions_by_account ON sessions (account_id);",
    // 2: invites are found by id (the token carries it) and no longer by a
    // unique index on the digest, whose random inserts made every mint dirty
    // a random page. token_format says how a row's digest was made: 1, of a
    // whole schema 1 token, which a partial index keeps findable; 2, of the
    // secret half of a token that carries the id. It has no default, so a
    // schema 1 server still running on a migrated file fails to mint, loudly,
    // instead of storing invites that no lookup would find.
    "CREATE TABLE invites_v2 (
        id INTEGER PRIMARY KEY,
        token_digest BLOB NOT NULL,
        host TEXT NOT NULL,
        source TEXT NOT NULL,
        issuer_name TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        used_by INTEGER,
        token_format INTEGER NOT NULL CHECK (token_format IN (1, 2))
     );
     INSERT INTO invites_v2
        (id, token_digest, host, source, issuer_name, created_at, expires_at, used_at, used_by,
         token_format)
        SELECT id, token_digest, host, source, issuer_name, created_at, expires_at, used_at, used_by,
            1
        FROM invites;
     DROP TABLE invites;
     ALTER TABLE invites_v2 RENAME TO invites;
     CREATE UNIQUE INDEX invites_by_legacy_token ON invites (token_digest)
        WHERE token_format = 1;",
    // 3: the server's own secrets, one row, shared by every process that
    // serves this database (so a form one node signed passes on another).
    // The key is made by the first server that opens the file, in Rust from
    // the OS RNG, not here: a migration has no good source of randomness.
    "CREATE TABLE server_secrets (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        form_key BLOB NOT NULL CHECK (length(form_key) = 32)
     );",
    // 4: managing what was minted. Every column added has a default that
    // keeps old rows meaning what they meant: an invite is for one account
    // and was spent once when it was used; a key mints and never expires.
    // - invites: multi-use (uses_allowed/uses_spent), reset invites (kind,
    //   reset_account_id), an operator's note, a fixed account name,
    //   revocation, and when the invite ended (its last use or its
    //   revocation; expiry is expires_at), for purging ended invites.
    // - invite_uses: who registered with an invite, and when; kept when the
    //   account goes (account_id then NULL), so the audit trail stays.
    // - accounts: the invite they came with, and whether they are disabled.
    //   invited_by becomes readable without a lookup: `key <id>`,
    //   `account <name>` or `cli`.
    // - api_keys: scope, expiry, a mint rate, last use, and how many of its
    //   invites purging removed (so counts of minted invites survive it).
    // - audit_log: who did what to which record, for operators.
    "ALTER TABLE invites ADD COLUMN kind TEXT NOT NULL DEFAULT 'account'
        CHECK (kind IN ('account', 'reset'));
     ALTER TABLE invites ADD COLUMN uses_allowed INTEGER NOT NULL DEFAULT 1
        CHECK (uses_allowed >= 1);
     ALTER TABLE invites ADD COLUMN uses_spent INTEGER NOT NULL DEFAULT 0
        CHECK (uses_spent >= 0);
     ALTER TABLE invites ADD COLUMN note TEXT;
     ALTER TABLE invites ADD COLUMN fixed_name TEXT;
     ALTER TABLE invites ADD COLUMN reset_account_id INTEGER;
     ALTER TABLE invites ADD COLUMN revoked_at INTEGER;
     ALTER TABLE invites ADD COLUMN ended_at INTEGER;
     UPDATE invites SET uses_spent = 1, ended_at = used_at WHERE used_at IS NOT NULL;
     CREATE INDEX invites_by_host ON invites (host, id);
     CREATE INDEX invites_by_source ON invites (source, id);
     CREATE TABLE invite_uses (
        invite_id INTEGER NOT NULL,
        account_id INTEGER,
        name TEXT NOT NULL,
        used_at INTEGER NOT NULL
     );
     CREATE INDEX invite_uses_by_invite ON invite_uses (invite_id);
     CREATE INDEX invite_uses_by_account ON invite_uses (account_id);
     INSERT INTO invite_uses (invite_id, account_id, name, used_at)
        SELECT i.id, a.id, a.name, i.used_at
        FROM invites i JOIN accounts a ON a.id = i.used_by
        WHERE i.used_at IS NOT NULL;
     ALTER TABLE accounts ADD COLUMN invite_id INTEGER;
     ALTER TABLE accounts ADD COLUMN disabled_at INTEGER;
     UPDATE accounts SET invite_id =
        (SELECT u.invite_id FROM invite_uses u WHERE u.account_id = accounts.id);
     UPDATE accounts SET invited_by = 'key ' || substr(invited_by, 11)
        WHERE invited_by LIKE 'api/token/%';
     UPDATE accounts SET invited_by = 'account ' || coalesce(
            (SELECT a.name FROM accounts a
             WHERE a.id = CAST(substr(accounts.invited_by, 9) AS INTEGER)),
            '#' || substr(invited_by, 9))
        WHERE invited_by LIKE 'account/%';
     ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'mint'
        CHECK (scope IN ('mint', 'admin'));
     ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
     ALTER TABLE api_keys ADD COLUMN rate_limit INTEGER CHECK (rate_limit >= 1);
     ALTER TABLE api_keys ADD COLUMN rate_period_secs INTEGER CHECK (rate_period_secs >= 1);
     ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
     ALTER TABLE api_keys ADD COLUMN invites_purged INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        host TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT
     );
     CREATE INDEX audit_log_by_host ON audit_log (host, id);",
    // 5: the webhook outbox: one row per event and target, written in the
    // transaction of the change it reports, with its delivery state.
    // next_attempt_at is NULL once delivered (delivered_at) or given up
    // (failed_at); claimed_until is a worker's lease on the row.
    "CREATE TABLE webhook_outbox (
        id INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        host TEXT NOT NULL,
        url TEXT NOT NULL,
        event TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        invite_row INTEGER,
        source TEXT,
        account TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_status TEXT,
        next_attempt_at INTEGER,
        claimed_until INTEGER,
        delivered_at INTEGER,
        failed_at INTEGER
     );
     CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at)
        WHERE next_attempt_at IS NOT NULL;
     CREATE INDEX webhook_outbox_by_host ON webhook_outbox (host, id);",
    // 6: provisioning reservations. A registration for a host that creates
    // its accounts in another service holds the name and one use of its
    // invite (invite_id; NULL for `accounts create`) under a lease while the
    // service is called; the account row replaces it in one write. Rows
    // whose lease ended were left by a crash: `accounts list --pending`.
    // No password or hash is ever stored here.
    "CREATE TABLE provision_reservations (
        id INTEGER PRIMARY KEY,
        host TEXT NOT NULL,
        name TEXT NOT NULL,
        invite_id INTEGER,
        reserved_at INTEGER NOT NULL,
        lease_until INTEGER NOT NULL
     );
     CREATE INDEX provision_reservations_by_name ON provision_reservations (host, name);
     CREATE INDEX provision_reservations_by_invite ON provision_reservations (invite_id);",
];

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

/// The SQLite implementation of [`Store`]. It keeps no cache of its own:
/// [`super::KeyCache`] adds one over any store.
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
                reason: match e {
                    StoreError::Backend(why) => why,
                    other => other.to_string(),
                },
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
        self.writer
            .send(job)
            .map_err(|_| StoreError::Backend("the database writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the database writer has stopped".into()))?
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
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    /// Runs `f` on a read connection right here, on the async worker, without
    /// the blocking-pool hop [`Self::read`] takes (two thread wake-ups, which
    /// cost several times the lookup itself). Only for one short indexed
    /// lookup on the hot path (`find_session`, on every forward-auth check):
    /// in WAL mode a reader never waits for the writer or for another
    /// process's transaction, so this blocks the worker only for the
    /// lookup's own page reads (and, rarely, for a process that is
    /// rebuilding the WAL index after a crash, as every reader must). Each
    /// call still reads the database as committed at that moment, so nothing
    /// it answers can be stale, whichever process changed it.
    fn read_inline<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.readers.with(f)
    }
}

/// Creates the database file, empty and readable by its owner only, unless it
/// exists. SQLite takes an empty file for a new database, and gives the -wal
/// and -shm files it creates beside it the main file's mode whatever the
/// umask, so these three files never hold data that others can read.
fn create_if_missing(path: &Path) -> Result<(), OpenError> {
    // SQLite would say only "unable to open database file".
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Err(e) = std::fs::metadata(dir) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Err(OpenError::NoDirectory {
                path: path.to_owned(),
                dir: dir.to_owned(),
            });
        }
    }
    // SQLite would pair a new file with the write-ahead log of a deleted
    // one (and then fail with "disk I/O error", after emptying that log).
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    if !path.exists() && wal.exists() {
        return Err(OpenError::LeftoverWal {
            path: path.to_owned(),
            wal,
        });
    }
    match private_file(path) {
        // Another process created it first: it is theirs to have set up.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(OpenError::Create {
            path: path.to_owned(),
            source,
        }),
        Ok(()) => Ok(()),
    }
}

/// Creates `path` exclusively with mode 0600, exactly (not masked by umask).
#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // The mode given to open is masked by the umask; a umask that takes the
    // owner's write bit away would leave a file SQLite cannot write.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

/// Creates `path` exclusively; file modes are a Unix notion.
#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map(|_| ())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers run beside the writer, and the CLI beside the server.
    // synchronous=FULL fsyncs the WAL at every commit: a reported write is on disk.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let sqlite = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let known = MIGRATIONS.len() as i64;
    // IMMEDIATE: two processes opening a new file at once must not both migrate.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite)?;
    // user_version is a signed 32-bit field that only migrations write; a
    // negative one would skip every migration below (and leave no tables).
    if found < 0 {
        return Err(OpenError::BadVersion {
            path: path.to_owned(),
            found,
        });
    }
    if found > known {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql).map_err(sqlite)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(sqlite)?;
    }
    tx.commit().map_err(sqlite)
}

// ---------------------------------------------------------------- the writer

/// What undoes a failed write without touching the rest of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// The write is one data-changing statement (retries of it included).
    /// SQLite undoes a failed statement by itself, so a savepoint would only
    /// cost time, on the path every mint takes.
    Statement,
    /// The write runs several statements; a savepoint undoes them together.
    Savepoint,
}

/// One queued write: applied inside the batch, answered after the commit.
trait Job: Send {
    /// How a failure of this write is undone.
    fn undo(&self) -> Undo;
    /// Applies the write; `false` when it failed and its savepoint must be undone.
    fn apply(&mut self, conn: &Connection) -> bool;
    /// Answers the caller with the write's result, or the commit's failure.
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Pending<T, F> {
    f: Option<F>,
    undo: Undo,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn undo(&self) -> Undo {
        self.undo
    }

    fn apply(&mut self, conn: &Connection) -> bool {
        let result = match self.f.take() {
            // A panic in one write must not end the writer thread, or every
            // later write would fail while the server looked healthy. It is
            // undone like any other failure (run_batch).
            Some(f) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| Err(StoreError::Backend("a write panicked".into()))),
            None => Err(StoreError::Backend("write applied twice".into())),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let answer = match (commit, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Backend("write was not applied".into())),
        };
        // The caller may have gone away (client disconnected); the write stands.
        let _ = self.reply.send(answer);
    }
}

/// How long the writer keeps polling for the next write, yielding the CPU
/// between polls, after a batch of one, before it goes to sleep. Waking a
/// sleeping thread takes tens of microseconds on a VM, a large share of a
/// mint that one client sends at a time (a bookmark, a bot); polling cut that
/// case's latency by a fifth here. After larger batches it sleeps at once:
/// there the CPU it would take belongs to the workers.
const LONE_WRITE_POLL: Duration = Duration::from_micros(50);

/// What the writer waits for next.
enum Next {
    /// A write to apply.
    Job(Box<dyn Job>),
    /// Nothing came for a while: time for the idle checks.
    Idle,
    /// Every sender is gone: the store was dropped.
    Closed,
}

/// The next queued write: polled for up to `poll`, then waited for up to `idle`.
fn next_job(jobs: &mpsc::Receiver<Box<dyn Job>>, poll: Duration, idle: Duration) -> Next {
    let until = std::time::Instant::now() + poll;
    loop {
        match jobs.try_recv() {
            Ok(job) => return Next::Job(job),
            Err(mpsc::TryRecvError::Disconnected) => return Next::Closed,
            Err(mpsc::TryRecvError::Empty) if std::time::Instant::now() < until => {
                std::thread::yield_now();
            }
            Err(mpsc::TryRecvError::Empty) => {
                return match jobs.recv_timeout(idle) {
                    Ok(job) => Next::Job(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => Next::Idle,
                    Err(mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
                }
            }
        }
    }
}

/// The identity of a file: what a path names, independent of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    #[cfg(unix)]
    fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Elsewhere only a deleted file is noticed.
    #[cfg(not(unix))]
    fn of(path: &Path) -> std::io::Result<Self> {
        std::fs::metadata(path).map(|_| Self { dev: 0, ino: 0 })
    }
}

/// The database path and the file it named when the store opened it.
struct Watch {
    path: PathBuf,
    id: FileId,
}

impl Watch {
    fn new(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            id: FileId::of(path)?,
        })
    }

    /// True while the path still names the file the store has open. A path
    /// that cannot be looked up at all counts as not: nothing proves it does.
    fn still_ours(&self) -> bool {
        FileId::of(&self.path).is_ok_and(|id| id == self.id)
    }
}

/// Whether the store can write, as the writer last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// The last commit went through.
    Writable = 0,
    /// The database path names another file, or none.
    Lost = 1,
    /// The last commit failed: the file or filesystem is read-only.
    ReadOnly = 2,
    /// The last commit failed: the disk is full.
    Full = 3,
    /// The last commit failed: an I/O error, or the file is damaged.
    Io = 4,
    /// The last commit could not get the write lock within the busy timeout.
    Locked = 5,
    /// The last commit failed for another reason.
    Failing = 6,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Writable,
            1 => Self::Lost,
            2 => Self::ReadOnly,
            3 => Self::Full,
            4 => Self::Io,
            5 => Self::Locked,
            _ => Self::Failing,
        }
    }

    /// What a failed commit says about the store.
    fn of_failure(e: &BatchError) -> Self {
        let code = match e {
            BatchError::Lost => return Self::Lost,
            BatchError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => f.code,
            BatchError::Sqlite(_) => return Self::Failing,
        };
        match code {
            ErrorCode::ReadOnly => Self::ReadOnly,
            ErrorCode::DiskFull => Self::Full,
            ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::NotADatabase => Self::Io,
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Self::Locked,
            _ => Self::Failing,
        }
    }

    /// The short reason `/health` gives.
    fn reason(self) -> &'static str {
        match self {
            Self::Writable => "ok",
            Self::Lost => "the database file was deleted or replaced",
            Self::ReadOnly => "the database is read-only",
            Self::Full => "the disk holding the database is full",
            Self::Io => "the database cannot be read or written (I/O error or damaged file)",
            Self::Locked => "another process holds the database's write lock",
            Self::Failing => "writes to the database are failing",
        }
    }
}

/// The store's [`State`], shared by the writer (which sets it), the readers
/// and `/health` (which read it: one atomic load, no I/O).
struct Health {
    path: PathBuf,
    state: AtomicU8,
}

impl Health {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            state: AtomicU8::new(State::Writable as u8),
        }
    }

    fn get(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Records `now`, and logs the change when it is one, so that each
    /// episode is explained once rather than on every request.
    fn set(&self, now: State) {
        let before = State::from_u8(self.state.swap(now as u8, Ordering::Relaxed));
        if before == now {
            return;
        }
        let path = self.path.display();
        match (before, now) {
            (_, State::Lost) => tracing::error!(
                database = %path,
                "the database file was deleted or replaced while in use: its path no longer \
                 names the file this server has open, so whatever it wrote now would be seen by \
                 no one else; refusing all writes and reads until the file is back or the server \
                 is restarted"
            ),
            (State::Lost, State::Writable) => tracing::warn!(
                database = %path,
                "the database path names this server's file again; serving resumes"
            ),
            (_, State::Writable) => {
                tracing::info!(database = %path, "database writes succeed again")
            }
            (_, failing) => tracing::error!(
                database = %path,
                reason = failing.reason(),
                "database writes are failing; /health reports it until one succeeds"
            ),
        }
    }

    /// `Ok` while the store can serve; the reason otherwise.
    fn check(&self) -> Result<(), Unhealthy> {
        match self.get() {
            State::Writable => Ok(()),
            other => Err(Unhealthy(other.reason())),
        }
    }

    /// Reads are refused only when the file is lost: a read then might come
    /// from either file. A failing disk still serves what it holds.
    fn check_readable(&self) -> Result<(), StoreError> {
        match self.get() {
            State::Lost => Err(StoreError::Backend(State::Lost.reason().into())),
            _ => Ok(()),
        }
    }
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    /// SQLite failed, or the batch had to be abandoned.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The database path no longer names the file being written.
    #[error("the database file was deleted or replaced")]
    Lost,
}

impl BatchError {
    /// What each caller in the batch is told.
    fn to_store_error(&self) -> StoreError {
        match self {
            Self::Sqlite(e) => StoreError::Backend(e.to_string()),
            Self::Lost => StoreError::Backend(
                "the database file was deleted or replaced; nothing was written".into(),
            ),
        }
    }
}

/// The writer thread's connection and what it watches.
struct Writer {
    conn: Connection,
    watch: Watch,
    health: Arc<Health>,
}

impl Writer {
    fn run(self, jobs: mpsc::Receiver<Box<dyn Job>>) {
        let mut poll = Duration::ZERO;
        loop {
            let first = match next_job(&jobs, poll, IDLE_CHECK) {
                Next::Job(job) => job,
                Next::Idle => {
                    self.idle();
                    continue;
                }
                Next::Closed => return,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            poll = if batch.len() == 1 {
                LONE_WRITE_POLL
            } else {
                Duration::ZERO
            };
            let started = std::time::Instant::now();
            let outcome = self.commit(&mut batch);
            crate::metrics::commit(batch.len(), started.elapsed());
            // A lost file is explained once, by Health::set.
            if let Err(e @ BatchError::Sqlite(_)) = &outcome {
                tracing::error!(error = %e, writes = batch.len(), "database commit failed");
            }
            self.health.set(match &outcome {
                Ok(()) => State::Writable,
                Err(e) => State::of_failure(e),
            });
            let answer = outcome.map_err(|e| e.to_store_error());
            for job in batch {
                job.finish(answer.clone());
            }
        }
    }

    /// Applies and commits a batch; after a failure, leaves no transaction open.
    fn commit(&self, batch: &mut [Box<dyn Job>]) -> Result<(), BatchError> {
        let outcome = run_batch(&self.conn, batch, &|| self.watch.still_ours());
        if outcome.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
            if !self.conn.is_autocommit() {
                tracing::error!("the database connection is stuck in a transaction");
            }
        }
        outcome
    }

    /// With nothing to write: notices a lost file (or its return), and while
    /// writes are failing tries one that changes nothing, so the store
    /// reports itself healthy again without waiting for a client to write.
    fn idle(&self) {
        let failing = match (self.watch.still_ours(), self.health.get()) {
            (false, _) => return self.health.set(State::Lost),
            (true, State::Writable) => return,
            (true, State::Lost) => return self.health.set(State::Writable),
            (true, failing) => failing,
        };
        let (reply, mut answer) = oneshot::channel();
        let mut probe: Vec<Box<dyn Job>> = vec![Box::new(Pending {
            f: Some(rewrite_version),
            undo: Undo::Statement,
            result: None,
            reply,
        })];
        // Not logged: while it fails it says nothing new, and Health::set
        // logs the change when it succeeds.
        let outcome = self.commit(&mut probe);
        let now = match &outcome {
            Err(e) => State::of_failure(e),
            Ok(()) => {
                for job in probe {
                    job.finish(Ok(()));
                }
                // The batch commits even when the probe's own write failed
                // (as on a read-only file): only its success is news.
                match answer.try_recv() {
                    Ok(Ok(())) => State::Writable,
                    _ => failing,
                }
            }
        };
        self.health.set(now);
    }
}

/// A write that changes nothing: the schema version, rewritten with its own
/// value. SQLite still writes the header page, so committing it proves the
/// file, its WAL and its filesystem take writes.
fn rewrite_version(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(backend)?;
    conn.pragma_update(None, "user_version", version)
        .map_err(backend)
}

/// Applies `batch` in one transaction and commits it if `still_ours` says the
/// file being written is still the database's file.
fn run_batch(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    still_ours: &dyn Fn() -> bool,
) -> Result<(), BatchError> {
    // Cached statements: these run once or twice per write, and parsing them
    // each time was measurable.
    let exec = |sql: &str| conn.prepare_cached(sql).and_then(|mut st| st.execute([]));
    exec("BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        let savepoint = job.undo() == Undo::Savepoint;
        if savepoint {
            exec("SAVEPOINT job")?;
        }
        let changes_before = conn.total_changes();
        let ok = job.apply(conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back itself (a full disk, an
            // I/O error): nothing in this batch stands, and going on would
            // commit the rest one statement at a time.
            return Err(BatchError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT_ROLLBACK),
                Some("the transaction was rolled back by SQLite".into()),
            )));
        }
        if savepoint {
            if !ok {
                exec("ROLLBACK TO job")?;
            }
            exec("RELEASE job")?;
        } else if !ok && conn.total_changes() != changes_before {
            // A write declared as one statement failed after changing rows
            // (a bug: it should have asked for a savepoint). Its rows cannot be
            // undone alone, and its caller is told it failed, so nothing in
            // this batch may stand.
            tracing::error!("a one-statement write failed after changing rows");
            return Err(BatchError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some("a failed write changed rows without a savepoint".into()),
            )));
        }
    }
    // The last moment to notice that the path names another file (or none):
    // a commit into a deleted or replaced file would be acknowledged to the
    // client and then seen by no other process, nor by this one after a
    // restart. One stat per batch, shared by every write in it.
    if !still_ours() {
        return Err(BatchError::Lost);
    }
    exec("COMMIT")?;
    Ok(())
}

// --------------------------------------------------------------- the readers

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    health: Arc<Health>,
}

impl Readers {
    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(&self.path, open_flags()).map_err(backend)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        conn.pragma_update(None, "query_only", "ON")
            .map_err(backend)?;
        conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)
            .map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.health.check_readable()?;
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.open()?,
        };
        let result = f(&conn);
        self.give_back(conn);
        result
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

// ------------------------------------------------------------------ helpers

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Any constraint failure: UNIQUE on names, or a foreign key to a deleted row.
fn is_constraint_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

/// An insert whose rowid is taken.
fn is_primary_key_clash(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let v: i64 = row.get(idx)?;
    DateTime::from_timestamp_micros(v).ok_or_else(|| corrupt(idx, "timestamp out of range"))
}

fn optional_time_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(idx)? {
        Some(_) => time_at(row, idx).map(Some),
        None => Ok(None),
    }
}

fn corrupt(idx: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        rusqlite::types::Type::Text,
        what.to_owned().into(),
    )
}

fn host_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<HostName> {
    HostName::parse(&row.get::<_, String>(idx)?).map_err(|_| corrupt(idx, "bad host name"))
}

fn digest_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<SecretDigest> {
    SecretDigest::from_slice(&row.get::<_, Vec<u8>>(idx)?).ok_or_else(|| corrupt(idx, "bad digest"))
}

const INVITE_COLUMNS: &str = "id, host, source, issuer_name, created_at, expires_at, kind, \
     uses_allowed, uses_spent, note, fixed_name, revoked_at, reset_account_id";

fn invite_row(row: &Row<'_>) -> rusqlite::Result<InviteRecord> {
    Ok(InviteRecord {
        id: row.get(0)?,
        host: host_at(row, 1)?,
        source: row.get(2)?,
        issuer_name: row.get(3)?,
        created_at: time_at(row, 4)?,
        expires_at: time_at(row, 5)?,
        kind: match row.get::<_, String>(6)?.as_str() {
            "reset" => InviteKind::Reset,
            "account" => InviteKind::Account,
            _ => return Err(corrupt(6, "bad invite kind")),
        },
        uses_allowed: row.get(7)?,
        uses_spent: row.get(8)?,
        note: row.get(9)?,
        fixed_name: row.get(10)?,
        revoked_at: match row.get::<_, Option<i64>>(11)? {
            Some(_) => Some(time_at(row, 11)?),
            None => None,
        },
        reset_account_id: row.get(12)?,
    })
}

const ACCOUNT_COLUMNS: &str =
    "a.id, a.host, a.name, a.password_hash, a.created_at, a.invited_by, a.invite_id, a.disabled_at";

fn account_row(row: &Row<'_>) -> rusqlite::Result<AccountRecord> {
    Ok(AccountRecord {
        id: row.get(0)?,
        host: host_at(row, 1)?,
        name: AccountName::parse(&row.get::<_, String>(2)?)
            .map_err(|_| corrupt(2, "bad account name"))?,
        password_hash: row.get(3)?,
        created_at: time_at(row, 4)?,
        invited_by: row.get(5)?,
        invite_id: row.get(6)?,
        disabled_at: optional_time_at(row, 7)?,
    })
}

/// Every row `sql` (with the host as `?1`) selects, mapped by `row`.
fn all_rows<T>(
    conn: &Connection,
    sql: &str,
    host: &HostName,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut st| {
            st.query_map([host.as_str()], row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(backend)
}

/// Maps "no row" to `NotFound` and everything else to `Backend`.
fn one<T>(r: rusqlite::Result<Option<T>>) -> Result<T, StoreError> {
    r.map_err(backend)?.ok_or(StoreError::NotFound)
}

fn find_invite(conn: &Connection, lookup: &InviteLookup) -> Result<InviteRecord, StoreError> {
    match lookup {
        InviteLookup::ById { id, digest } => {
            let (invite, stored) = one(conn
                .prepare_cached(&format!(
                    "SELECT {INVITE_COLUMNS}, token_digest FROM invites
                     WHERE id = ?1 AND token_format = 2"
                ))
                .and_then(|mut st| {
                    st.query_row([id], |row| Ok((invite_row(row)?, digest_at(row, 13)?)))
                        .optional()
                }))?;
            // A right id with a wrong secret is no invite at all.
            if stored.matches(digest) {
                Ok(invite)
            } else {
                Err(StoreError::NotFound)
            }
        }
        // The format repeats the partial index's own condition, so that
        // SQLite uses it.
        InviteLookup::Legacy(digest) => one(conn
            .prepare_cached(&format!(
                "SELECT {INVITE_COLUMNS} FROM invites
                 WHERE token_digest = ?1 AND token_format = 1"
            ))
            .and_then(|mut st| {
                st.query_row([digest.as_bytes().as_slice()], invite_row)
                    .optional()
            })),
    }
}

/// Times an insert draws a new id after landing on one already taken.
const ID_ATTEMPTS: usize = 16;

/// A new invite id: milliseconds since the epoch above 20 random bits. Ids so
/// made follow time, so inserts land at the end of the table (in random
/// order within a millisecond); they say when an invite was made (its page
/// says as much) but not how many came before; and two processes minting in
/// the same millisecond rarely pick the same one (the insert then draws
/// again). Never below 2^32, where token parsing expects schema 1 ids, even
/// for a clock set before 1970; positive until the year 2248.
fn new_invite_id(created_at: DateTime<Utc>) -> i64 {
    let millis = created_at.timestamp_millis().clamp(1 << 12, (1 << 43) - 1);
    (millis << 20) | i64::from(rand::random::<u32>() & 0xF_FFFF)
}

/// Inserts an invite and its `invite.created` event.
fn minted(conn: &Connection, routes: &Routes, inv: &NewInvite) -> Result<i64, StoreError> {
    let id = insert_invite(conn, inv)?;
    let source = inv.source.to_text();
    outbox::record(
        conn,
        routes,
        &inv.host,
        EventKind::InviteCreated,
        inv.created_at,
        Subject {
            invite: Some(id),
            source: Some(&source),
            account: None,
        },
    )?;
    Ok(id)
}

fn insert_invite(conn: &Connection, inv: &NewInvite) -> Result<i64, StoreError> {
    let ids = std::iter::repeat_with(|| new_invite_id(inv.created_at)).take(ID_ATTEMPTS);
    insert_invite_with_ids(conn, inv, ids)
}

/// Inserts under the first of `ids` not yet taken.
fn insert_invite_with_ids(
    conn: &Connection,
    inv: &NewInvite,
    ids: impl IntoIterator<Item = i64>,
) -> Result<i64, StoreError> {
    use rusqlite::types::Value;
    // The guard makes the check and the insert one atomic step inside the batch:
    // once `keys delete` has committed, no later mint with that key can land.
    let (guard, minter) = match &inv.source {
        // An expired key is refused here too, at commit time, so a key
        // that expires between its lookup and this write mints nothing.
        InviteSource::Key(id) => (KEY_GUARD.as_str(), Value::Text(id.to_string())),
        // The quota is counted in the same statement: two mints racing for
        // an account's last free slot cannot both land.
        InviteSource::Account(id) => (
            // Counted in sign-ups still open, the new invite's included, so
            // a multi-use invite cannot stretch the quota; a disabled
            // account mints nothing, even racing its disabling.
            "WHERE EXISTS (SELECT 1 FROM accounts
                           WHERE id = ?7 AND host = ?2 AND disabled_at IS NULL)
               AND (?12 IS NULL OR (SELECT coalesce(sum(uses_allowed - uses_spent), 0)
                    FROM invites
                    WHERE source = ?3 AND revoked_at IS NULL
                      AND uses_spent < uses_allowed AND expires_at > ?5) + ?9 <= ?12)",
            Value::Integer(*id),
        ),
        InviteSource::Cli => ("WHERE ?7 IS NULL AND ?12 IS NULL", Value::Null),
    };
    static KEY_GUARD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?7 AND host = ?2
                AND (expires_at IS NULL OR expires_at > {}))
             AND ?12 IS NULL",
            keys::SQL_NOW_MICROS
        )
    });
    let sql = format!(
        "INSERT INTO invites
            (id, token_digest, host, source, issuer_name, created_at, expires_at, token_format,
             uses_allowed, note, fixed_name)
         SELECT ?8, ?1, ?2, ?3, ?4, ?5, ?6, 2, ?9, ?10, ?11 {guard}"
    );
    let mut st = conn.prepare_cached(&sql).map_err(backend)?;
    let source = inv.source.to_text();
    for id in ids {
        let inserted = st.execute(params![
            inv.token_digest.as_bytes().as_slice(),
            inv.host.as_str(),
            source,
            inv.issuer_name,
            micros(inv.created_at),
            micros(inv.expires_at),
            minter,
            id,
            inv.uses_allowed,
            inv.note,
            inv.fixed_name.as_ref().map(AccountName::as_str),
            inv.pending_limit,
        ]);
        match inserted {
            Ok(0) => return Err(invites::why_not_minted(conn, inv, &minter)),
            Ok(_) => return Ok(id),
            // Another invite has this id: draw again. A failed statement
            // undoes only itself.
            Err(e) if is_primary_key_clash(&e) => continue,
            Err(e) => return Err(backend(e)),
        }
    }
    Err(StoreError::Backend(
        "no free invite id in as many draws".into(),
    ))
}

fn insert_account(conn: &Connection, a: &NewAccount) -> Result<AccountRecord, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO accounts (host, name, password_hash, created_at, invited_by, invite_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut st| {
            st.execute(params![
                a.host.as_str(),
                a.name.as_str(),
                a.password_hash,
                micros(a.created_at),
                a.invited_by,
                a.invite_id
            ])
        });
    match inserted {
        Ok(_) => Ok(AccountRecord {
            id: conn.last_insert_rowid(),
            host: a.host.clone(),
            name: a.name.clone(),
            password_hash: a.password_hash.clone(),
            created_at: a.created_at,
            invited_by: a.invited_by.clone(),
            invite_id: a.invite_id,
            disabled_at: None,
        }),
        Err(e) if is_constraint_violation(&e) => Err(StoreError::NameTaken),
        Err(e) => Err(backend(e)),
    }
}

/// Inserts an account made without an invite, with its webhook event and
/// its audit row: only the operator's command creates accounts so.
fn create_account_audited(
    conn: &Connection,
    routes: &crate::webhooks::Routes,
    account: &NewAccount,
) -> Result<AccountRecord, StoreError> {
    let created = insert_account(conn, account)?;
    outbox::record(
        conn,
        routes,
        &created.host,
        EventKind::AccountCreated,
        created.created_at,
        Subject {
            account: Some(created.name.as_str()),
            source: Some("cli"),
            ..Subject::default()
        },
    )?;
    audit::audit(
        conn,
        created.created_at,
        &created.host,
        "cli",
        "account.create",
        created.name.as_str(),
        None,
    )?;
    Ok(created)
}

fn insert_session(conn: &Connection, account_id: i64, s: &NewSession) -> Result<(), StoreError> {
    // A disabled account gets no session, whichever surface signs it in.
    let inserted = conn
        .prepare_cached(
            "INSERT INTO sessions (token_digest, account_id, created_at, last_used_at)
             SELECT ?1, id, ?3, ?3 FROM accounts WHERE id = ?2 AND disabled_at IS NULL",
        )
        .and_then(|mut st| {
            st.execute(params![
                s.token_digest.as_bytes().as_slice(),
                account_id,
                micros(s.created_at)
            ])
        })
        .map_err(backend)?;
    match inserted {
        // The account is gone or disabled.
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
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
        self.write(undo, move |conn| minted(conn, &routes, &invite))
            .await
    }

    async fn create_invites(&self, invites: Vec<NewInvite>) -> Result<Vec<i64>, StoreError> {
        let routes = Arc::clone(&self.routes);
        self.write(Undo::Savepoint, move |conn| {
            let ids = invites
                .iter()
                .map(|inv| minted(conn, &routes, inv))
                .collect::<Result<Vec<_>, _>>()?;
            // An operator's bulk mint is one audit row per transaction (a
            // chunk of `invites create --count`), not one per invite.
            if let Some(first) = invites.first() {
                let detail = format!(
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
                );
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
        self.read(move |conn| find_invite(conn, &lookup)).await
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
            create_account_audited(conn, &routes, &account)
        })
        .await
    }

    async fn list_accounts(&self, host: &HostName) -> Result<Vec<AccountRecord>, StoreError> {
        let host = host.clone();
        self.read(move |conn| {
            all_rows(
                conn,
                &format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.host = ?1 ORDER BY a.name"
                ),
                &host,
                account_row,
            )
        })
        .await
    }

    async fn find_account(
        &self,
        host: &HostName,
        name: &AccountName,
    ) -> Result<AccountRecord, StoreError> {
        let (host, name) = (host.clone(), name.clone());
        self.read(move |conn| {
            one(conn
                .prepare_cached(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.host = ?1 AND a.name = ?2"
                ))
                .and_then(|mut st| {
                    st.query_row([host.as_str(), name.as_str()], account_row)
                        .optional()
                }))
        })
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
            let (host, name) = one(conn
                .prepare_cached(
                    "UPDATE accounts SET password_hash = ?1 WHERE id = ?2 RETURNING host, name",
                )
                .and_then(|mut st| {
                    st.query_row(params![password_hash, account_id], |r| {
                        Ok((host_at(r, 0)?, r.get::<_, String>(1)?))
                    })
                    .optional()
                }))?;
            sessions::end_sessions(conn, account_id, keep.as_ref())?;
            audit::audit(
                conn,
                Utc::now(),
                &host,
                &actor,
                "account.passwd",
                &name,
                None,
            )
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
            insert_session(conn, account_id, &session)
        })
        .await
    }

    async fn find_session(&self, token_digest: SecretDigest) -> Result<SessionRecord, StoreError> {
        // Built once: formatting it on every check cost an allocation per call.
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {ACCOUNT_COLUMNS}, s.last_used_at
                 FROM sessions s JOIN accounts a ON a.id = s.account_id
                 WHERE s.token_digest = ?1 AND a.disabled_at IS NULL"
            )
        });
        self.read_inline(move |conn| {
            one(conn.prepare_cached(&SQL).and_then(|mut st| {
                st.query_row([token_digest.as_bytes().as_slice()], |row| {
                    Ok(SessionRecord {
                        account: account_row(row)?,
                        last_used_at: time_at(row, 8)?,
                    })
                })
                .optional()
            }))
        })
    }

    async fn touch_session(
        &self,
        token_digest: SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(Undo::Statement, move |conn| {
            conn.prepare_cached("UPDATE sessions SET last_used_at = ?1 WHERE token_digest = ?2")
                .and_then(|mut st| {
                    st.execute(params![micros(now), token_digest.as_bytes().as_slice()])
                })
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, token_digest: SecretDigest) -> Result<(), StoreError> {
        self.write(Undo::Statement, move |conn| {
            conn.prepare_cached("DELETE FROM sessions WHERE token_digest = ?1")
                .and_then(|mut st| st.execute([token_digest.as_bytes().as_slice()]))
                .map_err(backend)?;
            Ok(())
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
        let stored = self
            .read(|conn| {
                conn.query_row(
                    "SELECT form_key FROM server_secrets WHERE id = 1",
                    [],
                    |r| r.get::<_, Vec<u8>>(0),
                )
                .optional()
                .map_err(backend)
            })
            .await?;
        if let Some(key) = stored.and_then(|k| <[u8; FormKey::LEN]>::try_from(k.as_slice()).ok()) {
            return Ok(FormKey::from_bytes(key));
        }
        // In the writer's transaction, so two servers starting on one new
        // file agree: the first insert wins and both read it back.
        self.write(Undo::Savepoint, move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO server_secrets (id, form_key) VALUES (1, ?1)",
                [candidate.as_slice()],
            )
            .map_err(backend)?;
            let stored: Vec<u8> = conn
                .query_row(
                    "SELECT form_key FROM server_secrets WHERE id = 1",
                    [],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            <[u8; FormKey::LEN]>::try_from(stored.as_slice())
                .map(FormKey::from_bytes)
                .map_err(|_| StoreError::Backend("the stored form key has the wrong length".into()))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> NewAccount {
        NewAccount {
            host: HostName::parse("example.com").unwrap(),
            name: AccountName::parse(name).unwrap(),
            password_hash: "$argon2id$test".into(),
            created_at: Utc::now(),
            invited_by: "cli".into(),
            invite_id: None,
        }
    }

    type Answer<T> = oneshot::Receiver<Result<T, StoreError>>;

    fn write_job<T, F>(undo: Undo, f: F) -> (Box<dyn Job>, Answer<T>)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Pending {
            f: Some(f),
            undo,
            result: None,
            reply,
        });
        (job, answer)
    }

    fn job(a: NewAccount) -> (Box<dyn Job>, Answer<AccountRecord>) {
        write_job(Undo::Statement, move |conn| insert_account(conn, &a))
    }

    /// Two accounts, the first created and the second refused: a write of
    /// several statements whose savepoint must undo its first half.
    fn pair_job(first: NewAccount, second: NewAccount) -> (Box<dyn Job>, Answer<()>) {
        write_job(Undo::Savepoint, move |conn| {
            insert_account(conn, &first)?;
            insert_account(conn, &second)?;
            Ok(())
        })
    }

    fn scratch() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        configure(&conn).unwrap();
        migrate(&mut conn, &path).unwrap();
        (dir, conn)
    }

    fn account_names(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT name FROM accounts ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_failed_write_in_a_batch_neither_fails_nor_undoes_the_others() {
        let (_dir, conn) = scratch();
        let (a, ra) = job(account("alice"));
        let (dup, rdup) = job(account("alice"));
        let (b, rb) = job(account("bob"));
        let (half, rhalf) = pair_job(account("erin"), account("bob"));
        let mut batch = vec![a, dup, b, half];
        run_batch(&conn, &mut batch, &|| true).unwrap();
        for j in batch {
            j.finish(Ok(()));
        }
        assert!(ra.blocking_recv().unwrap().is_ok());
        assert_eq!(
            rdup.blocking_recv().unwrap().unwrap_err(),
            StoreError::NameTaken
        );
        assert!(rb.blocking_recv().unwrap().is_ok());
        assert_eq!(
            rhalf.blocking_recv().unwrap().unwrap_err(),
            StoreError::NameTaken
        );
        // erin was inserted by the failed pair and undone with it.
        assert_eq!(account_names(&conn), ["alice", "bob"]);
    }

    #[test]
    fn a_write_that_panics_fails_alone_and_the_batch_commits() {
        let (_dir, conn) = scratch();
        let (panicking, rpanic) = write_job(
            Undo::Savepoint,
            |conn: &Connection| -> Result<(), StoreError> {
                insert_account(conn, &account("mallory"))?;
                panic!("boom")
            },
        );
        let (ok, rok) = job(account("dave"));
        let mut batch = vec![panicking, ok];
        run_batch(&conn, &mut batch, &|| true).unwrap();
        for j in batch {
            j.finish(Ok(()));
        }
        assert!(matches!(
            rpanic.blocking_recv().unwrap(),
            Err(StoreError::Backend(_))
        ));
        assert!(rok.blocking_recv().unwrap().is_ok());
        assert_eq!(account_names(&conn), ["dave"]);
    }

    #[test]
    fn a_one_statement_write_that_fails_after_changing_rows_fails_the_whole_batch() {
        let (_dir, conn) = scratch();
        let (a, _ra) = job(account("alice"));
        // Misdeclared: two statements without a savepoint, the second failing.
        let (wrong, _rw) = write_job(Undo::Statement, |conn: &Connection| {
            insert_account(conn, &account("bob"))?;
            insert_account(conn, &account("alice"))?;
            Ok(())
        });
        let mut batch = vec![a, wrong];
        assert!(run_batch(&conn, &mut batch, &|| true).is_err());
        conn.execute_batch("ROLLBACK").unwrap();
        assert!(account_names(&conn).is_empty());
    }

    #[test]
    fn a_transaction_that_sqlite_rolls_back_fails_the_whole_batch() {
        let (_dir, conn) = scratch();
        let (a, _ra) = job(account("alice"));
        // Stands in for SQLite ending the transaction after a full disk.
        let (rollback, _rr) = write_job(Undo::Statement, |conn: &Connection| {
            conn.execute_batch("ROLLBACK").map_err(backend)
        });
        let (b, _rb) = job(account("bob"));
        let mut batch = vec![a, rollback, b];
        assert!(run_batch(&conn, &mut batch, &|| true).is_err());
        assert!(conn.is_autocommit());
        // bob was not committed on his own after the transaction was gone.
        assert!(account_names(&conn).is_empty());
    }

    #[test]
    fn the_writer_takes_a_job_that_arrives_while_it_polls_and_stops_when_the_store_is_gone() {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(200));
            let (j, _answer) = job(account("alice"));
            tx.send(j).unwrap();
            // tx is dropped here: no more writes will come.
        });
        // Polls 50 µs, then sleeps until the job arrives.
        let idle = Duration::from_secs(60);
        assert!(matches!(next_job(&rx, LONE_WRITE_POLL, idle), Next::Job(_)));
        sender.join().unwrap();
        assert!(matches!(next_job(&rx, LONE_WRITE_POLL, idle), Next::Closed));
        assert!(matches!(next_job(&rx, Duration::ZERO, idle), Next::Closed));
    }

    #[test]
    fn a_failed_commit_reaches_every_caller_in_the_batch() {
        let (j, r) = job(account("carol"));
        j.finish(Err(StoreError::Backend("disk full".into())));
        assert_eq!(
            r.blocking_recv().unwrap().unwrap_err(),
            StoreError::Backend("disk full".into())
        );
    }

    fn cli_invite(digest: SecretDigest, created_at: DateTime<Utc>) -> NewInvite {
        NewInvite {
            token_digest: digest,
            host: HostName::parse("example.com").unwrap(),
            source: InviteSource::Cli,
            issuer_name: None,
            created_at,
            expires_at: created_at + chrono::Duration::days(1),
            uses_allowed: 1,
            note: None,
            fixed_name: None,
            pending_limit: None,
        }
    }

    #[test]
    fn a_schema_1_server_still_running_on_a_migrated_file_cannot_mint() {
        let (_dir, conn) = scratch();
        // The statement a schema 1 server runs for every mint.
        let old = conn.execute(
            "INSERT INTO invites (token_digest, host, source, issuer_name, created_at, expires_at)
             SELECT ?1, 'example.com', 'cli', NULL, 1, 2 WHERE ?2 IS NULL",
            params![
                SecretDigest::of("t").as_bytes().as_slice(),
                rusqlite::types::Null
            ],
        );
        assert!(is_constraint_violation(&old.unwrap_err()));
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM invites", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[test]
    fn lookups_use_an_index_for_both_token_formats() {
        let (_dir, conn) = scratch();
        let plan = |sql: &str| -> String {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
                .join("; ")
        };
        let by_id = plan("SELECT host FROM invites WHERE id = 1 AND token_format = 2");
        assert!(by_id.contains("INTEGER PRIMARY KEY"), "{by_id}");
        let legacy =
            plan("SELECT host FROM invites WHERE token_digest = x'00' AND token_format = 1");
        assert!(legacy.contains("invites_by_legacy_token"), "{legacy}");
    }

    #[test]
    fn invite_ids_grow_with_time_and_stay_above_schema_1_ids() {
        let now = Utc::now();
        let earlier = now - chrono::Duration::milliseconds(1);
        for _ in 0..1000 {
            let (a, b) = (new_invite_id(earlier), new_invite_id(now));
            assert!(a < b);
            assert!(a >= crate::domain::LEGACY_INVITE_ID_LIMIT);
        }
        let far = DateTime::from_timestamp(8_000_000_000, 0).unwrap();
        assert!(new_invite_id(far) > 0);
        let before_1970 = DateTime::from_timestamp(-86_400, 0).unwrap();
        assert!(new_invite_id(before_1970) >= crate::domain::LEGACY_INVITE_ID_LIMIT);
    }

    #[test]
    fn an_invite_id_already_taken_is_drawn_again() {
        let (_dir, conn) = scratch();
        let now = Utc::now();
        let taken = new_invite_id(now);
        let inv = cli_invite(SecretDigest::of("a"), now);
        assert_eq!(insert_invite_with_ids(&conn, &inv, [taken]), Ok(taken));
        let again = insert_invite_with_ids(&conn, &inv, [taken, taken, taken + 1]);
        assert_eq!(again, Ok(taken + 1));
        assert!(insert_invite_with_ids(&conn, &inv, [taken, taken + 1]).is_err());
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM invites", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }

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

    #[test]
    fn a_batch_is_not_committed_into_a_file_that_is_no_longer_the_databases() {
        let (_dir, conn) = scratch();
        let (a, _ra) = job(account("alice"));
        let mut batch = vec![a];
        assert!(matches!(
            run_batch(&conn, &mut batch, &|| false),
            Err(BatchError::Lost)
        ));
        conn.execute_batch("ROLLBACK").unwrap();
        assert!(account_names(&conn).is_empty());
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

    #[test]
    fn a_failed_commit_says_why_in_health_and_the_next_success_clears_it() {
        let health = Health::new(Path::new("t.db"));
        let failure = |code| {
            BatchError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        for (code, state) in [
            (rusqlite::ffi::SQLITE_READONLY, State::ReadOnly),
            (rusqlite::ffi::SQLITE_FULL, State::Full),
            (rusqlite::ffi::SQLITE_IOERR, State::Io),
            (rusqlite::ffi::SQLITE_BUSY, State::Locked),
            (rusqlite::ffi::SQLITE_ABORT_ROLLBACK, State::Failing),
        ] {
            health.set(State::of_failure(&failure(code)));
            assert_eq!(health.check(), Err(Unhealthy(state.reason())));
            // A failing disk still serves what it holds.
            assert_eq!(health.check_readable(), Ok(()));
            health.set(State::Writable);
            assert_eq!(health.check(), Ok(()));
        }
        health.set(State::of_failure(&BatchError::Lost));
        assert!(health.check_readable().is_err());
    }

    #[tokio::test]
    async fn while_writes_fail_the_idle_writer_reports_recovery_only_when_its_probe_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        SqliteStore::open(&path)
            .unwrap()
            .check_writable()
            .await
            .unwrap();
        let health = Arc::new(Health::new(&path));
        let writer = |flags| Writer {
            conn: Connection::open_with_flags(&path, flags).unwrap(),
            watch: Watch::new(&path).unwrap(),
            health: Arc::clone(&health),
        };
        health.set(State::ReadOnly);
        // Stands in for a file the process may not write: SQLite opens such
        // a file read-only. Its probe fails, though its batch commits.
        writer(OpenFlags::SQLITE_OPEN_READ_ONLY).idle();
        assert_eq!(health.get(), State::ReadOnly);
        writer(open_flags()).idle();
        assert_eq!(health.get(), State::Writable);
    }

    #[test]
    fn a_database_with_a_negative_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", -1).unwrap();
        }
        match SqliteStore::open(&path) {
            Err(OpenError::BadVersion { found: -1, .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("a negative schema version was opened"),
        }
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 999).unwrap();
        }
        match SqliteStore::open(&path) {
            Err(OpenError::TooNew { found: 999, .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
    }
}
