//! Group commit for the hot path: a key's mint (without webhooks) waits
//! while another mint of the same node is at the database, then goes with
//! every mint that queued meanwhile in one INSERT, one round trip and one
//! commit (SQLite's writer does the same with its transactions).
//!
//! A lone mint is not delayed: with nothing in flight it runs at once, as
//! its own statement. Only mints that arrive while one is at the database
//! queue, and the first to finish hands the queue to a task that writes it
//! (so a client that goes away cannot strand the others). Each batch is one
//! statement whose key re-check is per row (see
//! [`super::invites::insert_batch`]); a row it did not insert, for a key
//! gone or an id taken, is retried on its own, which says which.
//!
//! One queue serves the whole node, not one per thread as the pools are:
//! with one per thread, 8 connections over two threads gave batches of 2 on
//! average (a mint alone, then the 3 behind it, in turn) and no gain; one
//! queue gave batches of 4 and a third more mints a second. Its waiters on
//! other threads are woken by the thread that wrote their batch.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::{invites, PostgresStore};
use crate::store::{InviteSource, NewInvite, StoreError};

/// The most mints written by one statement. Past a few dozen rows a batch
/// saves little more per row, and a larger one only makes its first mint
/// wait longer.
const MAX_BATCH: usize = 64;

/// How long a batch waits for the mints it expects (see
/// [`MintQueue::gather`]) before it goes with fewer. Only mints that queued
/// while others were at the database ever wait for it, and only when fewer
/// came back than were answered; tokio's timers tick in milliseconds.
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// The most mints a batch waits for. Past this many, the rows of a statement
/// cost more than the statement itself, and two groups taking turns (one
/// answered and coming back while the other is at the database) keep both
/// the database and the server busy: measured with 64 connections, waiting
/// for every one of them gave 31,000 mints a second, not waiting 39,000.
const GATHER_AT_MOST: usize = 16;

/// A node's key mints waiting for the database.
#[derive(Default)]
pub(super) struct MintQueue {
    state: Mutex<State>,
    /// Told of every mint that queues.
    arrived: tokio::sync::Notify,
    /// The runtime that opened the store, where queued mints are written
    /// (see [`MintQueue::on`]); the current one if none.
    runtime: Option<tokio::runtime::Handle>,
    /// Statements written and the mints they carried, for tests to see how
    /// racing mints were grouped.
    #[cfg(test)]
    pub(super) written: [std::sync::atomic::AtomicUsize; 2],
}

#[derive(Default)]
struct State {
    /// A mint or a batch of this queue is at the database.
    busy: bool,
    waiting: Vec<Waiter>,
}

/// A queued mint and where its answer goes.
struct Waiter {
    invite: NewInvite,
    answer: oneshot::Sender<Result<i64, StoreError>>,
}

/// Whether `invite` may go in a batch: a key's mint, which only the key's
/// re-check guards (an account's also takes a lock, the CLI's has no key).
pub(super) fn batchable(invite: &NewInvite) -> bool {
    matches!(invite.source, InviteSource::Key(_)) && invite.pending_limit.is_none()
}

