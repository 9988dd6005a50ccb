//! Timing parity of the recovery and sign-in endpoints (SPEC §8–§9).
//!
//! The spec promises that registered and unknown addresses get the same status, body *and
//! timing* from `POST /forgot` and `POST /auth/forgot` (and so do disabled and throttled
//! accounts), and that signing in with an unknown address costs one argon2 verification,
//! exactly like a wrong password. Tests can check statuses and bodies; only a measurement
//! can check timing. This benchmark starts the release binary on a fresh PostgreSQL
//! database, sends `--n` requests of each of ten kinds in one shuffled sequence (so drift,
//! caches and the mail worker's background load fall on every kind alike), and compares
//! the latency distributions pairwise: the difference of medians, a two-sided Mann-Whitney
//! U test and the Kolmogorov-Smirnov distance.
//!
//! Run it with `scripts/bench-timing` (`--quick` for a short smoke run). The report is
//! printed and written to `target/timing-parity.md`; the exit code is 0 only when every
//! pair is within target and the forgot endpoints answer byte-identical bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use latchkey_bench as support;

use std::{
    fmt::Write as _,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use diesel::{
    PgConnection, QueryableByName, RunQueryDsl, connection::SimpleConnection, sql_types::BigInt,
};
use reqwest::{Client, StatusCode};

use support::{
    ALNUM, LOGIN_EMAIL, LOWER_ALNUM, Rng, Server, TempDatabase, create_login_account, csrf_in,
    free_port, http_client, wait_ready,
};

/// Requests of each kind sent first and thrown away: connection set-up, lazy statics,
/// prepared statements and the CPU's frequency settle before anything is measured.
const WARMUP: usize = 100;
/// The largest difference of medians a pair may show, in milliseconds.
const MAX_DELTA_MS: f64 = 0.3;
/// The smallest Mann-Whitney p-value a pair may show.
const MIN_P: f64 = 0.01;

const WRONG_PASSWORD: &str = "wrong horse battery staple x";
const DISABLED_EMAIL: &str = "disabled@bench.test";
const THROTTLED_EMAIL: &str = "throttled@bench.test";

const USAGE: &str =
    "usage: timing_parity --server PATH [--n N] [--quick] [--database-url URL] [--out PATH]

  --server PATH        the release latchkey binary to measure
  --n N                measured requests per kind (default 1000; at least 1000 unless --quick)
  --quick              a smoke run: allows a smaller --n (default 200)
  --database-url URL   admin URL of a PostgreSQL server where databases may be created
                       (default $TEST_DATABASE_URL or postgres://postgres@127.0.0.1:5432/postgres)
  --out PATH           where the markdown report goes (default target/timing-parity.md)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("timing_parity: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // `run` owns the server and the database guards, so both are gone before we exit.
    match run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("timing_parity: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole benchmark: set up, seed, warm up, measure, report. Returns whether it passed.
async fn run(args: &Args) -> anyhow::Result<bool> {
    let mut rng = Rng::seeded();
    // The server runs in a temporary working directory (so no `.env` is read), where a
    // relative program path would no longer resolve.
    let server_path = std::fs::canonicalize(&args.server)
        .with_context(|| format!("--server {}", args.server.display()))?;
    // Declared before the server, so it is dropped after it: the server is gone before its
    // database is.
    let db = TempDatabase::postgres(&args.database_url, "latchkey_timing", &mut rng)?;
    let port = free_port()?;
    let env = server_env(&db.url, port, &mut rng);
    let mut server = Server::spawn(&server_path, &env)?;
    let client = http_client()?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &base, &mut server).await?;

    let registered = 2 * (args.n + WARMUP) + 10;
    seed(&server_path, &env, &db, registered)?;
    throttle(&client, &base, &db).await?;
    let target = Target::connect(client, &base).await?;

    let mut planner = Planner::new(&mut rng);
    let warmup = planner.jobs(WARMUP, &mut rng);
    let warmup = run_jobs(&target, &warmup, "warm-up").await?;
    let jobs = planner.jobs(args.n, &mut rng);
    let mut outcome = run_jobs(&target, &jobs, "measured").await?;
    outcome.errors.extend(warmup.errors);

    let findings = Findings::new(&outcome, jobs.len());
    let report = findings.render(args, &server_path)?;
    print!("{report}");
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &report).with_context(|| format!("write {}", args.out.display()))?;
    eprintln!("report written to {}", args.out.display());
    Ok(findings.passed())
}

// ---------------------------------------------------------------------------------------
// Command line

/// Command-line options, parsed by hand: five flags do not need clap.
struct Args {
    server: PathBuf,
    n: usize,
    database_url: String,
    out: PathBuf,
}

impl Args {
    /// Reads `std::env::args`; `None` when help was asked for.
    fn parse() -> anyhow::Result<Option<Self>> {
        let mut server = None;
        let mut n = None;
        let mut quick = false;
        let mut database_url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.trim().is_empty());
        let mut out = PathBuf::from("target/timing-parity.md");
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--server" => server = Some(PathBuf::from(value(&mut args, &arg)?)),
                "--n" => {
                    let raw = value(&mut args, &arg)?;
                    n = Some(
                        raw.parse::<usize>()
                            .with_context(|| format!("--n: '{raw}' is not a whole number"))?,
                    );
                }
                "--quick" => quick = true,
                "--database-url" => database_url = Some(value(&mut args, &arg)?),
                "--out" => out = PathBuf::from(value(&mut args, &arg)?),
                "-h" | "--help" => return Ok(None),
                other => bail!("unknown argument '{other}'\n\n{USAGE}"),
            }
        }
        let server = server.with_context(|| format!("--server is required\n\n{USAGE}"))?;
        let n = n.unwrap_or(if quick { 200 } else { 1000 });
        ensure!(
            quick || n >= 1000,
            "--n must be at least 1000 for a meaningful result (pass --quick for a smoke run)"
        );
        ensure!(n >= 2, "--n must be at least 2");
        let database_url = database_url
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        Ok(Some(Self {
            server,
            n,
            database_url,
            out,
        }))
    }
}

