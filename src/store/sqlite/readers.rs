//! The read pool: connections other than the writer's, opened on demand and
//! kept while idle, so reads never wait behind the writer; and the sessions
//! the forward-auth check found, kept for as long as nothing is committed.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::Connection;

use super::rows::backend;
use super::sessions;
use super::writer::Health;
use super::{open_flags, BUSY_TIMEOUT};
use crate::crypto::SecretDigest;
use crate::store::{SessionRecord, StoreError};

/// Idle read connections kept open; more are opened under load and closed after.
pub(super) const MAX_IDLE_READERS: usize = 4;
/// Page cache per read connection, in KiB (SQLite's default is 2000). Reads
/// are single indexed rows; a small cache keeps many readers cheap.
pub(super) const READER_CACHE_KIB: i64 = 512;

pub(super) struct Readers {
    pub(super) path: PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
    pub(super) health: Arc<Health>,
    /// Sessions found, valid while nothing is committed (see [`SessionCache`]).
    pub(super) sessions: SessionCache,
}

impl Readers {
    pub(super) fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(&self.path, open_flags()).map_err(backend)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        conn.pragma_update(None, "query_only", "ON")
            .map_err(backend)?;
        conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)
            .map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    pub(super) fn with<T>(
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

    /// The session of `digest` with its enabled account, as committed now:
    /// from the cache when nothing has been committed since it was read
    /// (see [`SessionCache`] for why that cannot be stale), from the store
    /// otherwise. On every `/api/auth/check`.
    ///
    /// It runs right on the async worker, without the blocking-pool hop
    /// other reads take (two thread wake-ups, several times the lookup's
    /// cost): it is one short indexed lookup, and in WAL mode a reader never
    /// waits for the writer or another process's transaction, so it blocks
    /// the worker only for its own page reads (and, rarely, for a process
    /// rebuilding the WAL index after a crash, as every reader must).
    pub(super) fn find_session(&self, digest: &SecretDigest) -> Result<SessionRecord, StoreError> {
        self.health.check_readable()?;
        // Taken before the read, so a commit racing the read changes the
        // header and the entry is never served.
        let before = self.sessions.header(&self.path);
        if let Some(now) = &before {
            if let Some(session) = self.sessions.get(digest, now) {
                return Ok(session);
            }
        }
        let session = self.with(|conn| sessions::find(conn, digest))?;
        if let Some(before) = before {
            self.sessions.put(*digest, before, &session);
        }
        Ok(session)
    }

    pub(super) fn give_back(&self, conn: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// Bytes at the start of the `-shm` file that SQLite's WAL index header
/// takes: two copies of the 48-byte `WalIndexHdr`, which every commit
/// rewrites (second copy first) with a new change counter, frame count,
/// frame checksum and, after a checkpoint restarts the log, new salts.
const WAL_HEADER_LEN: usize = 96;
/// Offset of `isInit` in the header: 1 once the index describes the log.
const WAL_HEADER_IS_INIT: usize = 12;
/// Sessions kept at most; past this the cache starts over.
const MAX_CACHED_SESSIONS: usize = 4096;

/// A snapshot of the WAL index header (both copies).
type WalHeader = [u8; WAL_HEADER_LEN];

/// The sessions the forward-auth check found, each with the WAL index header
/// read just BEFORE the read that found it.
///
/// Why a hit can never be stale: in WAL mode every commit, by any connection
/// of any process (the CLI, another node), publishes a new header in the
/// shared `-shm` file before it returns, and the header of a later state is
/// never byte-for-byte one seen before (its change counter, frame count and
/// last frame's checksum move with every commit, and its salts with every
/// restart of the log). SQLite itself keeps its page cache on exactly this
/// test. An entry was read at or after its snapshot; if the header is still
/// that snapshot now, nothing has been committed since the snapshot, so the
/// database holds exactly what the entry was read from. Any commit since,
/// a sign-out, an account disabled or deleted, a use recorded, changes the
/// header and the next check reads the store again. The header is read with
/// one `pread` (the file's pages are the very pages SQLite maps shared), in
/// place of the read lock (two `fcntl` calls), the query and the row
/// decoding: the bulk of a check's cost beyond `/health`'s.
///
/// The cache is used only when the `-shm` file it reads is provably the one
/// SQLite uses: this process's SQLite has a file with the same device and
/// inode open (see [`SessionCache::open_shm`]). Otherwise, or when a header
/// cannot be read or is mid-update, every check reads the store.
#[derive(Default)]
pub(super) struct SessionCache {
    /// The `-shm` file, opened on first use; `None` when unusable.
    shm: OnceLock<Option<File>>,
    entries: Mutex<HashMap<SecretDigest, (WalHeader, SessionRecord), BuildDigestHasher>>,
}

/// Hashes a [`SecretDigest`] by its first eight bytes: a SHA-256 digest is
/// already uniform, and the table holds only sessions the store found, so
/// no client chooses what collides. The default SipHash cost about as much
/// as the rest of a cache hit; `foldhash` is only an indirect dependency.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // The array's length comes first (a constant), then its bytes.
        let mut word = [0u8; 8];
        let n = bytes.len().min(word.len());
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(8) ^ u64::from_ne_bytes(word);
    }
}

type BuildDigestHasher = BuildHasherDefault<DigestHasher>;

impl SessionCache {
    /// The current WAL index header, if it can be read and is consistent
    /// (both copies equal, initialised).
    fn header(&self, db: &Path) -> Option<WalHeader> {
        let shm = self.shm.get_or_init(|| Self::open_shm(db)).as_ref()?;
        read_header(shm)
    }

