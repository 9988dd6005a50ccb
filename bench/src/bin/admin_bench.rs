//! Page times of the admin area at scale (issue 4, item 4).
//!
//! The admin pages must stay fast with 100 000 accounts and 1 000 000 audit events on both
//! backends: that is what the indexes and the keyset pagination are for, and only a
//! measurement on that much data can show they work. For each backend (PostgreSQL, then
//! SQLite) this benchmark makes a fresh database, migrates it with `latchkey migrate`,
//! seeds it with set-based SQL (accounts, events spread over the last 30 days across every
//! kind, outbox rows of every status), runs `VACUUM (ANALYZE)` on Postgres as its autovacuum
//! would (SQLite is left to the server's own `PRAGMA optimize` at start), creates an admin with `latchkey user create --admin`, starts the
//! release server, signs in and times sequential `GET`s of every admin page: first pages,
//! searches that match everything, a few rows or nothing, filters, and pages 20 links deep.
//! `GET /healthz` is timed the same way in the same run, and every page is also given as a
//! multiple of it (the machine is shared and noisy: ratios to an in-run baseline are the
//! project's convention).
//!
//! Run it with `scripts/bench-admin` (`--quick` for a smaller seed, `--backend sqlite` for
//! one backend). It prints one report and writes it to `target/bench-admin/report.md`, with
//! the server logs beside it. A page whose p95 is over 100 ms is marked SLOW but does not
//! fail the run; the exit code is non-zero only when a request failed (a status other than
//! 200, a missing "next" link) or a backend could not be set up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use latchkey_bench as support;

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail, ensure};
use diesel::{
    Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection,
    connection::SimpleConnection,
    sql_types::{BigInt, Text},
};
use reqwest::{Client, StatusCode, header::LOCATION};

use support::{
    ALNUM, LOGIN_PASSWORD, Rng, Server, TempDatabase, csrf_in, free_port, http_client,
    latchkey_command, wait_ready,
};

/// The admin the benchmark signs in as (created by the CLI, with the support module's
/// password, which passes the password policy).
const ADMIN_EMAIL: &str = "admin@example.test";
/// The seeded accounts' password hash: nobody signs in as them.
const DUMMY_HASH: &str = "$argon2id$dummy";
/// One of the oldest accounts gets this address instead of `userNNNNNN@example.test`: a
/// search for "zebra" finds one row, at the far end of a newest-first walk.
const RARE_EMAIL: &str = "zebra.quartz@rare.test";
const RARE_SEQ: u64 = 17;
/// Distinct client addresses in the seeded events.
const CLIENT_IPS: u64 = 4001;
/// Accounts were created over the last two years, events and mail over the last 30 days.
const ACCOUNT_SPAN_US: i64 = 2 * 365 * 86_400 * 1_000_000;
const LOG_SPAN_US: i64 = 30 * 86_400 * 1_000_000;
/// Event kinds and their share of the seeded log, in parts per 100 000: common sign-ins,
/// a recovery flow, and a few rare admin actions (`mail_retried`: 1 event in 10 000).
const KIND_WEIGHTS: [(&str, u32); 15] = [
    ("signed_in", 28_000),
    ("sign_in_failed", 14_000),
    ("signed_out", 10_000),
    ("reset_requested", 12_000),
    ("throttled", 4_000),
    ("mail_sent", 10_000),
    ("mail_failed", 1_000),
    ("reset_link_opened", 8_000),
    ("reset_done", 6_000),
    ("reset_refused", 2_000),
    ("password_changed", 2_500),
    ("sessions_ended", 2_000),
    ("account_disabled", 300),
    ("account_enabled", 190),
    ("mail_retried", 10),
];

/// The server's rate limits: on, but so high that nothing is refused.
const RATE_LIMIT: &str = "1000000000/600";
/// Temporary databases are named `latchkey_admin_bench_<random>`.
const DB_PREFIX: &str = "latchkey_admin_bench";
/// How many `rel="next"` links a deep-page case follows before it starts timing.
const HOPS: usize = 20;
/// Requests per case sent and thrown away before timing (connection, caches, plans).
const WARMUP: usize = 3;
/// A case stops early once it has taken this long (and has at least `MIN_SAMPLES`).
const CASE_TIME_LIMIT: Duration = Duration::from_secs(60);
const MIN_SAMPLES: usize = 5;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// A page whose p95 is over this is marked SLOW in the report.
const BUDGET_MS: f64 = 100.0;

