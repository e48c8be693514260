//! Argon2id password hashing, off the async workers and bounded in CPU, in
//! memory and in waiting.
//!
//! Each hash needs 19 MiB of working memory and tens of milliseconds of one
//! core (OWASP's parameters). Hashes run on a fixed pool of threads, each
//! reusing its own 19 MiB buffer: allocating it per hash on whichever
//! blocking thread ran it made the allocator keep a copy per thread, and the
//! process grew to GiBs. A thread that finishes a hash takes the next one from
//! the queue itself, so the cores never wait for an async task to be polled
//! before the next hash starts.
//!
//! The queue is bounded: past [`Hasher::with_queue`]'s limit a hash is refused
//! at once with [`HashError::Busy`] (the HTTP surfaces answer 503 with
//! `Retry-After`), instead of piling up minutes of work that a flood of wrong
//! sign-ins leaves behind and a real user then waits behind. Work whose
//! requester went away (its future dropped) is skipped when its turn comes.

use std::sync::{mpsc, Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{oneshot, OnceCell};

use crate::domain::Password;

/// OWASP's Argon2id recommendation: 19 MiB, 2 passes, 1 lane.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Hashes allowed to wait for a hashing thread when none is given: with one
/// hashing thread and ~30 ms a hash, the last of them starts within about two
/// seconds, and a burst of 50 simultaneous sign-ins is still all served.
pub const DEFAULT_QUEUE: usize = 64;

/// Why a hash was not computed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every hashing thread is busy and the queue is full: nothing was done,
    /// and the same request may succeed a moment later.
    #[error("password hashing is busy: every hashing thread is working and the queue is full")]
    Busy,
    /// The hashing threads, the RNG or a stored hash failed.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

fn err(e: impl std::fmt::Display) -> HashError {
    HashError::Failed(e.to_string())
}

/// One hash to compute in a hashing thread's memory.
type Work = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Hashes and verifies passwords with Argon2id.
#[derive(Clone)]
pub struct Hasher {
    /// The bounded queue the hashing threads take work from; they stop when
    /// every clone of the hasher is gone.
    work: mpsc::SyncSender<Work>,
    dummy: Arc<OnceCell<String>>,
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

fn params() -> Result<Params, HashError> {
    Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(err)
}

/// How many hashes run at once: one core fewer than the machine has (at
/// least one). Every hashing thread keeps its core fully busy for the whole
/// hash, and the OS does not know a hash from an HTTP worker: with a thread
/// per core, a flood of sign-ins took every core (on 2 cores) and minting and
/// page views starved behind it. One core left over keeps them answering;
/// sign-ins past what the remaining threads manage wait in the bounded queue
/// or get 503.
fn hashing_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    cores.saturating_sub(1).max(1)
}

impl Hasher {
    /// A hasher with the default queue ([`DEFAULT_QUEUE`]).
    pub fn new() -> Self {
        Self::with_queue(DEFAULT_QUEUE)
    }

    /// A hasher running one hash per core but one (at least one), with at
    /// most `queue` more waiting for a thread; past that, hashes fail at once
    /// with [`HashError::Busy`].
    pub fn with_queue(queue: usize) -> Self {
        let (work, queue) = mpsc::sync_channel::<Work>(queue);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..hashing_threads() {
            let queue = Arc::clone(&queue);
            // A thread that cannot start leaves fewer hashers; with none at
            // all the queue is closed and every hash reports an error.
            let _ = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || hashing_thread(&queue));
        }
        Self {
            work,
            dummy: Arc::new(OnceCell::new()),
        }
    }

    /// Runs `f` on a hashing thread, in that thread's working memory.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let stopped = || HashError::Failed("the hashing threads have stopped".into());
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |memory| {
            crate::metrics::hash_queue(-1.0);
            // The request went away while queued: the server drops a
            // request's future when its client disconnects (startup.rs turns
            // off HTTP/1 half-closed connections for this), and with it the
            // receiver. Nobody is waiting for this hash.
            if reply.is_closed() {
                return;
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(memory)))
                .unwrap_or_else(|_| Err(HashError::Failed("password hashing panicked".into())));
            let _ = reply.send(result);
        });
        // Counted before it is queued: a thread may take it at once.
        crate::metrics::hash_queue(1.0);
        self.work.try_send(work).map_err(|e| {
            crate::metrics::hash_queue(-1.0);
            match e {
                mpsc::TrySendError::Full(_) => HashError::Busy,
                mpsc::TrySendError::Disconnected(_) => stopped(),
            }
        })?;
        answer.await.map_err(|_| stopped())?
    }

    /// Hashes a password that passed the policy; returns the PHC string.
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        self.hash_text(password.expose().to_owned()).await
    }

    async fn hash_text(&self, password: String) -> Result<String, HashError> {
        self.run(move |memory| {
            let params = params()?;
            let salt = SaltString::generate(&mut OsRng);
            let mut salt_buf = [0u8; 64];
            let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).map_err(err)?;
            let output = compute(&params, password.as_bytes(), salt_bytes, memory)?;
            let phc = PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: ParamsString::try_from(&params).map_err(err)?,
                salt: Some(salt.as_salt()),
                hash: Some(output),
            };
            Ok(phc.to_string())
        })
        .await
    }

    /// True when `password` matches `phc`. With no hash (unknown account) it
    /// verifies against a dummy hash, so both answers take the same time.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        let (phc, real) = match phc {
            Some(p) => (p, true),
            None => {
                let dummy = self
                    .dummy
                    .get_or_try_init(|| self.hash_text("invite-server dummy password".into()))
                    .await?;
                (dummy.clone(), false)
            }
        };
        let matched = self
            .run(move |memory| {
                let parsed = PasswordHash::new(&phc).map_err(err)?;
                if Algorithm::try_from(parsed.algorithm).map_err(err)? != Algorithm::Argon2id {
                    return Err(HashError::Failed("stored hash is not Argon2id".into()));
                }
                let params = Params::try_from(&parsed).map_err(err)?;
                let expected = parsed
                    .hash
                    .ok_or_else(|| HashError::Failed("stored hash has no output".into()))?;
                let mut salt_buf = [0u8; 64];
                let salt = parsed
                    .salt
                    .ok_or_else(|| HashError::Failed("stored hash has no salt".into()))?
                    .decode_b64(&mut salt_buf)
                    .map_err(err)?;
                let output = compute(&params, password.as_bytes(), salt, memory)?;
                // Output's equality is constant-time.
                Ok(output == expected)
            })
            .await?;
        Ok(real && matched)
    }
}

