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
//!
//! The pool is fair per client (SPEC §9): one client (an IPv4 address, an IPv6 /64) holds
//! at most an eighth of its slots, and the threads take jobs from the waiting clients in
//! turn, not in arrival order. A client that floods it with sign-ups is refused past its
//! share and waits behind itself; a sign-in from anyone else runs next.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
};

use crate::{
    config::HashParams,
    domain::{NewPassword, PasswordProblem, SubmittedPassword},
};
use argon2::{
    ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, PasswordHash, PasswordVerifier, Version,
    password_hash::phc::{Output, ParamsString, Salt},
};

use super::{ClientInfo, limits::client_bucket};

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

/// Whose jobs are whose: a client's bucket, or the server's own (CLI, start-up).
type Owner = Arc<str>;

/// The queue the hashing threads share: one lane per client with jobs waiting, served in
/// turn, and how many slots each client holds (running or waiting).
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    /// Jobs running or waiting, at most: `threads + queue`.
    capacity: usize,
    /// Slots one client may hold.
    share: usize,
}

#[derive(Default)]
struct QueueState {
    lanes: VecDeque<(Owner, VecDeque<Job>)>,
    held: HashMap<Owner, usize>,
    admitted: usize,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic never happens while the lock is held (jobs run outside it), so a
        // poisoned lock still guards consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for `owner`, if the pool and the owner's share have one.
    fn admit(self: &Arc<Self>, owner: &Owner) -> Option<Slot> {
        let mut state = self.lock();
        let held = state.held.get(owner).copied().unwrap_or(0);
        if state.closed || state.admitted >= self.capacity || held >= self.share {
            return None;
        }
        state.admitted += 1;
        state.held.insert(owner.clone(), held + 1);
        Some(Slot {
            queue: Arc::clone(self),
            owner: owner.clone(),
        })
    }

