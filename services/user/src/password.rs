//! Argon2id password hashing, off the async runtime, with bounded concurrency.
//!
//! Parameters are OWASP's minimum for Argon2id: m = 19 MiB, t = 2, p = 1. The
//! PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) is what the
//! store keeps. Each hash costs ~19 MiB and tens of milliseconds of CPU, so at
//! most `workers` run at once and at most `queue` more wait; past that a call
//! is refused at once (`ResourceExhausted`) instead of piling up: a login
//! flood slows logins down, it does not take the service down.
//!
//! Unknown users are verified against a dummy hash, so "no such user" and
//! "wrong password" take the same time.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// OWASP's minimum memory cost, KiB.
pub const MEMORY_KIB: u32 = 19 * 1024;
/// OWASP's minimum iterations at that memory.
pub const ITERATIONS: u32 = 2;
/// Lanes.
pub const PARALLELISM: u32 = 1;

/// Why hashing or verifying did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks in progress; try again shortly")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Hashes and verifies passwords on blocking threads, a bounded number at once.
#[derive(Clone, Debug)]
pub struct Hasher {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    dummy: Arc<str>,
}

fn argon2() -> Argon2<'static> {
    // The parameters are constants within Argon2's limits.
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .unwrap_or_else(|_| Params::default());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(password: &[u8]) -> Result<String, HashError> {
    argon2()
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

impl Hasher {
    /// At most `workers` hashes at once, `queue` more waiting.
    pub fn new(workers: usize, queue: usize) -> Result<Hasher, HashError> {
        let workers = workers.max(1);
        // A hash of random bytes nobody knows: verifying against it costs
        // what verifying a real user's password costs.
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| HashError::Failed(e.to_string()))?;
        let dummy = hash_blocking(&secret)?;
        Ok(Hasher {
            running: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(Semaphore::new(workers + queue)),
            dummy: dummy.into(),
        })
    }

    /// Workers = available cores, queue = 16 per worker.
    pub fn with_defaults() -> Result<Hasher, HashError> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Hasher::new(cores, cores * 16)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        let _running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Busy)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| HashError::Failed(e.to_string()))
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = password.as_bytes().to_vec();
        self.run(move || hash_blocking(&password)).await?
    }

    /// Whether `password` matches `hash`; `None` for `hash` checks against the
    /// dummy (an unknown user) and is always false, in the same time.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash: String = hash.map_or_else(|| self.dummy.to_string(), str::to_string);
        let password = password.as_bytes().to_vec();
        let matches = self
            .run(move || argon2().verify_password(&password, hash.as_str()).is_ok())
            .await?;
        Ok(known && matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let hasher = Hasher::new(2, 4).expect("hasher");
        let hash = hasher.hash("correct horse").await.expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
        assert!(
            hasher
                .verify("correct horse", Some(&hash))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("wrong horse", Some(&hash))
                .await
                .expect("verify")
        );
        assert!(!hasher.verify("correct horse", None).await.expect("verify"));
        let again = hasher.hash("correct horse").await.expect("hash");
        assert_ne!(hash, again, "salted");
    }

    #[tokio::test]
    async fn a_flood_is_refused_not_queued_without_bound() {
        let hasher = Hasher::new(1, 1).expect("hasher");
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let h = hasher.clone();
                tokio::spawn(async move { h.hash("password123").await })
            })
            .collect();
        let mut busy = 0;
        let mut done = 0;
        for call in calls {
            match call.await.expect("join") {
                Ok(_) => done += 1,
                Err(HashError::Busy) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(done >= 2, "{done} done");
        assert!(busy >= 1, "nothing was refused");
    }
}