const USAGE: &str = "usage: admin_bench --server PATH [--backend postgres|sqlite|both] [--quick]
                   [--users N] [--events N] [--outbox N] [--requests N]
                   [--database-url URL] [--log FILTER] [--out DIR]

  --server PATH        the release latchkey binary to measure
  --backend B          postgres, sqlite or both (default both; PostgreSQL first)
  --quick              a smoke run on a smaller seed (10 000 accounts, 100 000 events)
  --users N            seeded accounts (default 100 000; 1 000 to 999 999)
  --events N           seeded audit events (default 1 000 000)
  --outbox N           seeded outbox rows (default 50 000)
  --requests N         timed requests per page (default 30)
  --database-url URL   admin URL of a PostgreSQL server where databases may be created
                       (default $TEST_DATABASE_URL or postgres://postgres@127.0.0.1:5432/postgres)
  --log FILTER         the server's RUST_LOG (default info, the production default)
  --out DIR            where report.md and the server logs go (default target/bench-admin)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("admin_bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("admin_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole benchmark. Returns whether every request of every backend succeeded.
async fn run(args: &Args) -> anyhow::Result<bool> {
    // The server runs in a temporary working directory (so no `.env` is read), where a
    // relative program path would no longer resolve.
    let server_path = std::fs::canonicalize(&args.server)
        .with_context(|| format!("--server {}", args.server.display()))?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let mut report = RunReport {
        backends: Vec::new(),
        failures: Vec::new(),
    };
    for &backend in &args.backends {
        eprintln!("{}:", backend.name());
        match run_backend(backend, args, &server_path).await {
            Ok(measured) => report.backends.push(measured),
            Err(e) => {
                eprintln!("admin_bench: {}: {e:#}", backend.name());
                report.failures.push(format!("{}: {e:#}", backend.name()));
            }
        }
    }
    let text = render(&report, args)?;
    print!("{text}");
    let path = args.out.join("report.md");
    std::fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
    eprintln!("report written to {}", path.display());
    Ok(report.passed())
}

/// One backend: database, migrations, seed, admin, server, sign-in, then every case. The
/// server is killed and the database dropped on return, on an error too.
async fn run_backend(
    backend: Backend,
    args: &Args,
    server_path: &Path,
) -> anyhow::Result<BackendReport> {
    let mut rng = Rng::seeded();
    // Declared before the server, so it is dropped after it: the server is gone before its
    // database is.
    let database = match backend {
        Backend::Postgres => TempDatabase::postgres(&args.database_url, DB_PREFIX, &mut rng)?,
        Backend::Sqlite => TempDatabase::sqlite(DB_PREFIX, &mut rng)?,
    };
    let port = free_port()?;
    let env = server_env(&database.url, port, &rng.string(ALNUM, 80), &args.log);

    eprintln!("  migrating");
    run_cli(server_path, &env, &["migrate"], None)?;
    let seeded = seed(backend, &database, args.sizes)?;
    eprintln!("  creating {ADMIN_EMAIL}");
    run_cli(
        server_path,
        &env,
        &[
            "user",
            "create",
            "--email",
            ADMIN_EMAIL,
            "--admin",
            "--password-stdin",
        ],
        Some(format!("{LOGIN_PASSWORD}\n").as_str()),
    )?;

    let log = args.out.join(format!("server-{}.log", backend.slug()));
    let mut server = Server::spawn_logged(server_path, &env, &log)?;
    let site = Site {
        client: http_client()?,
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(&site.client, &site.base, &mut server)
        .await
        .with_context(|| format!("see {}", log.display()))?;
    site.sign_in().await?;

    eprintln!("  baseline: GET /healthz");
    let mut baseline = measure(&site, "/healthz", args.requests).await?;
    let mut results = Vec::new();
    for case in cases(&seeded.picks, args.sizes)? {
        eprintln!("  {}", case.name);
        let outcome = run_case(&site, &case, args.requests)
            .await
            .map_err(|e| format!("{e:#} (server log: {})", log.display()));
        if let Err(e) = &outcome {
            eprintln!("    FAILED: {e}");
        }
        results.push(CaseResult { case, outcome });
    }
    // The baseline again at the end, pooled with the first: drift falls on it too.
    let after = measure(&site, "/healthz", args.requests).await?;
    baseline.samples.extend(after.samples);
    baseline.samples.sort_by(f64::total_cmp);
    Ok(BackendReport {
        backend,
        seeded,
        baseline,
        results,
        log,
    })
}

/// The server's environment: defaults except for what the benchmark needs. No `SMTP_URL`:
/// the dev mailbox keeps mail in memory (and nothing is due to be sent anyway).
fn server_env(
    database_url: &str,
    port: u16,
    secret_key: &str,
    log: &str,
) -> Vec<(&'static str, String)> {
    let listen = format!("127.0.0.1:{port}");
    vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("BASE_URL", format!("http://{listen}")),
        ("LISTEN_ADDR", listen),
        ("SECRET_KEY", secret_key.to_owned()),
        ("RATE_LIMIT_FORGOT", RATE_LIMIT.to_owned()),
        ("RATE_LIMIT_LOGIN", RATE_LIMIT.to_owned()),
        ("RATE_LIMIT_RESET", RATE_LIMIT.to_owned()),
        ("RUST_LOG", log.to_owned()),
    ]
}

/// Runs `latchkey ARGS` with the server's environment, `stdin` on its standard input.
fn run_cli(
    server: &Path,
    env: &[(&'static str, String)],
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<()> {
    let command = format!("latchkey {}", args.join(" "));
    let mut child = latchkey_command(server, env)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {command}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("the CLI's standard input")?
            .write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "{command} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Seed data

/// How much to seed.
#[derive(Clone, Copy)]
struct Sizes {
    users: u64,
    events: u64,
    outbox: u64,
}

impl Sizes {
    const FULL: Sizes = Sizes {
        users: 100_000,
        events: 1_000_000,
        outbox: 50_000,
    };
    const QUICK: Sizes = Sizes {
        users: 10_000,
        events: 100_000,
        outbox: 5_000,
    };

    /// An email fragment that matches exactly 100 of the seeded accounts (the newest
    /// ones): `user0999` for 100 000 accounts, `user0099` for 10 000.
    fn selective_fragment(self) -> String {
        let prefix = (self.users - 100) / 100;
        format!("user{prefix:04}")
    }
}

/// What seeding did and took, and the seeded values the cases filter on.
struct Seeded {
    sizes: Sizes,
    users: Duration,
    events: Duration,
    outbox: Duration,
    analyze: Duration,
    picks: Picks,
}

impl Seeded {
    fn total(&self) -> Duration {
        self.users + self.events + self.outbox + self.analyze
    }
}

/// `SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM users`.
#[derive(QueryableByName)]
struct IdRange {
    #[diesel(sql_type = BigInt)]
    lo: i64,
    #[diesel(sql_type = BigInt)]
    hi: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// An account with events (the newest event's) and a client address that occurs in the log.
#[derive(QueryableByName)]
struct Picks {
    #[diesel(sql_type = BigInt)]
    uid: i64,
    #[diesel(sql_type = Text)]
    ip: String,
}

/// A direct connection to the benchmark database, for seeding. Boxed: the two
/// connection types differ a lot in size.
enum SeedConn {
    Pg(Box<PgConnection>),
    Sqlite(Box<SqliteConnection>),
}

impl SeedConn {
    fn open(backend: Backend, database: &TempDatabase) -> anyhow::Result<Self> {
        Ok(match backend {
            Backend::Postgres => SeedConn::Pg(Box::new(database.connect()?)),
            Backend::Sqlite => {
                let path = database
                    .url
                    .strip_prefix("sqlite://")
                    .context("a SQLite URL without sqlite://")?;
                let mut conn =
                    SqliteConnection::establish(path).with_context(|| format!("open {path}"))?;
                // A big page cache: the events indexes take random inserts.
                conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -262144;")?;
                SeedConn::Sqlite(Box::new(conn))
            }
        })
    }

    fn execute(&mut self, sql: &str) -> anyhow::Result<()> {
        match self {
            SeedConn::Pg(c) => c.batch_execute(sql)?,
            SeedConn::Sqlite(c) => c.batch_execute(sql)?,
        }
        Ok(())
    }

    fn id_range(&mut self) -> anyhow::Result<IdRange> {
        const SQL: &str = "SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM users";
        Ok(match self {
            SeedConn::Pg(c) => diesel::sql_query(SQL).get_result::<IdRange>(&mut **c)?,
            SeedConn::Sqlite(c) => diesel::sql_query(SQL).get_result::<IdRange>(&mut **c)?,
        })
    }

    fn picks(&mut self) -> anyhow::Result<Picks> {
        const SQL: &str = "SELECT \
            (SELECT user_id FROM events WHERE user_id IS NOT NULL \
             ORDER BY id DESC LIMIT 1) AS uid, \
            (SELECT client_ip FROM events WHERE client_ip IS NOT NULL \
             ORDER BY id DESC LIMIT 1) AS ip";
        Ok(match self {
            SeedConn::Pg(c) => diesel::sql_query(SQL).get_result::<Picks>(&mut **c)?,
            SeedConn::Sqlite(c) => diesel::sql_query(SQL).get_result::<Picks>(&mut **c)?,
        })
    }
}

/// Seeds accounts, events and outbox rows in one transaction, then updates the planner's
/// statistics. Runs before the server starts, so nothing competes for the write lock.
fn seed(backend: Backend, database: &TempDatabase, sizes: Sizes) -> anyhow::Result<Seeded> {
    let mut conn = SeedConn::open(backend, database)?;
    let sql = Dialect {
        backend,
        anchor_us: anchor_us()?,
    };
    conn.execute("BEGIN")?;

    eprintln!("  seeding {} accounts", sizes.users);
    let started = Instant::now();
    conn.execute(&sql.users(sizes.users))
        .context("seed the accounts")?;
    let users = started.elapsed();
    let range = conn.id_range()?;
    ensure!(
        range.n == sizes.users as i64 && range.hi - range.lo + 1 == range.n,
        "expected {} accounts with consecutive ids, found {} in {}..={}",
        sizes.users,
        range.n,
        range.lo,
        range.hi
    );

    eprintln!("  seeding {} events", sizes.events);
    let started = Instant::now();
    conn.execute(&sql.events(sizes.events, &range))
        .context("seed the events")?;
    let events = started.elapsed();

    eprintln!("  seeding {} outbox rows", sizes.outbox);
    let started = Instant::now();
    conn.execute(&sql.outbox(sizes.outbox, &range))
        .context("seed the outbox")?;
    conn.execute("COMMIT")?;
    let outbox = started.elapsed();

    let maintenance = backend.maintenance();
    eprintln!("  {maintenance}");
    let started = Instant::now();
    conn.execute(maintenance)
        .with_context(|| maintenance.to_owned())?;
    let analyze = started.elapsed();

    let picks = conn.picks()?;
    Ok(Seeded {
        sizes,
        users,
        events,
        outbox,
        analyze,
        picks,
    })
}

/// The time the seeded data ends at: about a minute ago, in microseconds since the epoch.
/// Its microseconds are 417 past a millisecond and every step between seeded times is a
/// whole number of milliseconds, so each seeded time has six fractional digits, exactly
/// as diesel writes it on SQLite (`%.f` shortens `.592000` to `.592`): the seeded text
/// compares with the server's own bound values as its own rows would.
fn anchor_us() -> anyhow::Result<i64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let ms = now.as_millis() as i64 - 60_000;
    Ok(ms * 1000 + 417)
}

/// `span` divided into `n` steps, rounded down to whole milliseconds (at least one).
fn step_us(span: i64, n: u64) -> i64 {
    (span / n as i64 / 1000).max(1) * 1000
}

/// Builds the seeding SQL for one backend. Rows are numbered `g` = 1..=n by
/// `generate_series` (PostgreSQL) or a recursive CTE (SQLite), and every column is an
/// integer function of `g`, so both backends get the same data. Timestamps rise with `g`
/// (ids and times agree, as in a real log) and are written as the server stores them.
struct Dialect {
    backend: Backend,
    /// The newest seeded time, in microseconds since the epoch.
    anchor_us: i64,
}

impl Dialect {
    /// What goes before `INSERT`: SQLite's row numbers come from a CTE named `s`.
    fn with(&self, n: u64) -> String {
        match self.backend {
            Backend::Postgres => String::new(),
            Backend::Sqlite => format!(
                "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) "
            ),
        }
    }

    /// The row source that yields `g`.
    fn series(&self, n: u64) -> String {
        match self.backend {
            Backend::Postgres => format!("generate_series(1::bigint, {n}::bigint) AS s(g)"),
            Backend::Sqlite => "s".to_owned(),
        }
    }

    /// The timestamp `us` microseconds after the epoch (`us` an SQL integer expression):
    /// a PostgreSQL `TIMESTAMP`, or SQLite text written exactly as diesel writes the
    /// server's own values (chrono's `%F %T%.f`: no fraction for a whole second, three
    /// digits for whole milliseconds, else six), so that equal instants compare equal.
    fn timestamp(&self, us: &str) -> String {
        match self.backend {
            Backend::Postgres => format!(
                "(TIMESTAMP '1970-01-01 00:00:00' + ({us})::float8 * INTERVAL '1 microsecond')"
            ),
            Backend::Sqlite => format!(
                "(strftime('%Y-%m-%d %H:%M:%S', ({us}) / 1000000, 'unixepoch') || \
                 CASE WHEN ({us}) % 1000000 = 0 THEN '' \
                 WHEN ({us}) % 1000 = 0 THEN printf('.%03d', (({us}) % 1000000) / 1000) \
                 ELSE printf('.%06d', ({us}) % 1000000) END)"
            ),
        }
    }

    /// The anchor minus `us` microseconds, as an integer expression.
    fn before_anchor(&self, us: &str) -> String {
        format!("({} - ({us}))", self.anchor_us)
    }

    /// An integer expression as six digits with leading zeros.
    fn six_digits(&self, expr: &str) -> String {
        match self.backend {
            Backend::Postgres => format!("lpad(({expr})::text, 6, '0')"),
            Backend::Sqlite => format!("printf('%06d', {expr})"),
        }
    }

    fn empty_bytes(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "''::bytea",
            Backend::Sqlite => "X''",
        }
    }

    /// `n` accounts `user000001@example.test` … created over two years, oldest first.
    /// Account 1 is an admin (the actor of the seeded admin events), one in 50 is
    /// disabled, two in three have signed in, one in seven has reset its password.
    fn users(&self, n: u64) -> String {
        let step = step_us(ACCOUNT_SPAN_US, n);
        let age = format!("({n} - g) * {step}");
        let created = self.before_anchor(&age);
        // Sign-in and reset times fall between creation and the anchor.
        let login = format!("{created} + (({age}) / 1000) * ((g * 7919) % 1000)");
        let reset = format!("{created} + (({age}) / 1000) * ((g * 104729) % 1000)");
        let email = format!(
            "CASE WHEN g = {RARE_SEQ} THEN '{RARE_EMAIL}' \
             ELSE 'user' || {} || '@example.test' END",
            self.six_digits("g")
        );
        format!(
            "{with}INSERT INTO users (email, password_hash, is_admin, disabled, created_at, \
             password_changed_at, last_login_at, last_reset_at) \
             SELECT {email}, '{DUMMY_HASH}', g = 1, g % 50 = 0, {created_at}, {created_at}, \
             CASE WHEN g % 3 <> 0 THEN {login_at} END, \
             CASE WHEN g % 7 = 0 THEN {reset_at} END \
             FROM {series} ORDER BY g",
            with = self.with(n),
            series = self.series(n),
            created_at = self.timestamp(&created),
            login_at = self.timestamp(&login),
            reset_at = self.timestamp(&reset),
        )
    }

    /// `n` events over the last 30 days, one every 30 days / `n`. Kinds follow
    /// [`KIND_WEIGHTS`]; nine in ten concern an account (its id and address), spread over
    /// all accounts; the admin actions name account 1 as their actor; addresses come from
    /// [`CLIENT_IPS`] in 10.0.0.0/16 (none for the worker's mail events).
    fn events(&self, n: u64, users: &IdRange) -> String {
        let step = step_us(LOG_SPAN_US, n);
        let created = self.timestamp(&self.before_anchor(&format!("({n} - g) * {step}")));
        // Moduli that do not divide each other, so kind, account and address vary
        // independently enough (a user's events are not all of one kind).
        let r = "((g * 48271) % 100003) % 100000";
        let ip = format!("((g * 104729) % {CLIENT_IPS})");
        // SQLite's `||` binds tighter than `/` and `%`: every number is parenthesised.
        let ip_text = format!("'10.0.' || (({ip}) / 256) || '.' || (({ip}) % 256)");
        let agent = "CASE g % 4 \
            WHEN 0 THEN 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0' \
            WHEN 1 THEN 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0 Safari/537.36' \
            WHEN 2 THEN 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Safari/604.1' \
            ELSE 'curl/8.5.0' END";
        let uid = format!(
            "CASE WHEN (g / 7) % 10 = 0 THEN NULL ELSE {} + (g * 7919) % {} END",
            users.lo, users.n
        );
        format!(
            "{with}INSERT INTO events (kind, user_id, actor_id, email, detail, client_ip, \
             user_agent, created_at) \
             SELECT x.kind, u.id, \
             CASE WHEN x.kind IN ('account_disabled', 'account_enabled', 'mail_retried') \
             THEN {admin} END, \
             u.email, \
             CASE x.kind WHEN 'mail_failed' THEN 'smtp: 451 4.7.1 try again later' \
             WHEN 'reset_refused' THEN 'link expired' WHEN 'throttled' THEN 'cooldown' END, \
             CASE WHEN x.kind IN ('mail_sent', 'mail_failed') THEN NULL ELSE x.ip END, \
             x.agent, x.created_at \
             FROM (SELECT g, {kind} AS kind, {uid} AS uid, {ip_text} AS ip, \
             {agent} AS agent, {created} AS created_at \
             FROM (SELECT g, {r} AS r FROM {series}) y) x \
             LEFT JOIN users u ON u.id = x.uid \
             ORDER BY x.g",
            with = self.with(n),
            series = self.series(n),
            admin = users.lo,
            kind = kind_case("r"),
        )
    }

    /// `n` outbox rows over the last 30 days: 90 % sent, 6 % failed, 2 % expired, 2 %
    /// queued but not due until tomorrow (so the worker leaves them alone). Bodies are
    /// empty, as they are once a message is sent or given up on.
    fn outbox(&self, n: u64, users: &IdRange) -> String {
        let step = step_us(LOG_SPAN_US, n);
        let created_us = self.before_anchor(&format!("({n} - g) * {step}"));
        let created = self.timestamp(&created_us);
        let sent = self.timestamp(&format!("{created_us} + 2000000"));
        let link_expires = self.timestamp(&format!("{created_us} + 3600000000"));
        let tomorrow = self.timestamp(&format!("{} + 86400000000", self.anchor_us));
        format!(
            "{with}INSERT INTO outbox (kind, recipient, payload, status, attempts, \
             next_attempt_at, last_error, created_at, sent_at, expires_at, user_id) \
             SELECT CASE WHEN x.g % 5 = 0 THEN 'password_changed' ELSE 'reset' END, \
             u.email, {empty}, x.status, \
             CASE x.status WHEN 'sent' THEN 1 WHEN 'failed' THEN 5 WHEN 'queued' THEN 1 \
             ELSE 0 END, \
             CASE WHEN x.status = 'queued' THEN {tomorrow} ELSE x.created_at END, \
             CASE x.status WHEN 'failed' THEN 'smtp: 550 5.1.1 mailbox unavailable' \
             WHEN 'queued' THEN 'smtp: 451 4.7.1 try again later' END, \
             x.created_at, \
             CASE WHEN x.status = 'sent' THEN x.sent_at END, \
             CASE WHEN x.status = 'queued' THEN {tomorrow} \
             WHEN x.g % 5 = 0 THEN NULL ELSE x.link_expires END, \
             u.id \
             FROM (SELECT g, \
             CASE WHEN g % 100 < 90 THEN 'sent' WHEN g % 100 < 96 THEN 'failed' \
             WHEN g % 100 < 98 THEN 'expired' ELSE 'queued' END AS status, \
             {lo} + (g * 7919) % {count} AS uid, \
             {created} AS created_at, {sent} AS sent_at, {link_expires} AS link_expires \
             FROM {series}) x \
             JOIN users u ON u.id = x.uid \
             ORDER BY x.g",
            with = self.with(n),
            series = self.series(n),
            empty = self.empty_bytes(),
            lo = users.lo,
            count = users.n,
        )
    }
}

/// `CASE WHEN r < w1 THEN 'kind1' WHEN r < w1 + w2 …`: the kind of an event from `r`,
/// a number in 0..100 000.
fn kind_case(r: &str) -> String {
    let mut upto = 0;
    let arms: Vec<String> = KIND_WEIGHTS
        .iter()
        .map(|(kind, weight)| {
            upto += *weight;
            format!("WHEN {r} < {upto} THEN '{kind}'")
        })
        .collect();
    format!("CASE {} END", arms.join(" "))
}

// ---------------------------------------------------------------------------------------
// What is measured

/// One page to time.
struct Case {
    name: String,
    /// Where the case starts (the page timed, unless it follows links).
    path: String,
    /// How many `rel="next"` links to follow from `path` to the page timed.
    hops: usize,
}

impl Case {
    fn new(name: &str, path: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            path: path.into(),
            hops: 0,
        }
    }

    /// The page `HOPS` "Older" links away.
    fn deep(name: &str, path: impl Into<String>) -> Self {
        Self {
            hops: HOPS,
            ..Self::new(name, path)
        }
    }

    /// The request as the report shows it.
    fn request(&self) -> String {
        if self.hops == 0 {
            format!("`{}`", self.path)
        } else {
            format!("`{}` → rel=next ×{}", self.path, self.hops)
        }
    }
}

/// Every case, in report order.
fn cases(picks: &Picks, sizes: Sizes) -> anyhow::Result<Vec<Case>> {
    let few = sizes.selective_fragment();
    let (uid, ip) = (picks.uid, picks.ip.as_str());
    let day = chrono::Utc::now()
        .date_naive()
        .checked_sub_days(chrono::Days::new(20))
        .context("20 days ago is not a date")?
        .format("%Y-%m-%d")
        .to_string();
    Ok(vec![
        Case::new("dashboard", "/admin"),
        Case::new("users: first page", "/admin/users"),
        Case::new("users: q matching 100", format!("/admin/users?q={few}")),
        Case::new("users: q matching 1, the oldest", "/admin/users?q=zebra"),
        Case::new("users: q matching all", "/admin/users?q=example"),
        Case::new("users: q matching none", "/admin/users?q=nomatch-zzz"),
        Case::deep("users: page 21", "/admin/users"),
        Case::deep("users: page 21 of q matching all", "/admin/users?q=example"),
        Case::new("user page (with events)", format!("/admin/users/{uid}")),
        Case::new("events: first page", "/admin/events"),
        Case::new("events: kind (6 %)", "/admin/events?kind=reset_done"),
        Case::new(
            "events: rare kind (0.01 %)",
            "/admin/events?kind=mail_retried",
        ),
        Case::new(
            "events: email of 100 accounts",
            format!("/admin/events?email={few}"),
        ),
        Case::new("events: email matching all", "/admin/events?email=example"),
        Case::new(
            "events: email matching none",
            "/admin/events?email=nomatch-zzz",
        ),
        Case::new("events: ip", format!("/admin/events?ip={ip}")),
        Case::new(
            "events: one day",
            format!("/admin/events?from={day}&to={day}"),
        ),
        Case::new("events: one account", format!("/admin/events?user={uid}")),
        Case::new(
            "events: kind on one day",
            format!("/admin/events?kind=reset_requested&from={day}&to={day}"),
        ),
        Case::deep("events: page 21", "/admin/events"),
        Case::new("outbox: first page", "/admin/outbox"),
        Case::new("outbox: failed", "/admin/outbox?status=failed"),
        Case::new("outbox: queued", "/admin/outbox?status=queued"),
        Case::deep("outbox: page 21 of sent", "/admin/outbox?status=sent"),
        Case::new("reference: /account (a signed-in page)", "/account"),
    ])
}

/// The server and one signed-in client (cookies kept, redirects not followed).
struct Site {
    client: Client,
    base: String,
}

impl Site {
    /// `GET path`: the body and the time from sending to its last byte. Anything but a
    /// 200 is an error that says what came back.
    async fn get(&self, path: &str) -> anyhow::Result<(String, Duration)> {
        let request = self
            .client
            .get(format!("{}{path}", self.base))
            .timeout(REQUEST_TIMEOUT);
        let started = Instant::now();
        let response = request
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| format!(" (Location: {l})"))
            .unwrap_or_default();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("GET {path}: read the body"))?;
        let elapsed = started.elapsed();
        ensure!(
            status == StatusCode::OK,
            "GET {path} answered {status}{location}"
        );
        Ok((String::from_utf8_lossy(&body).into_owned(), elapsed))
    }

    /// Signs in as the admin through the login form.
    async fn sign_in(&self) -> anyhow::Result<()> {
        let (html, _) = self.get("/login").await?;
        let csrf = csrf_in(&html).context("GET /login has no csrf_token field")?;
        let response = self
            .client
            .post(format!("{}/login", self.base))
            .form(&[
                ("email", ADMIN_EMAIL),
                ("password", LOGIN_PASSWORD),
                ("csrf_token", csrf.as_str()),
            ])
            .send()
            .await
            .context("POST /login")?;
        ensure!(
            response.status() == StatusCode::SEE_OTHER,
            "POST /login as {ADMIN_EMAIL} answered {} (expected 303)",
            response.status()
        );
        Ok(())
    }
}

/// Latencies of one page, sorted, and what its last answer showed.
struct Measured {
    samples: Vec<f64>,
    bytes: usize,
    rows: String,
}

impl Measured {
    /// Nearest-rank percentile, `q` in 0..=1.
    fn percentile(&self, q: f64) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        let rank = (q * self.samples.len() as f64).ceil() as usize;
        self.samples[rank.clamp(1, self.samples.len()) - 1]
    }

    fn p50(&self) -> f64 {
        self.percentile(0.5)
    }

    fn p95(&self) -> f64 {
        self.percentile(0.95)
    }

    fn max(&self) -> f64 {
        self.percentile(1.0)
    }
}

/// A case and how it went.
struct CaseResult {
    case: Case,
    outcome: Result<Measured, String>,
}

/// Follows the case's links to the page it times, then times it.
async fn run_case(site: &Site, case: &Case, requests: usize) -> anyhow::Result<Measured> {
    let path = follow_next(site, &case.path, case.hops).await?;
    measure(site, &path, requests).await
}

/// The path `hops` "Older" (`rel="next"`) links away from `start`.
async fn follow_next(site: &Site, start: &str, hops: usize) -> anyhow::Result<String> {
    let mut path = start.to_owned();
    for hop in 1..=hops {
        let (html, _) = site.get(&path).await?;
        let href = next_link(&html).with_context(|| {
            format!("{path} (page {hop} from {start}) has no rel=\"next\" link")
        })?;
        path = resolve(&path, &href, &site.base)?;
    }
    Ok(path)
}

/// `WARMUP` requests, then up to `requests` timed ones, one at a time.
async fn measure(site: &Site, path: &str, requests: usize) -> anyhow::Result<Measured> {
    for _ in 0..WARMUP {
        site.get(path).await?;
    }
    let started = Instant::now();
    let mut samples = Vec::with_capacity(requests);
    let mut last = String::new();
    while samples.len() < requests
        && (samples.len() < MIN_SAMPLES || started.elapsed() < CASE_TIME_LIMIT)
    {
        let (body, elapsed) = site.get(path).await?;
        samples.push(elapsed.as_secs_f64() * 1000.0);
        last = body;
    }
    samples.sort_by(f64::total_cmp);
    Ok(Measured {
        samples,
        bytes: last.len(),
        rows: rows_shown(&last),
    })
}

/// The `href` of the page's `rel="next"` link, entities decoded.
fn next_link(html: &str) -> Option<String> {
    let at = html.find("rel=\"next\"")?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let href = tag.find("href=\"")? + "href=\"".len();
    let len = tag[href..].find('"')?;
    Some(decode_entities(&tag[href..href + len]))
}

/// A link as a path on the server: absolute paths as they are, a query alone (`?…`)
/// against the current path, a full URL on the server without its origin.
fn resolve(current: &str, href: &str, base: &str) -> anyhow::Result<String> {
    if let Some(path) = href.strip_prefix(base) {
        return Ok(path.to_owned());
    }
    if href.starts_with('/') {
        return Ok(href.to_owned());
    }
    if href.starts_with('?') {
        let path = current.split_once('?').map_or(current, |(p, _)| p);
        return Ok(format!("{path}{href}"));
    }
    bail!("cannot follow the link '{href}' from {current}")
}

/// Decodes HTML character references (`&amp;`, `&#x2f;`, `&#61;` …) in an attribute.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest
            .find(';')
            .filter(|&end| end <= 10)
            .and_then(|end| decode_entity(&rest[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// The table rows a page shows: "50 users", "20 events", "0" …
fn rows_shown(html: &str) -> String {
    let shown: Vec<String> = [("user", "users"), ("event", "events"), ("mail", "mails")]
        .iter()
        .filter_map(|(class, label)| {
            let needle = format!("<tr class=\"{class}\"");
            let n = html.matches(needle.as_str()).count();
            (n > 0).then(|| format!("{n} {label}"))
        })
        .collect();
    if shown.is_empty() {
        "0".to_owned()
    } else {
        shown.join(", ")
    }
}

// ---------------------------------------------------------------------------------------
// Report

/// What one backend measured.
struct BackendReport {
    backend: Backend,
    seeded: Seeded,
    /// `GET /healthz`, timed at the start and at the end.
    baseline: Measured,
    results: Vec<CaseResult>,
    log: PathBuf,
}

/// Everything one run measured.
struct RunReport {
    backends: Vec<BackendReport>,
    /// Backends that could not be measured at all.
    failures: Vec<String>,
}

impl RunReport {
    fn passed(&self) -> bool {
        self.failures.is_empty()
            && self
                .backends
                .iter()
                .all(|b| b.results.iter().all(|r| r.outcome.is_ok()))
    }
}

fn render(report: &RunReport, args: &Args) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(out, "# Admin pages at scale (issue 4)\n")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(
        out,
        "Run {} UTC, commit {}, {cores} cores, `{}`.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        commit().unwrap_or_else(|| "unknown".to_owned()),
        std::env::args().collect::<Vec<_>>().join(" ")
    )?;
    writeln!(
        out,
        "Sequential `GET`s by a signed-in admin (one keep-alive connection), {WARMUP} warm-up \
         requests then {} timed ones per page (fewer when a page takes over {} s), from \
         sending the request to the last byte of the body. `× base` is the page's p50 over \
         the p50 of `GET /healthz` timed the same way in the same run. Deep pages follow \
         the `rel=\"next\"` link {HOPS} times and time the page reached. Budget: SLOW \
         when p95 > {BUDGET_MS} ms (reported, not enforced).\n",
        args.requests,
        CASE_TIME_LIMIT.as_secs()
    )?;
    for backend in &report.backends {
        render_backend(&mut out, backend)?;
    }
    if !report.failures.is_empty() {
        writeln!(out, "## Not measured\n")?;
        for failure in &report.failures {
            writeln!(out, "- {failure}")?;
        }
        writeln!(out)?;
    }
    let verdict = if report.passed() {
        "every request answered 200"
    } else {
        "FAILED: see above"
    };
    writeln!(out, "Result: {verdict}.")?;
    Ok(out)
}

fn render_backend(out: &mut String, b: &BackendReport) -> anyhow::Result<()> {
    let s = &b.seeded;
    writeln!(out, "## {}\n", b.backend.name())?;
    writeln!(
        out,
        "Seeded {} accounts, {} events and {} outbox rows in {:.1} s (accounts {:.1} s, \
         events {:.1} s, outbox {:.1} s, `{}` {:.1} s). Filters use account #{}, \
         IP {}. Server log: `{}`.\n",
        s.sizes.users,
        s.sizes.events,
        s.sizes.outbox,
        s.total().as_secs_f64(),
        s.users.as_secs_f64(),
        s.events.as_secs_f64(),
        s.outbox.as_secs_f64(),
        b.backend.maintenance(),
        s.analyze.as_secs_f64(),
        s.picks.uid,
        s.picks.ip,
        b.log.display()
    )?;
    let base = b.baseline.p50();
    writeln!(
        out,
        "Baseline `GET /healthz`: p50 {base:.2} ms, p95 {:.2} ms ({} requests).\n",
        b.baseline.p95(),
        b.baseline.samples.len()
    )?;
    writeln!(
        out,
        "| page | request | n | p50 ms | p95 ms | max ms | × base | rows | bytes | budget |"
    )?;
    writeln!(out, "|---|---|--:|--:|--:|--:|--:|---|--:|---|")?;
    let mut failures = Vec::new();
    for r in &b.results {
        let (name, request) = (&r.case.name, r.case.request());
        match &r.outcome {
            Ok(m) => {
                let budget = if m.p95() > BUDGET_MS { "SLOW" } else { "ok" };
                writeln!(
                    out,
                    "| {name} | {request} | {} | {:.2} | {:.2} | {:.2} | {:.1}× | {} | {} \
                     | {budget} |",
                    m.samples.len(),
                    m.p50(),
                    m.p95(),
                    m.max(),
                    m.p50() / base,
                    m.rows,
                    m.bytes
                )?;
            }
            Err(e) => {
                writeln!(
                    out,
                    "| {name} | {request} | 0 | – | – | – | – | – | – | FAILED |"
                )?;
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    writeln!(out)?;
    if !failures.is_empty() {
        writeln!(out, "Failed:\n")?;
        for failure in failures {
            writeln!(out, "- {failure}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// The commit being measured, if `git` can tell.
fn commit() -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

// ---------------------------------------------------------------------------------------
// Command line

/// A database backend the server can run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }

    /// What would have happened on its own by the time anyone looks: Postgres's
    /// autovacuum analyses after a bulk insert. SQLite gets no `ANALYZE` here: the server
    /// runs `PRAGMA optimize` at start, and the benchmark measures what that gives.
    fn maintenance(self) -> &'static str {
        match self {
            Backend::Postgres => "VACUUM (ANALYZE)",
            Backend::Sqlite => "PRAGMA wal_checkpoint(TRUNCATE);",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Command-line options, parsed by hand as the other benchmarks do.
struct Args {
    server: PathBuf,
    backends: Vec<Backend>,
    sizes: Sizes,
    requests: usize,
    database_url: String,
    log: String,
    out: PathBuf,
}

impl Args {
    /// Reads `std::env::args`; `None` when help was asked for.
    fn parse() -> anyhow::Result<Option<Self>> {
        let mut server = None;
        let mut backends = vec![Backend::Postgres, Backend::Sqlite];
        let mut quick = false;
        let (mut users, mut events, mut outbox): (Option<u64>, Option<u64>, Option<u64>) =
            (None, None, None);
        let mut requests: usize = 30;
        let mut database_url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.trim().is_empty());
        let mut log = "info".to_owned();
        let mut out = PathBuf::from("target/bench-admin");
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--server" => server = Some(PathBuf::from(value(&mut args, &arg)?)),
                "--backend" => {
                    backends = match value(&mut args, &arg)?.as_str() {
                        "postgres" => vec![Backend::Postgres],
                        "sqlite" => vec![Backend::Sqlite],
                        "both" => vec![Backend::Postgres, Backend::Sqlite],
                        other => bail!("--backend: '{other}' is not postgres, sqlite or both"),
                    }
                }
                "--quick" => quick = true,
                "--users" => users = Some(number(&mut args, &arg)?),
                "--events" => events = Some(number(&mut args, &arg)?),
                "--outbox" => outbox = Some(number(&mut args, &arg)?),
                "--requests" => requests = number(&mut args, &arg)?,
                "--database-url" => database_url = Some(value(&mut args, &arg)?),
                "--log" => log = value(&mut args, &arg)?,
                "--out" => out = PathBuf::from(value(&mut args, &arg)?),
                "-h" | "--help" => return Ok(None),
                other => bail!("unknown argument '{other}'\n\n{USAGE}"),
            }
        }
        let server = server.with_context(|| format!("--server is required\n\n{USAGE}"))?;
        let defaults = if quick { Sizes::QUICK } else { Sizes::FULL };
        let sizes = Sizes {
            users: users.unwrap_or(defaults.users),
            events: events.unwrap_or(defaults.events),
            outbox: outbox.unwrap_or(defaults.outbox),
        };
        // Addresses have six digits, and the selective search needs 100 of them.
        ensure!(
            (1_000..=999_999).contains(&sizes.users),
            "--users must be between 1 000 and 999 999"
        );
        // Deep pages need more than 21 pages of 50 (the outbox's sent mail is 90 %).
        ensure!(sizes.events >= 2_000, "--events must be at least 2 000");
        ensure!(sizes.outbox >= 2_000, "--outbox must be at least 2 000");
        ensure!(requests >= 1, "--requests must be at least 1");
        let database_url = database_url
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        Ok(Some(Self {
            server,
            backends,
            sizes,
            requests,
            database_url,
            log,
            out,
        }))
    }
}

/// The value following a flag.
fn value(args: &mut impl Iterator<Item = String>, flag: &str) -> anyhow::Result<String> {
    args.next()
        .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
}

/// The whole number following a flag.
fn number<T: std::str::FromStr>(
    args: &mut impl Iterator<Item = String>,
    flag: &str,
) -> anyhow::Result<T> {
    let raw = value(args, flag)?;
    raw.parse()
        .map_err(|_| anyhow::anyhow!("{flag}: '{raw}' is not a whole number"))
}