/// The value following a flag.
fn value(args: &mut impl Iterator<Item = String>, flag: &str) -> anyhow::Result<String> {
    args.next()
        .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
}

// ---------------------------------------------------------------------------------------
// Set-up: the server's environment, seed data

/// The server's environment. Rate limits are lifted so thousands of requests from one
/// address are all served; the long cooldown makes every request for the throttled address
/// silently throttled. No `SMTP_URL`: the dev mailbox keeps mail in memory.
fn server_env(database_url: &str, port: u16, rng: &mut Rng) -> Vec<(&'static str, String)> {
    let listen = format!("127.0.0.1:{port}");
    vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("BASE_URL", format!("http://{listen}")),
        ("LISTEN_ADDR", listen),
        ("SECRET_KEY", rng.string(ALNUM, 80)),
        ("RESET_COOLDOWN_SECS", "86400".to_owned()),
        ("RESET_DAILY_CAP", "5".to_owned()),
        ("RATE_LIMIT_FORGOT", "1000000/600".to_owned()),
        ("RATE_LIMIT_LOGIN", "1000000/600".to_owned()),
        ("RATE_LIMIT_RESET", "1000000/600".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
}

/// A row of `SELECT count(*) AS n …`.
#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> anyhow::Result<i64> {
    Ok(diesel::sql_query(sql).get_result::<Count>(conn)?.n)
}

