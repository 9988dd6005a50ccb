//! Storage: one set of diesel queries over SQLite and Postgres.
//!
//! Everything backend-specific (connection set-up, pragmas, migrations, row locking) lives
//! in this module; the rest of the code sees [`DbPool`] and the query functions of the
//! per-table files, and never learns which database it has.

pub mod events;
pub mod keyset;
pub mod outbox;
pub mod rate_limits;
pub mod reset_requests;
pub mod reset_tokens;
pub mod schema;
pub mod sessions;
pub mod users;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{NaiveDateTime, Timelike, Utc};
use diesel::{
    Connection, ConnectionError, PgConnection, SqliteConnection, connection::SimpleConnection,
    result::Error as DieselError,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::DatabaseUrl;

/// A connection to either backend; diesel generates the shared query plumbing.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// The pool every request and worker draws from, and what it has learnt about whether
/// the database can be reached.
///
/// r2d2 alone makes every caller wait out the full connection timeout while the database
/// is down, so a request would hang for seconds before its 503 and `/readyz` would answer
/// after a load balancer gave up. Here the first failed connection (or a connection that
/// breaks mid-query) marks the database down; from then on one caller at a time probes
/// with a short timeout and every other caller is told at once, until a connection works.
#[derive(Clone)]
pub struct DbPool {
    pool: r2d2::Pool<ConnectionManager>,
    health: Arc<Health>,
}

/// A connection checked out of the pool; it goes back when dropped.
pub type PooledConnection = r2d2::PooledConnection<ConnectionManager>;

/// How long a caller waits for a connection while the database is up but every
/// connection is busy.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting caller looks whether the database was found down meanwhile.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// How long the one probing caller waits for a connection while the database is down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether the database is known to be unreachable, shared by the pool and its manager.
#[derive(Debug, Default)]
struct Health {
    down: AtomicBool,
    /// Held by the one caller probing while the database is down.
    probing: AtomicBool,
}

impl Health {
    fn mark_down(&self, why: &dyn std::fmt::Display) {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %why, "database unreachable; answering 503 until it returns");
        }
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("database reachable again");
        }
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

impl DbPool {
    /// Checks out a connection, blocking: call it off the async workers (as [`run`] does).
    pub fn get(&self) -> Result<PooledConnection, DbError> {
        self.get_within(CHECKOUT_TIMEOUT)
    }

    /// True while the database is known to be unreachable.
    pub fn is_down(&self) -> bool {
        self.health.is_down()
    }

    fn get_within(&self, timeout: Duration) -> Result<PooledConnection, DbError> {
        if self.health.is_down() {
            return self.probe(timeout.min(PROBE_TIMEOUT));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(WAIT_SLICE);
            match self.pool.get_timeout(slice) {
                Ok(conn) => return Ok(conn),
                Err(_) if self.health.is_down() => return Err(DbError::Down),
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(_) => continue,
            }
        }
    }

    /// While the database is down, one caller tries for a connection; the rest are
    /// answered at once.
    fn probe(&self, timeout: Duration) -> Result<PooledConnection, DbError> {
        if self
            .health
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(DbError::Down);
        }
        let result = self.pool.get_timeout(timeout);
        self.health.probing.store(false, Ordering::Release);
        match result {
            Ok(conn) => {
                self.health.mark_up();
                Ok(conn)
            }
            Err(_) => Err(DbError::Down),
        }
    }

    /// Notes an error from work done on a connection: a connection that broke means the
    /// database went away.
    fn observe<T>(&self, result: &Result<T, DbError>) {
        if let Err(e) = result
            && e.is_connection_lost()
        {
            self.health.mark_down(e);
        }
    }
}

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database query failed: {0}")]
    Query(#[from] DieselError),
    #[error("no database connection available: {0}")]
    Pool(#[from] r2d2::Error),
    /// The database is known to be unreachable (answered without waiting; see [`DbPool`]).
    #[error("the database is unreachable")]
    Down,
    #[error("database task was cancelled")]
    Cancelled,
    #[error("migration failed: {0}")]
    Migration(String),
    /// Something other than the database failed inside a transaction (it was rolled back).
    #[error("{0}")]
    Other(String),
}

impl DbError {
    /// True when no connection could be had: the database is down or unreachable (the
    /// caller should answer 503, not 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Pool(_) | Self::Down) || self.is_connection_lost()
    }

    /// True when the connection broke under the query: the server shut down, restarted
    /// or the network went away (the work was not done, or its transaction rolled back).
    fn is_connection_lost(&self) -> bool {
        use diesel::result::DatabaseErrorKind;
        match self {
            Self::Query(DieselError::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand
                ) || {
                    // SQLSTATE 57P01-57P03 (admin shutdown, crash shutdown, cannot connect
                    // now) arrive as "unknown" kinds; libpq's text is all diesel keeps.
                    let message = info.message();
                    message.starts_with("terminating connection")
                        || message.contains("server closed the connection")
                        || message.contains("the database system is shutting down")
                        || message.contains("the database system is starting up")
                }
            }
            _ => false,
        }
    }

    /// True when a unique constraint refused the write (both backends map to this).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Self::Query(DieselError::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

