//! Opening the database file and bringing its schema up to date: creating a
//! missing file privately, the connection settings, and the versioned
//! migrations, refusing a schema newer than this binary.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::{OpenError, BUSY_TIMEOUT};

/// The schema, one migration per version, applied in order. Never edit a
/// published entry: add a new one.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 7: nothing here. PostgreSQL's schema 7 drops the CHECK constraints of
    // its invites table (see its list); SQLite runs its CHECKs from each
    // statement's compiled program at no measurable cost, so they stay, and
    // the version moves with PostgreSQL's so both name the same tables.
    "",
];

/// Creates the database file, empty and readable by its owner only, unless it
/// exists. SQLite takes an empty file for a new database, and gives the -wal
/// and -shm files it creates beside it the main file's mode whatever the
/// umask, so these three files never hold data that others can read.
pub(super) fn create_if_missing(path: &Path) -> Result<(), OpenError> {
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
pub(super) fn private_file(path: &Path) -> std::io::Result<()> {
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
pub(super) fn private_file(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map(|_| ())
}

pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers run beside the writer, and the CLI beside the server.
    // synchronous=FULL fsyncs the WAL at every commit: a reported write is on disk.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
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

#[cfg(test)]
mod tests {
    use super::super::{OpenError, SqliteStore};
    use rusqlite::Connection;

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