impl MintQueue {
    /// A queue whose batches are written on `runtime`, the one that opened
    /// the store (`serve`'s main runtime). Not an HTTP worker's: the mints
    /// queued come from every worker, and on a graceful stop each worker's
    /// runtime ends as soon as its own connections are done, which would
    /// end a batch it was writing for another worker's requests (they were
    /// answered 503 where they should have been answered 201).
    pub(super) fn on(runtime: Option<tokio::runtime::Handle>) -> Self {
        Self {
            runtime,
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section below only moves values in and out, so a
        // panic cannot leave the state half-changed: a poisoned lock is
        // still sound to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mints `invite` (see the module's text); its id.
    pub(super) async fn mint(
        self: Arc<Self>,
        store: &PostgresStore,
        invite: NewInvite,
    ) -> Result<i64, StoreError> {
        let turn = {
            let mut state = self.lock();
            if state.busy {
                let (answer, rx) = oneshot::channel();
                state.waiting.push(Waiter { invite, answer });
                self.arrived.notify_one();
                Turn::Wait(rx)
            } else {
                state.busy = true;
                Turn::Go(invite)
            }
        };
        match turn {
            Turn::Wait(rx) => rx.await.unwrap_or_else(|_| {
                // The task writing the batch was dropped: the runtime is
                // shutting down. Whether the row was written is not known,
                // so the mint is not reported saved.
                Err(StoreError::transient("the server is shutting down"))
            }),
            Turn::Go(invite) => {
                let handover = Handover {
                    queue: Arc::clone(&self),
                    store,
                };
                // Holding the queue while waiting for a connection from
                // this thread's pool would hold up the mints of other
                // threads, whose pools may have one free: with none free
                // here, the queue goes to the mints behind this one, and
                // this one waits and goes alone, as before batching.
                let client = match store.free_client().await? {
                    Some(client) => client,
                    None => {
                        drop(handover);
                        store.client().await?
                    }
                };
                #[cfg(test)]
                self.count(1);
                write_alone(&client, &invite).await
            }
        }
    }

    #[cfg(test)]
    fn count(&self, mints: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.written[0].fetch_add(1, Relaxed);
        self.written[1].fetch_add(mints, Relaxed);
    }

    /// Waits until `expected` mints are queued, or [`LINGER`] has passed.
    ///
    /// Without it, a few clients minting as fast as they are answered split
    /// into two groups that take turns: one mint goes alone while the
    /// others queue, they go together while the first one's client sends
    /// its next, and so on, so every other statement carries one row (with
    /// 4 connections: batches of 1 and 3, two statements for 4 mints).
    /// Waiting for as many as were in the last round merges the groups, so
    /// each round is one statement. Those many came back within a round
    /// trip of their answers, unless clients stopped or slowed, which costs
    /// one linger, after which the next round expects fewer.
    async fn gather(&self, expected: usize) {
        let expected = expected.min(GATHER_AT_MOST);
        let deadline = tokio::time::Instant::now() + LINGER;
        loop {
            // Made before the count is read: a mint queued after the read
            // leaves its notice for this wait (notify_one keeps one).
            let arrived = self.arrived.notified();
            if self.lock().waiting.len() >= expected {
                return;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return;
            }
        }
    }
}

/// Whether a mint goes to the database now or waits for a batch.
enum Turn {
    Go(NewInvite),
    Wait(oneshot::Receiver<Result<i64, StoreError>>),
}

/// Writes what queued, batch after batch, until the queue is empty.
/// `expected` is how many mints were at the database or waiting when the
/// last write ended. The task owns `idle` from its spawning on, so a task
/// dropped at shutdown, even before it first ran, frees the queue.
async fn drain(mut idle: Idle, store: PostgresStore, mut expected: usize) {
    let queue = Arc::clone(&idle.queue);
    loop {
        queue.gather(expected).await;
        let batch: Vec<Waiter> = {
            let mut state = queue.lock();
            if state.waiting.is_empty() {
                // Under the lock that a mint takes to queue: none can
                // queue behind a task that has ended.
                state.busy = false;
                idle.armed = false;
                return;
            }
            let n = state.waiting.len().min(MAX_BATCH);
            state.waiting.drain(..n).collect()
        };
        #[cfg(test)]
        queue.count(batch.len());
        let written = batch.len();
        write(&store, batch).await;
        expected = written + queue.lock().waiting.len();
    }
}

/// Held by a mint written on its own: when it ends, however it ends (its
/// client may have gone), the mints that queued behind it are handed to a
/// task that writes them.
struct Handover<'a> {
    queue: Arc<MintQueue>,
    store: &'a PostgresStore,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        if state.waiting.is_empty() {
            state.busy = false;
            return;
        }
        // This mint and those that queued behind it.
        let expected = 1 + state.waiting.len();
        drop(state);
        let idle = Idle {
            queue: Arc::clone(&self.queue),
            armed: true,
        };
        // With no runtime left to write them on, `idle` is dropped (here,
        // or with the task a closed runtime refuses) and the waiters hear
        // that the server is shutting down.
        let runtime =
            (self.queue.runtime.clone()).or_else(|| tokio::runtime::Handle::try_current().ok());
        if let Some(runtime) = runtime {
            runtime.spawn(drain(idle, self.store.clone(), expected));
        }
    }
}

/// Frees the queue if the task writing it is dropped (at shutdown): the
/// mints still waiting hear that the server is shutting down.
struct Idle {
    queue: Arc<MintQueue>,
    armed: bool,
}

impl Drop for Idle {
    fn drop(&mut self) {
        if self.armed {
            *self.queue.lock() = State::default();
        }
    }
}

/// Writes one batch and answers each waiter.
async fn write(store: &PostgresStore, batch: Vec<Waiter>) {
    let started = std::time::Instant::now();
    let client = match store.client().await {
        Ok(client) => client,
        Err(e) => return answer_all(batch, &e),
    };
    let invites: Vec<&NewInvite> = batch.iter().map(|w| &w.invite).collect();
    let ids = match invites::insert_batch(&client, &invites).await {
        Ok(ids) => ids,
        // Nothing was written. A transient failure (a lost connection, a
        // lock timeout) is every waiter's answer: 503, try again. A
        // permanent one may be one row's doing, so each row is tried
        // alone and answered for itself.
        Err(StoreError::Backend(e)) if !e.is_transient() => vec![None; batch.len()],
        Err(e) => return answer_all(batch, &e),
    };
    let inserted = ids.iter().flatten().count();
    if inserted > 0 {
        crate::metrics::commit(inserted, started.elapsed());
    }
    for (waiter, id) in batch.into_iter().zip(ids) {
        let outcome = match id {
            Some(id) => Ok(id),
            // Its key went, or its id was taken: alone, the insert draws
            // again or says the key is gone.
            None => write_alone(&client, &waiter.invite).await,
        };
        // A waiter whose client went has dropped its receiver; its invite
        // stays saved, unseen, as after any mint whose answer was lost.
        let _ = waiter.answer.send(outcome);
    }
}

/// Writes one mint in its own statement, in autocommit, measured as the
/// `autocommit!` writes are: a commit of one. Also the store's path for a
/// mint that is never batched.
pub(super) async fn write_alone(
    client: &deadpool_postgres::Client,
    invite: &NewInvite,
) -> Result<i64, StoreError> {
    let started = std::time::Instant::now();
    let id = invites::insert(client, invite, invites::Run::Alone).await?;
    crate::metrics::commit(1, started.elapsed());
    Ok(id)
}

fn answer_all(batch: Vec<Waiter>, error: &StoreError) {
    for waiter in batch {
        let _ = waiter.answer.send(Err(error.clone()));
    }
}