/// Opens connections for the backend named by the URL scheme. diesel's own
/// `MultiConnection::establish` tries every backend in turn and loses libpq's real error.
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    url: DatabaseUrl,
    health: Arc<Health>,
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = AnyConnection;
    type Error = ConnectionError;

    fn connect(&self) -> Result<AnyConnection, ConnectionError> {
        let result = self.open();
        match &result {
            Ok(_) => self.health.mark_up(),
            Err(e) => self.health.mark_down(e),
        }
        result
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), ConnectionError> {
        conn.batch_execute("SELECT 1")
            .map_err(ConnectionError::CouldntSetupConfiguration)
    }

    /// A connection is dropped rather than reused when its thread panicked or diesel's
    /// transaction manager is in a broken state (as diesel's own r2d2 manager does).
    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        use diesel::connection::TransactionManager;
        std::thread::panicking()
            || <<AnyConnection as Connection>::TransactionManager as TransactionManager<
                AnyConnection,
            >>::is_broken_transaction_manager(conn)
    }
}

impl ConnectionManager {
    fn open(&self) -> Result<AnyConnection, ConnectionError> {
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                let mut conn = PgConnection::establish(url.expose())?;
                conn.batch_execute("SET TIME ZONE 'UTC'")
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(AnyConnection::Postgresql(conn))
            }
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
                // WAL lets readers run beside the writer; busy_timeout waits for the write
                // lock instead of failing; foreign keys are off by default in SQLite.
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                     PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                )
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(AnyConnection::Sqlite(conn))
            }
        }
    }
}

/// Builds the pool. Fails fast (with the driver's own message) when the database cannot
/// be reached, so a typo in `DATABASE_URL` is reported at start-up.
pub fn build_pool(url: &DatabaseUrl, size: u32) -> Result<DbPool, DbError> {
    let health = Arc::new(Health::default());
    let manager = ConnectionManager {
        url: url.clone(),
        health: health.clone(),
    };
    let pool = r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        .connection_timeout(CHECKOUT_TIMEOUT)
        // r2d2 logs every failed connection attempt (dozens a second while the database
        // is down); the pool's health logs the change once each way instead.
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build(manager)?;
    Ok(DbPool { pool, health })
}

/// The Postgres advisory lock key held while migrating ("latchkey" in ASCII, as an integer).
const MIGRATION_LOCK: i64 = 0x6c61_7463_686b_6579;

/// Applies the embedded migrations of the connection's backend.
pub fn run_migrations(pool: &DbPool) -> Result<(), DbError> {
    let mut conn = pool.get()?;
    let result = match &mut *conn {
        AnyConnection::Postgresql(c) => {
            // Instances starting together on an empty database take turns: the first one
            // migrates, the others then find nothing pending.
            c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
            let result = c.run_pending_migrations(PG_MIGRATIONS).map(|_| ());
            c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))?;
            result
        }
        AnyConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|_| ()),
    };
    result.map_err(|e| DbError::Migration(e.to_string()))?;
    optimize(&mut conn)
}

/// Runs blocking diesel work on the blocking thread pool, never on an async worker.
pub async fn run<T, F>(pool: &DbPool, f: F) -> Result<T, DbError>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    actix_web::rt::task::spawn_blocking(move || {
        let mut conn = pool.get()?;
        let result = f(&mut conn);
        pool.observe(&result);
        result
    })
    .await
    .map_err(|_| DbError::Cancelled)?
}

/// [`run`], but giving up on getting a connection after `timeout` (the readiness probe
/// must answer before a load balancer's own timeout, not after the pool's).
pub async fn run_within<T, F>(pool: &DbPool, timeout: Duration, f: F) -> Result<T, DbError>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    actix_web::rt::task::spawn_blocking(move || {
        let mut conn = pool.get_within(timeout)?;
        let result = f(&mut conn);
        pool.observe(&result);
        result
    })
    .await
    .map_err(|_| DbError::Cancelled)?
}

