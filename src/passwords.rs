//! Argon2id password hashing, off the async workers and bounded in parallelism.
//!
//! Each hash takes 19 MiB and tens of milliseconds of one core (OWASP's
//! parameters), so hashes run on the blocking pool behind a semaphore sized to
//! the cores: more at once would only add memory and queueing, not throughput.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{OnceCell, Semaphore};

use crate::domain::Password;

/// Hashing could not be done (the blocking pool or the RNG failed).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes and verifies passwords with Argon2id.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    dummy: Arc<OnceCell<String>>,
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

fn argon2() -> Argon2<'static> {
    // OWASP: m = 19 MiB, t = 2, p = 1. These constants are valid for Params::new,
    // which only fails on out-of-range values.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl Hasher {
    /// A hasher that runs as many hashes at once as there are cores.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            permits: Arc::new(Semaphore::new(cores)),
            dummy: Arc::new(OnceCell::new()),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError(e.to_string()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| HashError(e.to_string()))?
    }

    /// Hashes a password that passed the policy; returns the PHC string.
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        self.hash_text(password.expose().to_owned()).await
    }

    async fn hash_text(&self, password: String) -> Result<String, HashError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError(e.to_string()))
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
            .run(move || {
                let parsed = PasswordHash::new(&phc).map_err(|e| HashError(e.to_string()))?;
                Ok(argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok())
            })
            .await?;
        Ok(real && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountName, HostName};

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
        assert!(!h.verify("wrong".into(), Some(phc)).await.unwrap());
        assert!(!h
            .verify("invite-server dummy password".into(), None)
            .await
            .unwrap());
    }
}
