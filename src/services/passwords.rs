//! Password hashing (argon2id, PHC strings) on a bounded pool off the async workers.
//!
//! argon2 at the default cost takes ~11 ms of one core and 19 MiB: it must never run on an
//! async worker, and it must not queue without bound either, or a burst of sign-ins becomes
//! a memory and latency bomb. At most `threads` hashes run at once and at most `queue`
//! more wait; past that callers get [`HashError::Busy`] and the server answers 503.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
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

/// The bounded hashing pool.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    /// A hash of a random password, verified when the account does not exist so that an
    /// unknown address costs the same as a wrong password.
    dummy_hash: Arc<str>,
    /// argon2 verifications run so far (a tally the timing-parity tests read).
    verifications: Arc<AtomicU64>,
}

impl Hasher {
    /// Builds the pool; computes the dummy hash once (start-up only).
    pub fn new(params: HashParams, threads: usize, queue: usize) -> Result<Self, HashError> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(32),
        )
        .map_err(|e| HashError::Internal(e.to_string()))?;
        let dummy = crate::crypto::random_token_string(24);
        let dummy_hash = hash_with(&params, &dummy)?;
        Ok(Self {
            params,
            running: Arc::new(Semaphore::new(threads.max(1))),
            admitted: Arc::new(Semaphore::new(threads.max(1) + queue)),
            dummy_hash: dummy_hash.into(),
            verifications: Arc::default(),
        })
    }

    /// Runs `job` on the blocking pool once a hashing slot is free.
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
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Busy)?;
        // The permits travel with the job: if the caller goes away, the hash still holds
        // its slot until it finishes, so the bound is never exceeded.
        tokio::task::spawn_blocking(move || {
            let result = job();
            drop((running, admitted));
            result
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))
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
            let verified = verify_once(&params, password.expose(), &parsed, &verifications);
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

/// One argon2 verification, counted.
fn verify_once(params: &Params, password: &str, hash: &PasswordHash, count: &AtomicU64) -> bool {
    count.fetch_add(1, Ordering::Relaxed);
    argon2_for(params)
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

fn argon2_for(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_with(params: &Params, password: &str) -> Result<String, HashError> {
    argon2_for(params)
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError::Internal(e.to_string()))
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