    /// Queues a job at the back of its owner's lane.
    fn push(&self, owner: Owner, job: Job) {
        let mut state = self.lock();
        match state.lanes.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, lane)) => lane.push_back(job),
            None => state.lanes.push_back((owner, VecDeque::from([job]))),
        }
        drop(state);
        self.ready.notify_one();
    }

    /// The next job, taking lanes in turn; `None` once the pool is closed.
    fn next(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if state.closed {
                // Dropped outside the lock: a dropped job releases its slot, which locks.
                let abandoned = std::mem::take(&mut state.lanes);
                drop(state);
                drop(abandoned);
                return None;
            }
            if let Some((owner, mut lane)) = state.lanes.pop_front() {
                let job = lane.pop_front();
                if !lane.is_empty() {
                    state.lanes.push_back((owner, lane));
                }
                if let Some(job) = job {
                    return Some(job);
                }
                continue;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// A slot in the pool, held by a job from admission until it finishes (or is dropped
/// unrun), so the bounds hold even when the caller goes away.
struct Slot {
    queue: Arc<Queue>,
    owner: Owner,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.admitted = state.admitted.saturating_sub(1);
        if let Some(held) = state.held.get_mut(&self.owner) {
            *held -= 1;
            if *held == 0 {
                state.held.remove(&self.owner);
            }
        }
    }
}

/// Closes the queue (the threads end) when the last clone of the [`Hasher`] is dropped.
struct Closer(Arc<Queue>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The bounded hashing pool.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    queue: Arc<Queue>,
    _closer: Arc<Closer>,
    /// A hash of a random password, verified when the account does not exist so that an
    /// unknown address costs the same as a wrong password.
    dummy_hash: Arc<str>,
    /// argon2 verifications run so far (a tally the timing-parity tests read).
    verifications: Arc<AtomicU64>,
}

/// The owner of jobs without a client.
const SERVER: &str = "-";

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
        let capacity = threads.max(1) + queue;
        let queue = Arc::new(Queue {
            state: Mutex::default(),
            ready: Condvar::new(),
            capacity,
            share: fair_share(capacity),
        });
        start_threads(threads.max(1), &queue)?;
        let closer = Arc::new(Closer(Arc::clone(&queue)));
        // The dummy hash is made on a hashing thread too: whichever thread hashes keeps
        // the argon2 memory, and only the hashing threads should.
        let (done, dummy_hash) = mpsc::channel();
        let dummy_params = params.clone();
        queue.push(
            SERVER.into(),
            Box::new(move || {
                let dummy = crate::crypto::random_token_string(24);
                let _ = done.send(hash_with(&dummy_params, &dummy));
            }),
        );
        let dummy_hash = dummy_hash
            .recv()
            .map_err(|_| HashError::Internal("the dummy hash could not be made".into()))??;
        Ok(Self {
            params,
            queue,
            _closer: closer,
            dummy_hash: dummy_hash.into(),
            verifications: Arc::default(),
        })
    }

    /// Runs `job` on a hashing thread, or refuses at once when `threads + queue` jobs are
    /// already running or waiting, or when `client` already holds its share of them.
    async fn submit<T, F>(&self, client: Option<&ClientInfo>, job: F) -> Result<T, HashError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let owner: Owner = client.map_or_else(|| SERVER.into(), |c| client_bucket(&c.ip).into());
        let slot = self.queue.admit(&owner).ok_or(HashError::Busy)?;
        let (done, result) = tokio::sync::oneshot::channel();
        // The slot travels with the job: if the caller goes away, the job still holds it
        // until it finishes, so the bound is never exceeded.
        let job: Job = Box::new(move || {
            // The caller went away while this waited (a client that gave up): nobody
            // wants the result, so its slot goes to the next job at once.
            if done.is_closed() {
                return;
            }
            let outcome = job();
            drop(slot);
            let _ = done.send(outcome);
        });
        self.queue.push(owner, job);
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
        client: Option<&ClientInfo>,
    ) -> Result<Result<String, PasswordProblem>, HashError> {
        let params = self.params.clone();
        self.submit(
            client,
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
        self.submit(None, move || hash_with(&params, password.expose()))
            .await?
    }

    /// Verifies a password against a stored hash, or against the dummy hash when there is
    /// no account, so both cases cost one argon2 run. Upgrades the hash when the stored
    /// parameters differ from the configured ones.
    pub async fn verify(
        &self,
        password: SubmittedPassword,
        stored: Option<String>,
        client: Option<&ClientInfo>,
    ) -> Result<Verification, HashError> {
        let params = self.params.clone();
        let dummy = self.dummy_hash.clone();
        let verifications = self.verifications.clone();
        self.submit(client, move || {
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

/// One client's share of `capacity` slots: an eighth, and at least one.
fn fair_share(capacity: usize) -> usize {
    (capacity / 8).max(1)
}

/// Starts the hashing threads. Each takes the next job from the shared queue; a job that
/// panics is caught (its caller sees an error), so the pool never shrinks.
fn start_threads(n: usize, queue: &Arc<Queue>) -> Result<(), HashError> {
    for i in 0..n {
        let queue = Arc::clone(queue);
        std::thread::Builder::new()
            .name(format!("latchkey-hash-{i}"))
            .spawn(move || {
                while let Some(job) = queue.next() {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map_err(|e| HashError::Internal(format!("cannot start a hashing thread: {e}")))?;
    }
    Ok(())
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
                None,
            )
            .await
            .unwrap();
        assert!(ok.matches && ok.rehashed.is_none());
        let bad = h
            .verify(
                SubmittedPassword::parse("plum tractor violef").unwrap(),
                Some(hash),
                None,
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
            let v = h.verify(pw(), stored.clone(), None).await.unwrap();
            assert!(!v.matches);
            assert_eq!(h.verifications(), before + 1, "{stored:?}");
        }
    }

    #[tokio::test]
    async fn an_unknown_account_never_matches_even_the_dummy_password() {
        let h = Hasher::new(CHEAP, 1, 4).unwrap();
        let v = h
            .verify(
                SubmittedPassword::parse("anything at all").unwrap(),
                None,
                None,
            )
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
                None,
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
            slow.submit(None, || {
                std::thread::sleep(std::time::Duration::from_millis(300))
            })
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(matches!(
            h.hash(new_pw("plum tractor violet")).await,
            Err(HashError::Busy)
        ));
        blocker.await.unwrap().unwrap();
    }

    fn client(ip: &str) -> ClientInfo {
        ClientInfo {
            ip: ip.to_owned(),
            user_agent: String::new(),
        }
    }

    #[tokio::test]
    async fn one_client_holds_at_most_its_share_and_others_are_served_in_turn() {
        // 64 slots: a client's share is 8.
        let h = Hasher::new(CHEAP, 1, 63).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let blocker = {
            let h = h.clone();
            tokio::spawn(async move {
                h.submit(None, || {
                    std::thread::sleep(std::time::Duration::from_millis(300))
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let job = |ip: &'static str, n: usize| {
            let (h, order) = (h.clone(), order.clone());
            async move {
                h.submit(Some(&client(ip)), move || {
                    order.lock().unwrap().push((ip, n));
                })
                .await
            }
        };
        let mut flood = Vec::new();
        for n in 0..8 {
            flood.push(tokio::spawn(job("198.51.100.1", n)));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The ninth from the same client is refused.
        assert!(matches!(job("198.51.100.1", 8).await, Err(HashError::Busy)));
        let victim = tokio::spawn(job("203.0.113.9", 0));
        blocker.await.unwrap().unwrap();
        victim.await.unwrap().unwrap();
        for f in flood {
            f.await.unwrap().unwrap();
        }
        let order = order.lock().unwrap().clone();
        let victim_at = order
            .iter()
            .position(|(ip, _)| *ip == "203.0.113.9")
            .unwrap();
        assert!(
            victim_at <= 1,
            "the other client waited behind the flood: {order:?}"
        );
        // Once done, the flooding client has its share back.
        job("198.51.100.1", 9).await.unwrap();
    }
}