/// Runs `f` in a write transaction. On SQLite the transaction takes the write lock up
/// front (`BEGIN IMMEDIATE`): a deferred transaction that reads before it writes fails
/// with "database is locked" under concurrency, whatever the busy timeout.
pub fn write_transaction<T, F>(conn: &mut AnyConnection, f: F) -> Result<T, DbError>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, DbError>,
{
    match conn {
        AnyConnection::Sqlite(_) => {
            // diesel's `immediate_transaction` exists only on the inner SqliteConnection, and
            // the closure needs the whole AnyConnection: so open the transaction by hand.
            // Inside it, `f` must not call `conn.transaction()` (diesel would BEGIN again).
            conn.batch_execute("BEGIN IMMEDIATE")?;
            // A panic must not leave the pooled connection inside an open transaction
            // (every later write would then fail as "locked").
            let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn))) {
                Ok(result) => result,
                Err(panic) => {
                    let _ = conn.batch_execute("ROLLBACK");
                    std::panic::resume_unwind(panic);
                }
            };
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            match conn.batch_execute(end) {
                Ok(()) => result,
                Err(e) => {
                    let _ = conn.batch_execute("ROLLBACK");
                    Err(e.into())
                }
            }
        }
        AnyConnection::Postgresql(_) => conn.transaction(f),
    }
}

/// The current time as both backends store it: naive UTC, truncated to microseconds
/// (Postgres keeps µs; SQLite compares timestamps as text).
pub fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    now.with_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now)
}

/// The latest time stored: timestamps are clamped here so huge lifetimes never overflow
/// (and SQLite's text comparison keeps working with four-digit years).
fn far_future() -> NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

/// `now() + d`, saturating at the year 9999.
pub fn now_plus(d: Duration) -> NaiveDateTime {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now().checked_add_signed(d))
        .map_or_else(far_future, |t| t.min(far_future()))
}

/// `now() - d`, saturating at the epoch.
pub fn now_minus(d: Duration) -> NaiveDateTime {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now().checked_sub_signed(d))
        .map_or(chrono::DateTime::UNIX_EPOCH.naive_utc(), |t| {
            t.max(chrono::DateTime::UNIX_EPOCH.naive_utc())
        })
}

/// A batch taken from both ends of a queue (SPEC §12: a new entry is not queued behind a
/// whole backlog, and the backlog still drains): all of `newest` (the caller takes at most
/// half the batch from that end), then `oldest` up to `limit`, each entry once.
pub(crate) fn both_ends<T, K: PartialEq>(
    newest: Vec<T>,
    oldest: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut batch = newest;
    for entry in oldest {
        if batch.len() as i64 >= limit {
            break;
        }
        if !batch.iter().any(|b| key(b) == key(&entry)) {
            batch.push(entry);
        }
    }
    batch
}

/// Keeps the query planner's statistics current. Postgres's autovacuum does this on its
/// own; SQLite has no statistics until asked, and without them it can pick the wrong index
/// for the admin pages' filters once the audit trail is large. `PRAGMA optimize` analyses
/// only the tables that changed enough since the last time, so it is cheap to repeat.
pub fn optimize(conn: &mut AnyConnection) -> Result<(), DbError> {
    if let AnyConnection::Sqlite(c) = conn {
        // 0x10002: also analyse tables never analysed before (SQLite 3.46+).
        c.batch_execute("PRAGMA optimize = 0x10002")?;
    }
    Ok(())
}

/// Checks the database answers (for `/readyz`).
pub fn ping(conn: &mut AnyConnection) -> Result<(), DbError> {
    conn.batch_execute("SELECT 1")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::both_ends;

    #[test]
    fn a_batch_takes_both_ends_once_each_up_to_the_limit() {
        // A long queue 1..=100: the two newest and the two oldest.
        let batch = both_ends(vec![100, 99], vec![1, 2, 3, 4], 4, |id| *id);
        assert_eq!(batch, vec![100, 99, 1, 2]);
        // A short queue: both ends overlap, nothing twice.
        let batch = both_ends(vec![3, 2], vec![1, 2, 3], 4, |id| *id);
        assert_eq!(batch, vec![3, 2, 1]);
    }
}
