//! Password hashing (argon2id, PHC strings) on a bounded pool off the async workers.
//!
//! argon2 at the default cost takes ~11 ms of one core and 19 MiB: it must never run on an
//! async worker, and it must not queue without bound either, or a burst of sign-ins becomes
//! a memory and latency bomb. `threads` dedicated threads hash, and at most `queue` more
//! jobs wait; past that callers get [`HashError::Busy`] and the server answers 503.
//!
//! Dedicated threads, not the shared blocking pool: the allocator keeps a freed 19 MiB
//! block in the arena of the thread that freed it, so hashing on whichever of dozens of
//! blocking threads is free grew the process by 19 MiB per thread that ever hashed (919 MiB
//! peak RSS in the benchmark). On a fixed set of threads the memory is bounded by
//! `threads` × the argon2 memory cost.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
    mpsc,
};

use argon2::{
    ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, PasswordHash, PasswordVerifier, Version,
    password_hash::phc::{Output, ParamsString, Salt},
};
use tokio::sync::Semaphore;

use crate::{
    config::HashParams,
    domain::{NewPassword, PasswordProblem, SubmittedPassword},
};

/// Why a hashing job did not run.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing pool is saturated")]
    Busy,
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone)]
pub struct Verification {
    pub matches: bool,
    /// A new hash at the current parameters, when the stored one used others.
    pub rehashed: Option<String>,
}

/// A job for the hashing threads.
type Job = Box<dyn FnOnce() + Send>;

/// The bounded hashing pool.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    /// Feeds the hashing threads; they end when the last clone of this is dropped.
    jobs: mpsc::Sender<Job>,
    /// Jobs running or waiting: at most `threads + queue`.
    admitted: Arc<Semaphore>,
    /// A hash of a random password, verified when the account does not exist so that an
    /// unknown address costs the same as a wrong password.
    dummy_hash: Arc<str>,
    /// argon2 verifications run so far (a tally the timing-parity tests read).
    verifications: Arc<AtomicU64>,
}

impl Hasher {
    /// Builds the pool and computes the dummy hash once (start-up only: it blocks).
    pub fn new(params: HashParams, threads: usize, queue: usize) -> Result<Self, HashError> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(32),
        )
        .map_err(|e| HashError::Internal(e.to_string()))?;
        let jobs = start_threads(threads.max(1))?;
        // The dummy hash is made on a hashing thread too: whichever thread hashes keeps
        // the argon2 memory, and only the hashing threads should.
        let (done, dummy_hash) = mpsc::channel();
        let dummy_params = params.clone();
        jobs.send(Box::new(move || {
            let dummy = crate::crypto::random_token_string(24);
            let _ = done.send(hash_with(&dummy_params, &dummy));
        }))
        .map_err(|_| HashError::Internal("the hashing threads have stopped".into()))?;
        let dummy_hash = dummy_hash
            .recv()
            .map_err(|_| HashError::Internal("the dummy hash could not be made".into()))??;
        Ok(Self {
            params,
            jobs,
            admitted: Arc::new(Semaphore::new(threads.max(1) + queue)),
            dummy_hash: dummy_hash.into(),
            verifications: Arc::default(),
        })
    }

    /// Runs `job` on a hashing thread, or refuses at once when `threads + queue` jobs
    /// are already running or waiting.
    async fn submit<T, F>(&self, job: F) -> Result<T, HashError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        let (done, result) = tokio::sync::oneshot::channel();
        // The permit travels with the job: if the caller goes away, the job still holds
        // its slot until it finishes, so the bound is never exceeded.
        let job: Job = Box::new(move || {
            // The caller went away while this waited (a client that gave up): nobody
            // wants the result, so its slot goes to the next job at once.
            if done.is_closed() {
                return;
            }
            let outcome = job();
            drop(admitted);
            let _ = done.send(outcome);
        });
        self.jobs
            .send(job)
            .map_err(|_| HashError::Internal("the hashing threads have stopped".into()))?;
        result
            .await
            .map_err(|_| HashError::Internal("a hashing job panicked".into()))
    }

    /// How many argon2 verifications this pool has run.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Checks the strength of a new password (zxcvbn costs CPU too) and hashes it.
    pub async fn check_and_hash(
        &self,
        password: NewPassword,
        email: String,
    ) -> Result<Result<String, PasswordProblem>, HashError> {
        let params = self.params.clone();
        self.submit(
            move || -> Result<Result<String, PasswordProblem>, HashError> {
                if let Err(problem) = password.check_strength(&email) {
                    return Ok(Err(problem));
                }
                hash_with(&params, password.expose()).map(Ok)
            },
        )
        .await?
    }

    /// Hashes a password without the strength check (CLI, tests of legacy accounts).
    pub async fn hash(&self, password: NewPassword) -> Result<String, HashError> {
        let params = self.params.clone();
        self.submit(move || hash_with(&params, password.expose()))
            .await?
    }

    /// Verifies a password against a stored hash, or against the dummy hash when there is
    /// no account, so both cases cost one argon2 run. Upgrades the hash when the stored
    /// parameters differ from the configured ones.
    pub async fn verify(
        &self,
        password: SubmittedPassword,
        stored: Option<String>,
    ) -> Result<Verification, HashError> {
        let params = self.params.clone();
        let dummy = self.dummy_hash.clone();
        let verifications = self.verifications.clone();
        self.submit(move || {
            // A missing account or an unreadable stored hash is checked against the dummy
            // hash: every path runs exactly one argon2 verification, so the time taken
            // says nothing about whether the account exists.
            let real = stored.as_deref().and_then(|s| PasswordHash::new(s).ok());
            let exists = real.is_some();
            let parsed = match real {
                Some(parsed) => parsed,
                None => {
                    PasswordHash::new(&dummy).map_err(|e| HashError::Internal(e.to_string()))?
                }
            };
            let verified = verify_once(password.expose(), &parsed, &params, &verifications);
            let matches = verified && exists;
            let rehashed = if matches && needs_rehash(&parsed, &params) {
                Some(hash_with(&params, password.expose())?)
            } else {
                None
            };
            Ok(Verification { matches, rehashed })
        })
        .await?
    }
}

