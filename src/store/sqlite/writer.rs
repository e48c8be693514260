//! The group-commit writer: one thread owns the only connection that writes,
//! applies every queued write in one transaction (each under its own
//! savepoint when it needs one) and answers each after the commit. It also
//! watches that the database path still names the file it has open.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use tokio::sync::oneshot;

use super::rows::backend;
use crate::store::{StoreError, Unhealthy};

/// The most writes one commit carries; bounds the latency of the last in line.
pub(super) const MAX_BATCH: usize = 512;
/// How often an idle writer checks that the database path still names its
/// file (and, while writes are failing, whether they work again), so that
/// `/health` notices without a request having to write.
pub(super) const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What undoes a failed write without touching the rest of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Undo {
    /// The write is one data-changing statement (retries of it included).
    /// SQLite undoes a failed statement by itself, so a savepoint would only
    /// cost time, on the path every mint takes.
    Statement,
    /// The write runs several statements; a savepoint undoes them together.
    Savepoint,
}

/// One queued write: applied inside the batch, answered after the commit.
pub(super) trait Job: Send {
    /// How a failure of this write is undone.
    fn undo(&self) -> Undo;
    /// Applies the write; `false` when it failed and its savepoint must be undone.
    fn apply(&mut self, conn: &Connection) -> bool;
    /// Answers the caller with the write's result, or the commit's failure.
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

pub(super) struct Pending<T, F> {
    pub(super) f: Option<F>,
    pub(super) undo: Undo,
    pub(super) result: Option<Result<T, StoreError>>,
    pub(super) reply: oneshot::Sender<Result<T, StoreError>>,
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
                .unwrap_or_else(|_| Err(StoreError::permanent("a write panicked"))),
            None => Err(StoreError::permanent("write applied twice")),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let answer = match (commit, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::permanent("write was not applied")),
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
pub(super) const LONE_WRITE_POLL: Duration = Duration::from_micros(50);

/// What the writer waits for next.
pub(super) enum Next {
    /// A write to apply.
    Job(Box<dyn Job>),
    /// Nothing came for a while: time for the idle checks.
    Idle,
    /// Every sender is gone: the store was dropped.
    Closed,
}

/// The next queued write: polled for up to `poll`, then waited for up to `idle`.
pub(super) fn next_job(
    jobs: &mpsc::Receiver<Box<dyn Job>>,
    poll: Duration,
    idle: Duration,
) -> Next {
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
pub(super) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    #[cfg(unix)]
    pub(super) fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Elsewhere only a deleted file is noticed.
    #[cfg(not(unix))]
    pub(super) fn of(path: &Path) -> std::io::Result<Self> {
        std::fs::metadata(path).map(|_| Self { dev: 0, ino: 0 })
    }
}

/// The database path and the file it named when the store opened it.
pub(super) struct Watch {
    path: PathBuf,
    id: FileId,
}

impl Watch {
    pub(super) fn new(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            id: FileId::of(path)?,
        })
    }

    /// True while the path still names the file the store has open. A path
    /// that cannot be looked up at all counts as not: nothing proves it does.
    pub(super) fn still_ours(&self) -> bool {
        FileId::of(&self.path).is_ok_and(|id| id == self.id)
    }
}

/// Whether the store can write, as the writer last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum State {
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
    pub(super) fn from_u8(v: u8) -> Self {
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
    pub(super) fn of_failure(e: &BatchError) -> Self {
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
    pub(super) fn reason(self) -> &'static str {
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
pub(super) struct Health {
    path: PathBuf,
    state: AtomicU8,
}

impl Health {
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            state: AtomicU8::new(State::Writable as u8),
        }
    }

    pub(super) fn get(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Records `now`, and logs the change when it is one, so that each
    /// episode is explained once rather than on every request.
    pub(super) fn set(&self, now: State) {
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
            (_, State::Locked) => tracing::warn!(
                database = %path,
                reason = State::Locked.reason(),
                "database writes are waiting on another process; /health reports it until one succeeds"
            ),
            (_, failing) => tracing::error!(
                database = %path,
                reason = failing.reason(),
                "database writes are failing; /health reports it until one succeeds"
            ),
        }
    }

    /// `Ok` while the store can serve; the reason otherwise.
    pub(super) fn check(&self) -> Result<(), Unhealthy> {
        match self.get() {
            State::Writable => Ok(()),
            other => Err(Unhealthy(other.reason())),
        }
    }

    /// Reads are refused only when the file is lost: a read then might come
    /// from either file. A failing disk still serves what it holds.
    pub(super) fn check_readable(&self) -> Result<(), StoreError> {
        match self.get() {
            State::Lost => Err(StoreError::transient(State::Lost.reason())),
            _ => Ok(()),
        }
    }
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub(super) enum BatchError {
    /// SQLite failed, or the batch had to be abandoned.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The database path no longer names the file being written.
    #[error("the database file was deleted or replaced")]
    Lost,
}

impl BatchError {
    /// What each caller in the batch is told. A lost file is transient:
    /// the store cannot serve until the operator puts the file back, which
    /// `/health` reports, so clients are told to retry (elsewhere) rather
    /// than that their request broke something.
    pub(super) fn into_store_error(self) -> StoreError {
        match self {
            Self::Sqlite(e) => backend(e),
            Self::Lost => StoreError::transient(
                "the database file was deleted or replaced; nothing was written",
            ),
        }
    }
}

/// The writer thread's connection and what it watches.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) watch: Watch,
    pub(super) health: Arc<Health>,
}

impl Writer {
    pub(super) fn run(self, jobs: mpsc::Receiver<Box<dyn Job>>) {
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
            let state = match &outcome {
                Ok(()) => State::Writable,
                Err(e) => State::of_failure(e),
            };
            // A lost file is explained once, by Health::set. A lock held past
            // the busy timeout is transient (its callers get a 503 asking
            // them to retry): a warning, not an error.
            match &outcome {
                Err(e @ BatchError::Sqlite(_)) if state == State::Locked => {
                    tracing::warn!(error = %e, writes = batch.len(), "database commit refused: another process held the write lock past the busy timeout");
                }
                Err(e @ BatchError::Sqlite(_)) => {
                    tracing::error!(error = %e, writes = batch.len(), "database commit failed");
                }
                Ok(()) | Err(BatchError::Lost) => {}
            }
            self.health.set(state);
            let answer = outcome.map_err(BatchError::into_store_error);
            for job in batch {
                job.finish(answer.clone());
            }
        }
    }

    /// Applies and commits a batch; after a failure, leaves no transaction open.
    pub(super) fn commit(&self, batch: &mut [Box<dyn Job>]) -> Result<(), BatchError> {
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
    pub(super) fn idle(&self) {
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
pub(super) fn rewrite_version(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(backend)?;
    conn.pragma_update(None, "user_version", version)
        .map_err(backend)
}

/// Applies `batch` in one transaction and commits it if `still_ours` says the
/// file being written is still the database's file.
pub(super) fn run_batch(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::accounts::insert_account;
    use crate::store::sqlite::test_support::{account, scratch};
    use crate::store::sqlite::{open_flags, SqliteStore};
    use crate::store::{AccountRecord, NewAccount};
    use rusqlite::OpenFlags;

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
        let full = StoreError::permanent("disk full");
        j.finish(Err(full.clone()));
        assert_eq!(r.blocking_recv().unwrap().unwrap_err(), full);
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
}