/// A hashing thread: takes work from the queue until the hasher is dropped.
fn hashing_thread(queue: &Mutex<mpsc::Receiver<Work>>) {
    let mut memory = Vec::new();
    loop {
        // One idle thread waits in recv while the others wait for the lock.
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok(work) => work(&mut memory),
            Err(mpsc::RecvError) => return,
        }
    }
}

/// One Argon2id computation in `memory` (grown once to the size `params` need).
fn compute(
    params: &Params,
    password: &[u8],
    salt: &[u8],
    memory: &mut Vec<Block>,
) -> Result<Output, HashError> {
    if memory.len() != params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = Output::init_with(len, |out| {
        argon2
            .hash_password_into_with_memory(password, salt, out, &mut memory[..])
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(err);
    // A stored hash made elsewhere with more memory must not pin that much in
    // this thread for good; our own size is kept for the next hash.
    if memory.len() > M_COST_KIB as usize {
        *memory = Vec::new();
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountName, HostName};
    use argon2::password_hash::PasswordVerifier;

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_match() {
        let h = Hasher::new();
        let name = AccountName::parse("alice").unwrap();
        let host = HostName::parse("example.com").unwrap();
        let pw = Password::parse("correct horse battery staple", &name, &host).unwrap();
        let phc = h.hash(pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h
            .verify("correct horse battery staple".into(), Some(phc.clone()))
            .await
            .unwrap());
        assert!(!h.verify("wrong".into(), Some(phc.clone())).await.unwrap());
        assert!(!h
            .verify("invite-server dummy password".into(), None)
            .await
            .unwrap());
        // The hash is standard PHC: the argon2 crate's own verifier agrees.
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse battery staple", &parsed)
            .is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_hashes_than_threads_all_answer_and_each_verifies() {
        let h = Hasher::new();
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move {
                    let password = format!("password number {i}");
                    let phc = h.hash_text(password.clone()).await.unwrap();
                    (password, phc)
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for task in tasks {
            let (password, phc) = task.await.unwrap();
            assert!(seen.insert(phc.clone()), "two hashes came out the same");
            assert!(h.verify(password, Some(phc)).await.unwrap());
        }
    }

    #[tokio::test]
    async fn past_the_queue_hashes_are_refused_at_once_and_the_rest_all_answer() {
        let h = Hasher::with_queue(1);
        // Each hash is queued (or refused) on its first poll, and join_all
        // polls them all before any can finish: at most one per thread runs
        // and one waits.
        let n = hashing_threads() + 4;
        let results = futures_util::future::join_all(
            (0..n).map(|i| h.hash_text(format!("password number {i}"))),
        )
        .await;
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(HashError::Busy)))
            .count();
        let done = results.iter().filter(|r| r.is_ok()).count();
        assert!(busy >= 2, "{busy} of {n} refused");
        assert_eq!(busy + done, n, "{results:?}");
        // Once the queue has room again, hashing works as before.
        assert!(h.hash_text("one more password".into()).await.is_ok());
    }

    #[tokio::test]
    async fn hashes_made_elsewhere_with_other_parameters_still_verify() {
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::generate(&mut OsRng);
        let other = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"hunter2 hunter2", &salt)
        .unwrap()
        .to_string();
        let h = Hasher::new();
        assert!(h
            .verify("hunter2 hunter2".into(), Some(other.clone()))
            .await
            .unwrap());
        assert!(!h
            .verify("hunter3 hunter3".into(), Some(other))
            .await
            .unwrap());
    }
}
