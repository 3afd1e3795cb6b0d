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
//!
//! The 19 MiB is resident only while a hash runs. The working memory is a
//! buffer we allocate with a capacity above glibc's largest dynamic mmap
//! threshold (32 MiB on 64-bit), so it is always mmapped and given back to
//! the OS on free. Had we let `argon2` allocate exactly 19 MiB, the first
//! free (the dummy hash at start-up) would raise glibc's mmap threshold to
//! 19 MiB, every later block would come from a malloc arena, and the process
//! would keep ~19 MiB more resident for ever after the first hash.

use std::sync::Arc;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

/// OWASP's minimum memory cost, KiB.
pub const MEMORY_KIB: u32 = 19 * 1024;
/// OWASP's minimum iterations at that memory.
pub const ITERATIONS: u32 = 2;
/// Lanes.
pub const PARALLELISM: u32 = 1;

/// Salt length in bytes: what `argon2`'s `PasswordHasher::hash_password` uses.
const SALT_LEN: usize = 16;
/// Hash length in bytes: Argon2's default output length.
const OUTPUT_LEN: usize = Params::DEFAULT_OUTPUT_LEN;

/// The most a stored hash may ask of `verify`, so that a hostile or corrupt
/// row cannot ask for gigabytes or hours: a few times OWASP's settings.
const MAX_MEMORY_KIB: u32 = 64 * 1024;
const MAX_ITERATIONS: u32 = 16;
const MAX_PARALLELISM: u32 = 16;

/// Capacity, in 1 KiB blocks, of the working memory of a hash: more than
/// glibc's largest dynamic mmap threshold (`DEFAULT_MMAP_THRESHOLD_MAX`,
/// 32 MiB on 64-bit), so glibc always mmaps it, munmaps it on free and never
/// raises its threshold because of it. Only the first `block_count` blocks are
/// touched, so the rest costs address space, not memory.
const WORKING_MEMORY_BLOCKS: usize = 33 * 1024;

/// Why hashing or verifying did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks in progress; try again shortly")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

fn failed(what: &str, e: impl std::fmt::Display) -> HashError {
    HashError::Failed(format!("{what}: {e}"))
}

/// Hashes and verifies passwords on blocking threads, a bounded number at once.
#[derive(Clone, Debug)]
pub struct Hasher {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    dummy: Arc<str>,
}

fn owasp_params() -> Result<Params, HashError> {
    Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, Some(OUTPUT_LEN))
        .map_err(|e| failed("parameters", e))
}

/// Argon2 working memory for `params`: `block_count` blocks long, at least
/// `WORKING_MEMORY_BLOCKS` blocks of capacity (see there).
fn working_memory(params: &Params) -> Result<Vec<Block>, HashError> {
    let blocks = params.block_count();
    let mut memory = Vec::new();
    memory
        .try_reserve_exact(blocks.max(WORKING_MEMORY_BLOCKS))
        .map_err(|e| failed("working memory", e))?;
    memory.resize(blocks, Block::new());
    Ok(memory)
}

/// Runs `context` into `out`; the working memory is freed on return.
fn argon2_into(
    context: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), HashError> {
    let memory = working_memory(context.params())?;
    context
        .hash_password_into_with_memory(password, salt, out, memory)
        .map_err(|e| failed("argon2", e))
}