    /// Opens `<db>-shm` for reading if this process's SQLite has that same
    /// file open (compared by device and inode through `/proc/self/fd`), so
    /// that a symlinked path or a file swapped under us can never make the
    /// cache watch a file no commit touches.
    #[cfg(target_os = "linux")]
    fn open_shm(db: &Path) -> Option<File> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;

        // SQLite names the index after the database's real path, symlinks
        // resolved.
        let mut name = std::fs::canonicalize(db).ok()?.into_os_string();
        name.push("-shm");
        let file = File::open(name).ok()?;
        let ours = file.metadata().ok()?;
        let own_fd = file.as_raw_fd().to_string();
        let shared = std::fs::read_dir("/proc/self/fd")
            .ok()?
            .flatten()
            .filter(|entry| entry.file_name() != own_fd.as_str())
            .filter_map(|entry| std::fs::metadata(entry.path()).ok())
            .any(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
        if !shared {
            tracing::info!("the WAL index is not where expected; sessions are read on every check");
            return None;
        }
        read_header(&file)?;
        Some(file)
    }

    /// Elsewhere there is no `/proc/self/fd` to prove which file SQLite
    /// uses, so no cache: every check reads the store.
    #[cfg(not(target_os = "linux"))]
    fn open_shm(_db: &Path) -> Option<File> {
        None
    }

    /// The session of `digest` if it was read under header `now`.
    fn get(&self, digest: &SecretDigest, now: &WalHeader) -> Option<SessionRecord> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match entries.get(digest) {
            Some((seen, session)) if seen == now => Some(session.clone()),
            _ => None,
        }
    }

    /// Keeps `session`, read after header `before` was taken.
    fn put(&self, digest: SecretDigest, before: WalHeader, session: &SessionRecord) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Bounded without bookkeeping: sessions in use come back at once.
        if entries.len() >= MAX_CACHED_SESSIONS && !entries.contains_key(&digest) {
            entries.clear();
        }
        entries.insert(digest, (before, session.clone()));
    }
}

/// Reads the WAL index header from `shm`; `None` when it cannot be read,
/// is not initialised, or its two copies differ (a commit is writing it).
#[cfg(unix)]
fn read_header(shm: &File) -> Option<WalHeader> {
    use std::os::unix::fs::FileExt;

    let mut header = [0u8; WAL_HEADER_LEN];
    shm.read_exact_at(&mut header, 0).ok()?;
    let (first, second) = header.split_at(WAL_HEADER_LEN / 2);
    (first == second && first[WAL_HEADER_IS_INIT] == 1).then_some(header)
}

#[cfg(not(unix))]
fn read_header(_shm: &File) -> Option<WalHeader> {
    None
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::super::test_support::account;
    use super::super::SqliteStore;
    use crate::crypto::SecretDigest;
    use crate::store::{NewSession, Store, StoreError};

    /// A store with an account and a session of it (token digest `digest`),
    /// and a second connection to the same file, as another process has.
    async fn store_with_session(
        digest: SecretDigest,
    ) -> (tempfile::TempDir, SqliteStore, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).unwrap();
        let alice = store.create_account(account("alice")).await.unwrap();
        let session = NewSession {
            token_digest: digest,
            created_at: Utc::now(),
        };
        store.create_session(alice.id, session).await.unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other
            .busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        (dir, store, other)
    }

    #[tokio::test]
    async fn a_cached_session_is_served_only_until_anything_is_committed() {
        let digest = SecretDigest::of("s");
        let (_dir, store, other) = store_with_session(digest).await;
        store.find_session(digest).await.unwrap();
        assert!(
            store.readers.sessions.shm.get().unwrap().is_some(),
            "the cache found SQLite's WAL index"
        );
        // Doctor the entry: while nothing is committed, it is what is served.
        {
            let mut entries = store.readers.sessions.entries.lock().unwrap();
            entries.get_mut(&digest).unwrap().1.account.password_hash = "cached".into();
        }
        let hit = store.find_session(digest).await.unwrap();
        assert_eq!(hit.account.password_hash, "cached");
        // A commit by another connection, even to an unrelated table, ends that.
        other
            .execute(
                "INSERT INTO accounts (host, name, password_hash, created_at, invited_by)
                 VALUES ('example.com', 'bob', 'h', 0, 'cli')",
                [],
            )
            .unwrap();
        let fresh = store.find_session(digest).await.unwrap();
        assert_eq!(fresh.account.password_hash, "$argon2id$test");
    }

    #[tokio::test]
    async fn a_session_ended_or_disabled_through_another_connection_is_refused_on_the_next_lookup()
    {
        for end in [
            "DELETE FROM sessions",
            "UPDATE accounts SET disabled_at = 1",
            "DELETE FROM accounts",
        ] {
            let digest = SecretDigest::of("s");
            let (_dir, store, other) = store_with_session(digest).await;
            for _ in 0..3 {
                store.find_session(digest).await.unwrap();
            }
            other.execute_batch(end).unwrap();
            assert_eq!(
                store.find_session(digest).await.unwrap_err(),
                StoreError::NotFound,
                "{end}"
            );
        }
    }

    #[tokio::test]
    async fn a_use_recorded_through_another_connection_is_seen_on_the_next_lookup() {
        let digest = SecretDigest::of("s");
        let (_dir, store, other) = store_with_session(digest).await;
        let before = store.find_session(digest).await.unwrap().last_used_at;
        other
            .execute(
                "UPDATE sessions SET last_used_at = last_used_at + 5000000",
                [],
            )
            .unwrap();
        let after = store.find_session(digest).await.unwrap().last_used_at;
        assert_eq!(after - before, chrono::Duration::seconds(5));
    }
}
