//! Argon2id password hashing, off the async workers and bounded in memory.
//!
//! Each hash needs 19 MiB of working memory and several milliseconds of one
//! core (OWASP's parameters). Hashes run on a fixed pool of one thread per
//! core (more at once would add memory and queueing, not throughput), each
//! reusing its own 19 MiB buffer: allocating it per hash on whichever
//! blocking thread ran it made the allocator keep a copy per thread, and the
//! process grew to GiBs. A thread that finishes a hash takes the next one from
//! the queue itself, so the cores never wait for an async task to be polled
//! before the next hash starts.

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

/// Hashing could not be done (the blocking pool or the RNG failed).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

fn err(e: impl std::fmt::Display) -> HashError {
    HashError(e.to_string())
}

/// One hash to compute in a hashing thread's memory.
type Work = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Hashes and verifies passwords with Argon2id.
#[derive(Clone)]
pub struct Hasher {
    /// The queue the hashing threads take work from; they stop when every
    /// clone of the hasher is gone.
    work: mpsc::Sender<Work>,
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

impl Hasher {
    /// A hasher that runs as many hashes at once as there are cores.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (work, queue) = mpsc::channel::<Work>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..cores {
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
        let stopped = || HashError("the hashing threads have stopped".into());
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |memory| {
            // The request went away while queued (a client that gave up):
            // nobody is waiting for this hash.
            if reply.is_closed() {
                return;
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(memory)))
                .unwrap_or_else(|_| Err(HashError("password hashing panicked".into())));
            let _ = reply.send(result);
        });
        self.work.send(work).map_err(|_| stopped())?;
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
                    return Err(HashError("stored hash is not Argon2id".into()));
                }
                let params = Params::try_from(&parsed).map_err(err)?;
                let expected = parsed
                    .hash
                    .ok_or_else(|| HashError("stored hash has no output".into()))?;
                let mut salt_buf = [0u8; 64];
                let salt = parsed
                    .salt
                    .ok_or_else(|| HashError("stored hash has no salt".into()))?
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