fn hash_blocking(password: &[u8]) -> Result<String, HashError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| failed("salt", e))?;
    let params = owasp_params()?;
    let version = Version::V0x13;
    let mut out = [0u8; OUTPUT_LEN];
    argon2_into(
        &Argon2::new(Algorithm::Argon2id, version, params.clone()),
        password,
        &salt,
        &mut out,
    )?;
    let phc = PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(version.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed("parameters", e))?,
        salt: Some(Salt::new(&salt).map_err(|e| failed("salt", e))?),
        hash: Some(Output::new(&out).map_err(|e| failed("output", e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`, hashed with the
/// algorithm version, parameters, salt and output length `stored` names.
/// Anything but Argon2id within our cost limits is an error.
fn verify_blocking(password: &[u8], stored: &str) -> Result<bool, HashError> {
    let unusable = |why: String| HashError::Failed(format!("stored password hash: {why}"));
    let phc = PasswordHash::new(stored).map_err(|e| unusable(format!("not a PHC string: {e}")))?;
    if phc.algorithm != ARGON2ID_IDENT {
        return Err(unusable(format!(
            "algorithm {} is not supported, only argon2id",
            phc.algorithm
        )));
    }
    let version = phc
        .version
        .map_or(Ok(Version::default()), Version::try_from)
        .map_err(|e| unusable(format!("version: {e}")))?;
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return Err(unusable("no salt or no hash".to_string()));
    };
    // The output length comes from `expected`.
    let params = Params::try_from(&phc).map_err(|e| unusable(format!("parameters: {e}")))?;
    if params.m_cost() > MAX_MEMORY_KIB
        || params.t_cost() > MAX_ITERATIONS
        || params.p_cost() > MAX_PARALLELISM
    {
        return Err(unusable(format!(
            "costs m={},t={},p={} are above the limit m={MAX_MEMORY_KIB},t={MAX_ITERATIONS},p={MAX_PARALLELISM}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        )));
    }
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let out = buffer
        .get_mut(..expected.len())
        .ok_or_else(|| unusable("hash too long".to_string()))?;
    argon2_into(
        &Argon2::new(Algorithm::Argon2id, version, params),
        password,
        salt,
        out,
    )?;
    let computed = Output::new(out).map_err(|e| failed("output", e))?;
    // `Output`'s equality is constant-time.
    Ok(computed == *expected)
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
    /// dummy (an unknown user) and is always false, in the same time. A `hash`
    /// that cannot be checked (not an Argon2id PHC string, or costs above our
    /// limits) is `Failed`, not a mismatch.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash: String = hash.map_or_else(|| self.dummy.to_string(), str::to_string);
        let password = password.as_bytes().to_vec();
        let matches = self
            .run(move || verify_blocking(&password, &hash))
            .await??;
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

    use argon2::password_hash::{CustomizedPasswordHasher, PasswordHasher, PasswordVerifier};

    fn owasp_argon2() -> Argon2<'static> {
        Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            owasp_params().expect("params"),
        )
    }

    #[test]
    fn working_memory_is_always_mmapped_and_only_as_long_as_needed() {
        let params = owasp_params().expect("params");
        let memory = working_memory(&params).expect("memory");
        assert_eq!(memory.len(), params.block_count());
        assert_eq!(memory.len() * Block::SIZE, 19 << 20);
        // glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit is 32 MiB.
        assert!(memory.capacity() * Block::SIZE > 32 << 20);
    }

    #[test]
    fn our_hashes_have_the_format_of_argon2s_and_verify_with_argon2() {
        let ours = hash_blocking(b"correct horse").expect("hash");
        let theirs = owasp_argon2()
            .hash_password(b"correct horse")
            .expect("hash")
            .to_string();
        let fields = |s: &str| -> Vec<usize> { s.split('$').map(str::len).collect() };
        assert_eq!(fields(&ours), fields(&theirs), "{ours} vs {theirs}");
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let argon2 = Argon2::default();
        assert_eq!(
            argon2.verify_password(b"correct horse", ours.as_str()),
            Ok(())
        );
        assert!(
            argon2
                .verify_password(b"wrong horse", ours.as_str())
                .is_err()
        );
    }

    #[test]
    fn argon2s_hashes_verify_with_ours_honouring_their_parameters() {
        let theirs = owasp_argon2()
            .hash_password(b"correct horse")
            .expect("hash")
            .to_string();
        assert!(verify_blocking(b"correct horse", &theirs).expect("verify"));
        assert!(!verify_blocking(b"wrong horse", &theirs).expect("verify"));

        // Other costs, lanes, version and output length than ours.
        let params = Params::new(64, 3, 2, Some(16)).expect("params");
        let other = Argon2::default()
            .hash_password_customized(
                b"correct horse",
                b"sixteen byte slt",
                Some("argon2id"),
                Some(0x10),
                params,
            )
            .expect("hash")
            .to_string();
        assert!(other.starts_with("$argon2id$v=16$m=64,t=3,p=2$"), "{other}");
        assert!(verify_blocking(b"correct horse", &other).expect("verify"));
        assert!(!verify_blocking(b"wrong horse", &other).expect("verify"));
        // Changing any parameter changes the hash.
        let tampered = other.replace("t=3", "t=2");
        assert!(!verify_blocking(b"correct horse", &tampered).expect("verify"));
    }

    #[test]
    fn hashes_we_cannot_check_are_errors_not_panics() {
        let argon2i = Argon2::default()
            .hash_password_customized(
                b"pw",
                b"sixteen byte slt",
                Some("argon2i"),
                None,
                Params::new(64, 1, 1, None).expect("params"),
            )
            .expect("hash")
            .to_string();
        let good = hash_blocking(b"pw").expect("hash");
        let (head, salt_and_hash) = good.split_at("$argon2id$v=19$m=19456,t=2,p=1".len());
        let with = |params: &str| format!("$argon2id$v=19${params}{salt_and_hash}");
        let cases = [
            String::new(),
            "garbage".to_string(),
            "$".to_string(),
            "$argon2id".to_string(),
            head.to_string(),
            format!("{head}$c2l4dGVlbiBieXRlIHNsdA"),
            format!("{good}$trailing"),
            good.replace('$', "$$"),
            good.replace("v=19", "v=99"),
            format!("{}!!", &good[..good.len() - 2]),
            argon2i.clone(),
            argon2i.replace("argon2i", "argon2d"),
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".to_string(),
            "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E".to_string(),
            with("m=4294967295,t=2,p=1"),
            with("m=19456,t=4294967295,p=1"),
            with("m=19456,t=2,p=16777215"),
            with("m=65537,t=2,p=1"),
            with("m=19456,t=17,p=1"),
            with("m=4,t=2,p=1"),
            with("m=19456,t=0,p=1"),
            with("m=19456,t=2,p=1,x=1"),
            with("m=-1,t=2,p=1"),
        ];
        for case in &cases {
            match verify_blocking(b"pw", case) {
                Err(HashError::Failed(why)) => assert!(!why.is_empty()),
                other => panic!("{case:?}: {other:?}"),
            }
        }
        // A missing parameter means Argon2's default, as for argon2's verifier.
        let no_p = with("m=19456,t=2");
        assert_eq!(
            Argon2::default().verify_password(b"pw", no_p.as_str()),
            Ok(())
        );
        assert!(verify_blocking(b"pw", &no_p).expect("verify"));
    }

    #[tokio::test]
    async fn verify_reports_a_hash_it_cannot_check() {
        let hasher = Hasher::new(1, 4).expect("hasher");
        let huge = "$argon2id$v=19$m=4194304,t=2,p=1$c2l4dGVlbiBieXRlIHNsdA$\
                    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let err = hasher.verify("pw", Some(huge)).await.expect_err("refused");
        assert!(err.to_string().contains("above the limit"), "{err}");
        let err = hasher
            .verify(
                "pw",
                Some("$argon2i$v=19$m=64,t=1,p=1$c2l4dGVlbiBieXRlIHNsdA$AAAAAAAAAAAAAAAAAAAAAA"),
            )
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("only argon2id"), "{err}");
    }
}