/// Starts the hashing threads. Each takes the next job from the shared queue; a job that
/// panics is caught (its caller sees an error), so the pool never shrinks.
fn start_threads(n: usize) -> Result<mpsc::Sender<Job>, HashError> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..n {
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name(format!("latchkey-hash-{i}"))
            .spawn(move || {
                loop {
                    // The lock is held only while taking a job, never while running one.
                    let next = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = next else {
                        return; // every sender is gone: the pool was dropped
                    };
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map_err(|e| HashError::Internal(format!("cannot start a hashing thread: {e}")))?;
    }
    Ok(jobs)
}

/// One argon2 verification, counted.
/// Checks a password against a stored hash at the hash's own cost. The thread's reusable
/// memory serves hashes up to the configured cost (`current`); a costlier one (older
/// settings) gets memory of its own, freed afterwards, so no thread keeps more than the
/// configured cost and an absurd stored cost is a failed allocation, not an abort.
fn verify_once(password: &str, hash: &PasswordHash, current: &Params, count: &AtomicU64) -> bool {
    count.fetch_add(1, Ordering::Relaxed);
    if hash.algorithm != ARGON2ID_IDENT {
        // Not one of ours (an imported hash): the library's own check, allocations and all.
        return Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok();
    }
    let (Some(salt), Some(expected), Ok(params)) = (&hash.salt, &hash.hash, Params::try_from(hash))
    else {
        return false;
    };
    let Ok(version) = hash.version.map_or(Ok(Version::V0x13), Version::try_from) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let argon2 = Argon2::new(Algorithm::Argon2id, version, params);
    let computed = if blocks <= current.block_count() {
        with_memory(blocks, |memory| {
            argon2.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
        })
    } else {
        argon2.hash_password_into(password.as_bytes(), salt, &mut out)
    };
    // `Output` compares in constant time.
    computed.is_ok() && Output::new(&out).is_ok_and(|out| out == *expected)
}

fn hash_with(params: &Params, password: &str) -> Result<String, HashError> {
    let internal = |e: &dyn std::fmt::Display| HashError::Internal(e.to_string());
    let salt_bytes = crate::crypto::random_bytes::<16>();
    let mut out = [0u8; 32];
    with_memory(params.block_count(), |memory| {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(password.as_bytes(), &salt_bytes, &mut out, memory)
    })
    .map_err(|e| internal(&e))?;
    let hash = PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| internal(&e))?,
        salt: Some(Salt::new(&salt_bytes).map_err(|e| internal(&e))?),
        hash: Some(Output::new(&out).map_err(|e| internal(&e))?),
    };
    Ok(hash.to_string())
}

thread_local! {
    /// This thread's argon2 working memory, kept between hashes: allocating (and zeroing)
    /// 19 MiB per hash costs time, and the allocator keeps freed blocks of that size
    /// anyway. On the hashing threads this is the pool's whole memory: threads × cost.
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with at least `blocks` argon2 blocks of this thread's memory.
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        f(&mut memory[..blocks])
    })
}

