//! `invite-server backup FILE`: a consistent copy of a live database, made
//! with SQLite's online backup API while the server keeps writing.
//!
//! The copy is taken in one backup step (`sqlite3_backup_step(-1)`), which
//! reads the whole source inside a single read transaction: in WAL mode that
//! sees exactly the transactions committed before it began and does not stop
//! the server's writer. Smaller steps would restart from the first page each
//! time the server commits between them, and under steady traffic might
//! never finish.
//!
//! The copy is written to a private temporary file beside FILE, checked with
//! `PRAGMA integrity_check`, flushed to disk, and only then given FILE's
//! name, so FILE is either the whole checked copy or untouched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::migrations::MIGRATIONS;
use super::writer::FileId;
use super::{SqliteStore, BUSY_TIMEOUT};

/// Why a backup was not written. FILE is left as it was in every case.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// FILE exists and `--force` was not given.
    #[error("{0} already exists; nothing was written (pass --force to replace it)")]
    Exists(PathBuf),
    /// FILE is the live database itself (or its -wal or -shm file).
    #[error("{0} is the database being backed up (or its -wal or -shm file); choose another file")]
    SameFile(PathBuf),
    /// FILE's directory does not exist.
    #[error("cannot write {path}: the directory {dir} does not exist (create it first)")]
    NoDirectory {
        /// The backup file.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// The database to back up is not there.
    #[error("database {0} does not exist; nothing to back up")]
    NoDatabase(PathBuf),
    /// The file to back up holds no invite-server schema this binary knows.
    #[error("{path} is not an invite-server database this version can back up (schema version {found}, this invite-server knows 1 to {known})")]
    NotOurs {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this binary knows.
        known: i64,
    },
    /// The copy failed SQLite's integrity check.
    #[error("the copy failed SQLite's integrity check ({0}); nothing was written: check the database with `sqlite3 DB 'PRAGMA integrity_check'`")]
    Damaged(String),
    /// The source stayed locked past the busy timeout.
    #[error("the database stayed locked for {0:?}; nothing was written, try again")]
    Busy(Duration),
    /// SQLite refused.
    #[error("backup failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file system refused.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// What a finished backup wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupSummary {
    /// The schema version of the copy.
    pub schema_version: i64,
    /// The size of the copy in bytes.
    pub bytes: u64,
}

impl SqliteStore {
    /// Copies the database at `source` to `dest` (mode 0600) while other
    /// processes may be writing to it; refuses an existing `dest` unless
    /// `replace`. The copy is checked with `PRAGMA integrity_check` before it
    /// takes `dest`'s name, and opens as a normal store.
    pub fn backup(source: &Path, dest: &Path, replace: bool) -> Result<BackupSummary, BackupError> {
        refuse_dest(source, dest, replace)?;
        let from = open_source(source)?;
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let io = |source| BackupError::Io {
            path: dest.to_owned(),
            source,
        };
        // tempfile creates it exclusively with mode 0600 and removes it when
        // dropped unpersisted, so a failed backup leaves nothing behind.
        let temp = tempfile::Builder::new()
            .prefix(".invite-server-backup-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io)?;
        private(temp.as_file()).map_err(io)?;
        let schema_version = copy_into(&from, temp.path())?;
        drop(from);
        temp.as_file().sync_all().map_err(io)?;
        let bytes = temp.as_file().metadata().map_err(io)?.len();
        if replace {
            temp.persist(dest).map_err(|e| io(e.error))?;
        } else {
            // Atomic no-clobber: a file that appeared at FILE since the check
            // above is still not overwritten.
            temp.persist_noclobber(dest).map_err(|e| {
                if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                    BackupError::Exists(dest.to_owned())
                } else {
                    io(e.error)
                }
            })?;
        }
        sync_dir(dir).map_err(io)?;
        Ok(BackupSummary {
            schema_version,
            bytes,
        })
    }
}

/// Refuses a `dest` that exists (without `replace`), that is the database
/// or one of its side files, or whose directory is missing.
fn refuse_dest(source: &Path, dest: &Path, replace: bool) -> Result<(), BackupError> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(BackupError::NoDirectory {
            path: dest.to_owned(),
            dir: dir.to_owned(),
        });
    }
    if std::fs::symlink_metadata(dest).is_err() {
        return Ok(());
    }
    // Replacing the live file (even through another name for it) would
    // destroy the database; its -wal and -shm are no better.
    if let Ok(target) = FileId::of(dest) {
        for side in ["", "-wal", "-shm"] {
            let mut p = source.as_os_str().to_owned();
            p.push(side);
            if FileId::of(Path::new(&p)).is_ok_and(|id| id == target) {
                return Err(BackupError::SameFile(dest.to_owned()));
            }
        }
    }
    if replace {
        Ok(())
    } else {
        Err(BackupError::Exists(dest.to_owned()))
    }
}

/// Opens the database to back up read-only, never creating it, and checks
/// that it is an invite-server database of a schema this binary knows.
fn open_source(path: &Path) -> Result<Connection, BackupError> {
    if !path.is_file() {
        return Err(BackupError::NoDatabase(path.to_owned()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if !(1..=known).contains(&found) {
        return Err(BackupError::NotOurs {
            path: path.to_owned(),
            found,
            known,
        });
    }
    Ok(conn)
}

/// Copies `from` into the empty file at `to` in one step, checks the copy,
/// and returns its schema version.
fn copy_into(from: &Connection, to: &Path) -> Result<i64, BackupError> {
    // No SQLITE_OPEN_CREATE: the file exists (tempfile made it, 0600), and
    // SQLite takes an empty file for a new database.
    let mut conn = Connection::open_with_flags(
        to,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A rollback journal while copying: a WAL destination would refuse a
    // source whose page size differs from the new file's.
    conn.pragma_update(None, "synchronous", "FULL")?;
    {
        let backup = Backup::new(from, &mut conn)?;
        let deadline = Instant::now() + BUSY_TIMEOUT;
        // Bounded: Busy and Locked only repeat while another connection holds
        // a lock, and the deadline ends that.
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                _ if Instant::now() >= deadline => return Err(BackupError::Busy(BUSY_TIMEOUT)),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    let verdict: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if verdict != ["ok"] {
        return Err(BackupError::Damaged(verdict.join("; ")));
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    // The copied header says WAL (the source's mode), so reading the copy
    // opened a -wal beside it: fold it back into the file, which must hold
    // everything by itself once renamed. A server opening it turns WAL on.
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(version)
}

/// Mode 0600 exactly: tempfile asks for it, but the umask may take the
/// owner's write bit away, leaving a copy no server could open.
#[cfg(unix)]
fn private(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

/// File modes are a Unix notion.
#[cfg(not(unix))]
fn private(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// Makes the rename that gave the copy its name durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Directories cannot be opened for syncing here.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}