/// Creates the accounts: one through the CLI (so its hash is a real one, made with the
/// server's parameters), the rest in bulk by SQL with a copy of that hash — hashing
/// thousands of passwords through the CLI would take far longer than the benchmark.
fn seed(
    server: &Path,
    env: &[(&'static str, String)],
    db: &TempDatabase,
    registered: usize,
) -> anyhow::Result<()> {
    create_login_account(server, env)?;
    let mut conn = db.connect()?;
    let insert = "INSERT INTO users (email, password_hash, is_admin, disabled, created_at, \
                  password_changed_at)";
    let now = "now() AT TIME ZONE 'UTC'";
    let login = format!("u.email = '{LOGIN_EMAIL}'");
    conn.batch_execute(&format!(
        "{insert} SELECT 'reg' || g || '@bench.test', u.password_hash, FALSE, FALSE, {now}, {now}
             FROM users u CROSS JOIN generate_series(1, {registered}) g WHERE {login};
         {insert} SELECT '{DISABLED_EMAIL}', u.password_hash, FALSE, TRUE, {now}, {now}
             FROM users u WHERE {login};
         {insert} SELECT '{THROTTLED_EMAIL}', u.password_hash, FALSE, FALSE, {now}, {now}
             FROM users u WHERE {login};"
    ))
    .context("seed the accounts")?;
    let users = count(&mut conn, "SELECT count(*) AS n FROM users")?;
    ensure!(
        users == registered as i64 + 3,
        "expected {} accounts after seeding, found {users}",
        registered + 3
    );
    Ok(())
}

/// Makes `throttled@bench.test` throttled: one request, then wait until the worker has
/// issued its token. With a one-day cooldown every later request for it is throttled.
async fn throttle(client: &Client, base: &str, db: &TempDatabase) -> anyhow::Result<()> {
    let res = client
        .post(format!("{base}/auth/forgot"))
        .json(&serde_json::json!({ "email": THROTTLED_EMAIL }))
        .send()
        .await?;
    ensure!(
        res.status() == StatusCode::OK,
        "POST /auth/forgot for {THROTTLED_EMAIL} answered {}",
        res.status()
    );
    let sql = format!(
        "SELECT count(*) AS n FROM reset_tokens rt JOIN users u ON u.id = rt.user_id \
         WHERE u.email = '{THROTTLED_EMAIL}'"
    );
    let mut conn = db.connect()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&mut conn, &sql)? < 1 {
        ensure!(
            Instant::now() < deadline,
            "the worker issued no reset token for {THROTTLED_EMAIL} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// What is measured

/// The endpoint a request goes to, and the group its kinds are compared within.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Form,
    Api,
    Login,
    /// The positive control: a kind that *does* differ, to show the test can see it.
    Control,
}

impl Endpoint {
    const ALL: [Endpoint; 3] = [Endpoint::Form, Endpoint::Api, Endpoint::Login];

    fn name(self) -> &'static str {
        match self {
            Endpoint::Form => "form forgot",
            Endpoint::Api => "api forgot",
            Endpoint::Login => "sign-in",
            Endpoint::Control => "control",
        }
    }

    /// The status every request of this group must get: 200 for a valid forgot request,
    /// 422 for a failed sign-in (the form again, one generic message) and for the
    /// control's malformed address.
    fn expected(self) -> StatusCode {
        match self {
            Endpoint::Form | Endpoint::Api => StatusCode::OK,
            Endpoint::Login | Endpoint::Control => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn kinds(self) -> Vec<Kind> {
        KINDS.into_iter().filter(|k| k.endpoint() == self).collect()
    }
}

/// The kinds of request; within a group, they must not be told apart by timing. The
/// control kind must be: it skips the one insert a valid forgot request makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    FormRegistered,
    FormUnknown,
    FormDisabled,
    FormThrottled,
    ApiRegistered,
    ApiUnknown,
    ApiDisabled,
    ApiThrottled,
    LoginWrongPassword,
    LoginUnknown,
    ApiMalformed,
}

const KINDS: [Kind; 11] = [
    Kind::FormRegistered,
    Kind::FormUnknown,
    Kind::FormDisabled,
    Kind::FormThrottled,
    Kind::ApiRegistered,
    Kind::ApiUnknown,
    Kind::ApiDisabled,
    Kind::ApiThrottled,
    Kind::LoginWrongPassword,
    Kind::LoginUnknown,
    Kind::ApiMalformed,
];

impl Kind {
    fn endpoint(self) -> Endpoint {
        match self {
            Kind::FormRegistered | Kind::FormUnknown | Kind::FormDisabled | Kind::FormThrottled => {
                Endpoint::Form
            }
            Kind::ApiRegistered | Kind::ApiUnknown | Kind::ApiDisabled | Kind::ApiThrottled => {
                Endpoint::Api
            }
            Kind::LoginWrongPassword | Kind::LoginUnknown => Endpoint::Login,
            Kind::ApiMalformed => Endpoint::Control,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::FormRegistered | Kind::ApiRegistered => "registered",
            Kind::FormUnknown | Kind::ApiUnknown => "unknown",
            Kind::FormDisabled | Kind::ApiDisabled => "disabled",
            Kind::FormThrottled | Kind::ApiThrottled => "throttled",
            Kind::LoginWrongPassword => "wrong password",
            Kind::LoginUnknown => "unknown address",
            Kind::ApiMalformed => "api forgot with a malformed address (422, nothing queued)",
        }
    }

    fn name(self) -> String {
        format!("{}: {}", self.endpoint().name(), self.label())
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One request to send.
struct Job {
    kind: Kind,
    email: String,
}

/// Hands out addresses: a registered address is used once in the whole run (its first
/// request really issues a token, the expensive path for the worker), and unknown
/// addresses carry a per-run tag so no earlier run's rows can match them.
struct Planner {
    tag: String,
    next_registered: usize,
    next_seq: usize,
}

impl Planner {
    fn new(rng: &mut Rng) -> Self {
        Self {
            tag: rng.string(LOWER_ALNUM, 6),
            next_registered: 0,
            next_seq: 0,
        }
    }

    /// `per_kind` requests of every kind, shuffled together.
    fn jobs(&mut self, per_kind: usize, rng: &mut Rng) -> Vec<Job> {
        let mut jobs = Vec::with_capacity(per_kind * KINDS.len());
        for kind in KINDS {
            for _ in 0..per_kind {
                let email = self.address(kind);
                jobs.push(Job { kind, email });
            }
        }
        rng.shuffle(&mut jobs);
        jobs
    }

    fn address(&mut self, kind: Kind) -> String {
        self.next_seq += 1;
        let (seq, tag) = (self.next_seq, &self.tag);
        match kind {
            Kind::FormRegistered | Kind::ApiRegistered => {
                self.next_registered += 1;
                format!("reg{}@bench.test", self.next_registered)
            }
            Kind::FormUnknown | Kind::ApiUnknown => format!("nobody{seq}-{tag}@bench.test"),
            Kind::FormDisabled | Kind::ApiDisabled => DISABLED_EMAIL.to_owned(),
            Kind::FormThrottled | Kind::ApiThrottled => THROTTLED_EMAIL.to_owned(),
            Kind::LoginWrongPassword => LOGIN_EMAIL.to_owned(),
            Kind::LoginUnknown => format!("ghost{seq}-{tag}@bench.test"),
            Kind::ApiMalformed => format!("not-an-address-{seq}-{tag}"),
        }
    }
}

/// Where and how requests are sent: one client, one CSRF token for all its form posts.
struct Target {
    client: Client,
    forgot_url: String,
    api_url: String,
    login_url: String,
    csrf: String,
}

/// One answer: its status, its body and the time from sending to the last body byte.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    elapsed: Duration,
}

impl Target {
    /// Reads the CSRF token from `GET /forgot`; the cookie jar keeps the matching cookie.
    async fn connect(client: Client, base: &str) -> anyhow::Result<Self> {
        let html = client
            .get(format!("{base}/forgot"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let csrf = csrf_in(&html).context("GET /forgot has no csrf_token field")?;
        Ok(Self {
            client,
            forgot_url: format!("{base}/forgot"),
            api_url: format!("{base}/auth/forgot"),
            login_url: format!("{base}/login"),
            csrf,
        })
    }

    /// Sends one request; the request is built before the clock starts.
    async fn send(&self, job: &Job) -> anyhow::Result<Answer> {
        let email = job.email.as_str();
        let csrf = self.csrf.as_str();
        let request = match job.kind.endpoint() {
            Endpoint::Form => self
                .client
                .post(self.forgot_url.as_str())
                .form(&[("email", email), ("csrf_token", csrf)]),
            Endpoint::Api | Endpoint::Control => self
                .client
                .post(self.api_url.as_str())
                .json(&serde_json::json!({ "email": email })),
            Endpoint::Login => self.client.post(self.login_url.as_str()).form(&[
                ("email", email),
                ("password", WRONG_PASSWORD),
                ("csrf_token", csrf),
            ]),
        };
        let started = Instant::now();
        let response = request
            .send()
            .await
            .with_context(|| format!("{} for {email}", job.kind.name()))?;
        let status = response.status();
        let body = response.bytes().await.context("read a response body")?;
        let elapsed = started.elapsed();
        Ok(Answer {
            status,
            body: body.to_vec(),
            elapsed,
        })
    }
}

/// What a run of jobs produced, indexed by `Kind::index`.
struct Outcome {
    /// Latencies in milliseconds of the requests that got the expected status.
    samples: Vec<Vec<f64>>,
    /// The first body of each kind, to compare within a group.
    bodies: Vec<Option<Vec<u8>>>,
    /// One line per request with an unexpected status.
    errors: Vec<String>,
}

/// Sends the jobs one at a time (one request in flight, so requests never queue behind
/// each other) and records each latency. Aborts once more than 1% answered unexpectedly.
async fn run_jobs(target: &Target, jobs: &[Job], phase: &str) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        samples: vec![Vec::new(); KINDS.len()],
        bodies: vec![None; KINDS.len()],
        errors: Vec::new(),
    };
    let step = (jobs.len() / 10).max(1);
    for (done, job) in jobs.iter().enumerate() {
        let answer = target.send(job).await?;
        let k = job.kind.index();
        if answer.status == job.kind.endpoint().expected() {
            outcome.samples[k].push(answer.elapsed.as_secs_f64() * 1000.0);
            if outcome.bodies[k].is_none() {
                outcome.bodies[k] = Some(answer.body);
            }
        } else {
            outcome.errors.push(format!(
                "{phase}: {} ({}) answered {}",
                job.kind.name(),
                job.email,
                answer.status
            ));
            ensure!(
                outcome.errors.len() * 100 <= jobs.len(),
                "more than 1% of the {phase} requests answered unexpectedly; first: {}",
                outcome.errors[0]
            );
        }
        if (done + 1).is_multiple_of(step) {
            eprintln!("{phase}: {}/{} requests", done + 1, jobs.len());
        }
    }
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------
// Statistics

/// Summary of one kind's latencies, in milliseconds.
struct Stats {
    sorted: Vec<f64>,
    median: f64,
    p90: f64,
    mean: f64,
}

impl Stats {
    fn new(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let (median, p90, mean) = if n == 0 {
            (f64::NAN, f64::NAN, f64::NAN)
        } else {
            let median = if n % 2 == 1 {
                sorted[n / 2]
            } else {
                (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
            };
            // Nearest rank.
            let rank = ((0.9 * n as f64).ceil() as usize).clamp(1, n);
            (
                median,
                sorted[rank - 1],
                sorted.iter().sum::<f64>() / n as f64,
            )
        };
        Self {
            sorted,
            median,
            p90,
            mean,
        }
    }
}

/// The comparison of two kinds of one group, or the positive control.
struct Pair {
    label: String,
    /// A pair that must be told apart: it shows the measurement could see a difference.
    control: bool,
    delta_median: f64,
    z: f64,
    p: f64,
    ks_d: f64,
}

impl Pair {
    fn new(a: Kind, b: Kind, stats: &[Stats]) -> Self {
        let (sa, sb) = (&stats[a.index()], &stats[b.index()]);
        let (z, p) = mann_whitney(&sa.sorted, &sb.sorted);
        Self {
            label: format!("{}: {} vs {}", a.endpoint().name(), a.label(), b.label()),
            control: false,
            delta_median: sa.median - sb.median,
            z,
            p,
            ks_d: ks_distance(&sa.sorted, &sb.sorted),
        }
    }

    /// Within target: medians within 0.3 ms and no significant difference of distribution;
    /// for the control, a significant difference. (A NaN, from a kind without samples,
    /// fails every comparison.)
    fn passed(&self) -> bool {
        if self.control {
            self.p < MIN_P
        } else {
            self.delta_median.abs() <= MAX_DELTA_MS && self.p >= MIN_P
        }
    }
}

/// Two-sided Mann-Whitney U test by the normal approximation, with the tie correction of
/// the variance and a continuity correction. Returns `(z, p)`; z > 0 when `a` tends to be
/// slower than `b`.
fn mann_whitney(a: &[f64], b: &[f64]) -> (f64, f64) {
    if a.is_empty() || b.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (mut rank_sum_a, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].0.total_cmp(&all[i].0).is_eq() {
            j += 1;
        }
        // Positions i..j hold ranks i+1..=j; each gets their average.
        let average_rank = (i + j + 1) as f64 / 2.0;
        let from_a = all[i..j].iter().filter(|(_, in_a)| *in_a).count();
        rank_sum_a += average_rank * from_a as f64;
        let t = (j - i) as f64;
        ties += t * t * t - t;
        i = j;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let n = n1 + n2;
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if variance <= 0.0 {
        // Every value is the same: nothing tells the samples apart.
        return (0.0, 1.0);
    }
    let diff = u - n1 * n2 / 2.0;
    let z = diff.signum() * (diff.abs() - 0.5).max(0.0) / variance.sqrt();
    (z, erfc(z.abs() / std::f64::consts::SQRT_2))
}

/// The coefficients of `erfcc` (Numerical Recipes), lowest power of `t` first.
const ERFC_COEFFICIENTS: [f64; 10] = [
    -1.265_512_23,
    1.000_023_68,
    0.374_091_96,
    0.096_784_18,
    -0.186_288_06,
    0.278_868_07,
    -1.135_203_98,
    1.488_515_87,
    -0.822_152_23,
    0.170_872_77,
];

/// The complementary error function, by the Chebyshev fit of Numerical Recipes (`erfcc`):
/// fractional error below 1.2e-7 everywhere, plenty for a p-value.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = ERFC_COEFFICIENTS
        .iter()
        .rev()
        .fold(0.0_f64, |acc, &c| c + t * acc);
    let ans = t * (poly - z * z).exp();
    if x >= 0.0 { ans } else { 2.0 - ans }
}

/// The Kolmogorov-Smirnov statistic: the largest gap between the two empirical
/// distribution functions. Both inputs are sorted.
fn ks_distance(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0.0_f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / na - j as f64 / nb).abs());
    }
    d
}

// ---------------------------------------------------------------------------------------
// Report

/// Everything the report says, computed from a measured run.
struct Findings {
    stats: Vec<Stats>,
    pairs: Vec<Pair>,
    body_problems: Vec<String>,
    errors: Vec<String>,
    requests: usize,
}

impl Findings {
    fn new(outcome: &Outcome, requests: usize) -> Self {
        let stats: Vec<Stats> = outcome.samples.iter().map(|s| Stats::new(s)).collect();
        let mut pairs = Vec::new();
        for endpoint in Endpoint::ALL {
            let kinds = endpoint.kinds();
            for (i, &a) in kinds.iter().enumerate() {
                for &b in &kinds[i + 1..] {
                    pairs.push(Pair::new(a, b, &stats));
                }
            }
        }
        pairs.push(Pair {
            label: "control: api forgot, unknown vs malformed address".to_owned(),
            control: true,
            ..Pair::new(Kind::ApiUnknown, Kind::ApiMalformed, &stats)
        });
        Self {
            stats,
            pairs,
            body_problems: body_problems(&outcome.bodies),
            errors: outcome.errors.clone(),
            requests,
        }
    }

    fn failed_pairs(&self) -> usize {
        self.pairs.iter().filter(|p| !p.passed()).count()
    }

    fn passed(&self) -> bool {
        self.failed_pairs() == 0 && self.body_problems.is_empty()
    }

    /// The markdown report.
    fn render(&self, args: &Args, server: &Path) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        writeln!(out, "# Timing parity\n")?;
        writeln!(
            out,
            "- date: {}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
        )?;
        writeln!(
            out,
            "- requests per kind: {} measured after {WARMUP} warm-up (discarded), all kinds \
             shuffled together, one request in flight",
            args.n
        )?;
        writeln!(
            out,
            "- machine: {cores} cores, {} {}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )?;
        writeln!(out, "- server: `{}` on PostgreSQL", server.display())?;
        writeln!(
            out,
            "- target per pair: |Δ median| ≤ {MAX_DELTA_MS} ms and Mann-Whitney p ≥ {MIN_P}; \
             the control pair differs by one skipped insert and must be detected (p < {MIN_P}), \
             which shows the run could see a leak that small\n"
        )?;

        writeln!(out, "| kind | n | median ms | p90 ms | mean ms |")?;
        writeln!(out, "|---|---:|---:|---:|---:|")?;
        for kind in KINDS {
            let s = &self.stats[kind.index()];
            writeln!(
                out,
                "| {} | {} | {:.3} | {:.3} | {:.3} |",
                kind.name(),
                s.sorted.len(),
                s.median,
                s.p90,
                s.mean
            )?;
        }

        writeln!(out, "\n| pair | Δ median ms | MW z | p | KS D | verdict |")?;
        writeln!(out, "|---|---:|---:|---:|---:|---|")?;
        for pair in &self.pairs {
            let verdict = match (pair.control, pair.passed()) {
                (false, true) => "ok",
                (false, false) => "**outside**",
                (true, true) => "detected, as it must be",
                (true, false) => "**not detected**",
            };
            writeln!(
                out,
                "| {} | {:+.3} | {:+.2} | {:.4} | {:.3} | {verdict} |",
                pair.label, pair.delta_median, pair.z, pair.p, pair.ks_d
            )?;
        }

        writeln!(out)?;
        if self.body_problems.is_empty() {
            writeln!(
                out,
                "Response bodies: byte-identical across the four kinds of each forgot endpoint."
            )?;
        }
        for problem in &self.body_problems {
            writeln!(out, "**Response bodies differ** — {problem}.")?;
        }
        writeln!(
            out,
            "\nUnexpected statuses: {} (measured requests: {}).",
            self.errors.len(),
            self.requests
        )?;
        for error in self.errors.iter().take(10) {
            writeln!(out, "- {error}")?;
        }

        let failed = self.failed_pairs();
        if failed == 0 {
            writeln!(out, "\n**All pairs within target**")?;
        } else {
            writeln!(out, "\n**{failed} pairs outside target**")?;
        }
        Ok(out)
    }
}

/// Compares, within each forgot endpoint, the first body of every kind with the first
/// registered one: they must be byte-identical (the form's CSRF token is the same for
/// every request of one client, so the pages are too).
fn body_problems(bodies: &[Option<Vec<u8>>]) -> Vec<String> {
    let mut problems = Vec::new();
    for endpoint in [Endpoint::Form, Endpoint::Api] {
        let kinds = endpoint.kinds();
        let reference = kinds[0];
        for &other in &kinds[1..] {
            match (&bodies[reference.index()], &bodies[other.index()]) {
                (Some(a), Some(b)) if a == b => {}
                (Some(_), Some(_)) => problems.push(format!(
                    "{}: the {} body differs from the {} body",
                    endpoint.name(),
                    other.label(),
                    reference.label()
                )),
                _ => problems.push(format!(
                    "{}: no successful answer to compare for {} or {}",
                    endpoint.name(),
                    reference.label(),
                    other.label()
                )),
            }
        }
    }
    problems
}