fn needs_rehash(stored: &PasswordHash, params: &Params) -> bool {
    if stored.algorithm.as_str() != "argon2id" {
        return true;
    }
    match Params::try_from(stored) {
        Ok(p) => {
            p.m_cost() != params.m_cost()
                || p.t_cost() != params.t_cost()
                || p.p_cost() != params.p_cost()
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PasswordPolicy, SubmittedPassword};

    const CHEAP: HashParams = HashParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    fn new_pw(s: &str) -> NewPassword {
        NewPassword::parse(s, None, PasswordPolicy { min_chars: 8 }).unwrap()
    }

    #[test]
    fn hashes_interoperate_with_the_argon2_crates_own_format() {
        use argon2::PasswordHasher;
        let params = Params::new(1024, 1, 1, Some(32)).unwrap();
        let ours = hash_with(&params, "plum tractor violet").unwrap();
        let theirs = argon2_for_tests(&params)
            .hash_password(b"plum tractor violet")
            .unwrap()
            .to_string();
        for stored in [&ours, &theirs] {
            let parsed = PasswordHash::new(stored).unwrap();
            assert!(
                argon2_for_tests(&params)
                    .verify_password(b"plum tractor violet", &parsed)
                    .is_ok()
            );
            let count = AtomicU64::new(0);
            assert!(verify_once("plum tractor violet", &parsed, &params, &count));
            assert!(!verify_once(
                "plum tractor violef",
                &parsed,
                &params,
                &count
            ));
            // Verified under a cheaper configuration: the costlier stored hash still checks.
            let cheaper = Params::new(512, 1, 1, Some(32)).unwrap();
            assert!(verify_once(
                "plum tractor violet",
                &parsed,
                &cheaper,
                &count
            ));
        }
        // A second hash on the same thread reuses the memory and still differs (salt).
        assert_ne!(hash_with(&params, "plum tractor violet").unwrap(), ours);
    }

    fn argon2_for_tests(params: &Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
    }

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let h = Hasher::new(CHEAP, 1, 4).unwrap();
        let hash = h.hash(new_pw("plum tractor violet")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        let ok = h
            .verify(
                SubmittedPassword::parse("plum tractor violet").unwrap(),
                Some(hash.clone()),
            )
            .await
            .unwrap();
        assert!(ok.matches && ok.rehashed.is_none());
        let bad = h
            .verify(
                SubmittedPassword::parse("plum tractor violef").unwrap(),
                Some(hash),
            )
            .await
            .unwrap();
        assert!(!bad.matches);
    }

    #[tokio::test]
    async fn every_check_runs_exactly_one_argon2_verification() {
        let h = Hasher::new(CHEAP, 1, 4).unwrap();
        let hash = h.hash(new_pw("plum tractor violet")).await.unwrap();
        let pw = || SubmittedPassword::parse("wrong guess here").unwrap();
        for stored in [Some(hash), None, Some("not a PHC string".to_owned())] {
            let before = h.verifications();
            let v = h.verify(pw(), stored.clone()).await.unwrap();
            assert!(!v.matches);
            assert_eq!(h.verifications(), before + 1, "{stored:?}");
        }
    }

    #[tokio::test]
    async fn an_unknown_account_never_matches_even_the_dummy_password() {
        let h = Hasher::new(CHEAP, 1, 4).unwrap();
        let v = h
            .verify(SubmittedPassword::parse("anything at all").unwrap(), None)
            .await
            .unwrap();
        assert!(!v.matches);
    }

    #[tokio::test]
    async fn changed_parameters_trigger_a_rehash_at_sign_in() {
        let old = Hasher::new(CHEAP, 1, 4).unwrap();
        let hash = old.hash(new_pw("plum tractor violet")).await.unwrap();
        let new = Hasher::new(
            HashParams {
                memory_kib: 2048,
                ..CHEAP
            },
            1,
            4,
        )
        .unwrap();
        let v = new
            .verify(
                SubmittedPassword::parse("plum tractor violet").unwrap(),
                Some(hash),
            )
            .await
            .unwrap();
        assert!(v.matches);
        assert!(v.rehashed.unwrap().contains("m=2048"));
    }

    #[tokio::test]
    async fn a_saturated_pool_refuses_instead_of_queueing() {
        let h = Hasher::new(CHEAP, 1, 0).unwrap();
        let slow = h.clone();
        let blocker = tokio::spawn(async move {
            slow.submit(|| std::thread::sleep(std::time::Duration::from_millis(300)))
                .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(matches!(
            h.hash(new_pw("plum tractor violet")).await,
            Err(HashError::Busy)
        ));
        blocker.await.unwrap().unwrap();
    }
}
