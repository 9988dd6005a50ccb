//! Throughput benchmark of the recovery pages and endpoints (issue 5).
//!
//! How fast is fast enough depends on the machine, so every figure is measured beside a
//! baseline taken in the same run and reported as a ratio to it: resets against what
//! argon2id allows on every core (a), forgot requests against their own database
//! statements issued directly (b), pages against a minimal actix-web handler serving a
//! page of the same size (c). Against the Django anchor measured on this machine kind,
//! figures are also given as multiples.
//!
//! For each backend (PostgreSQL, then SQLite) it creates a fresh database, starts the
//! release server on it (rate limits on but never refusing, requests spread over 4096
//! fake client addresses through `X-Forwarded-For`), seeds accounts and reset tokens,
//! measures baseline (b) and then every scenario with a closed-loop load generator,
//! sampling the server's resident memory as it goes; the server is stopped and the
//! database dropped at the end, on an error too.
//!
//! Run it with `scripts/bench` (`--quick` for a short smoke run, `--backend postgres` for
//! one backend). It prints one report and writes it to `target/bench/report.md`, with a
//! latency chart in `target/bench/latency.svg` and the server logs beside them. Targets
//! are reported, not enforced: the exit code is 0 unless the harness itself failed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use latchkey_bench as support;

mod baselines;
mod load;
mod report;
mod scenarios;
mod seed;
mod svg;
mod workloads;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use latchkey::{config::DatabaseUrl, crypto::Keys, db};

use crate::{
    load::LoadConfig,
    report::{BackendReport, PageBaseline, RunReport},
    support::{ALNUM, LOWER_ALNUM, Rng, Server, TempDatabase, free_port, http_client, wait_ready},
    workloads::Site,
};

/// The server's rate limits: on, so every request runs the limiter's statements, but so
/// high that nothing is refused.
const RATE_LIMIT: &str = "1000000000/600";
/// The window of [`RATE_LIMIT`], which baseline (b) needs to compute its counters.
pub const RATE_WINDOW: Duration = Duration::from_secs(600);
/// The server's default database pool, which baseline (b) uses too.
const SERVER_POOL_SIZE: u32 = 10;
/// Temporary databases are named `latchkey_bench_<random>`.
const DB_PREFIX: &str = "latchkey_bench";

const USAGE: &str = "usage: bench --server PATH [--backend postgres|sqlite|both] [--duration S]
             [--warmup S] [--quick] [--connections N] [--database-url URL]
             [--log FILTER] [--out DIR]

  --server PATH        the release latchkey binary to measure
  --backend B          postgres, sqlite or both (default both; PostgreSQL first)
  --duration S         measured seconds per scenario and baseline (default 10; 3 with --quick)
  --warmup S           unrecorded seconds before each measurement (default 2; 1 with --quick)
  --quick              a smoke run
  --connections N      concurrent connections, as wrk -c (default 16)
  --database-url URL   admin URL of a PostgreSQL server where databases may be created
                       (default $TEST_DATABASE_URL or postgres://postgres@127.0.0.1:5432/postgres)
  --log FILTER         the server's RUST_LOG (default info, the production default)
  --out DIR            where report.md, latency.svg and the server logs go (default target/bench)";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole benchmark. Returns whether every backend could be measured.
async fn run(args: &Args) -> anyhow::Result<bool> {
    // The server runs in a temporary working directory (so no `.env` is read), where a
    // relative program path would no longer resolve.
    let server_path = std::fs::canonicalize(&args.server)
        .with_context(|| format!("--server {}", args.server.display()))?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;

    eprintln!("baseline (a): argon2id on {} threads", load::cores());
    let hashes_per_second = baselines::hash_rate(&args.config).await?;
    eprintln!("  {hashes_per_second:.1} hashes/s");
    let mut report = RunReport {
        config: args.config,
        log_filter: args.log.clone(),
        commit: commit(),
        hashes_per_second,
        page: None,
        backends: Vec::new(),
        failures: Vec::new(),
    };
    for &backend in &args.backends {
        eprintln!("{}:", backend.name());
        match run_backend(backend, args, &server_path, &mut report).await {
            Ok(measured) => report.backends.push(measured),
            Err(e) => {
                eprintln!("bench: {}: {e:#}", backend.name());
                report.failures.push(format!("{}: {e:#}", backend.name()));
            }
        }
    }

    let text = report::render(&report)?;
    print!("{text}");
    write(&args.out.join("report.md"), &text)?;
    let series: Vec<svg::Series> = report
        .backends
        .iter()
        .map(|b| svg::Series {
            name: b.backend.name(),
            rows: &b.rows,
        })
        .collect();
    write(&args.out.join("latency.svg"), &svg::render(&series)?)?;
    eprintln!("report written to {}", args.out.join("report.md").display());
    Ok(report.failures.is_empty())
}

/// One backend: a fresh database and server, seed data, baseline (b) (and (c), the first
/// time), the scenarios. The server is killed and the database dropped on return.
async fn run_backend(
    backend: Backend,
    args: &Args,
    server_path: &Path,
    report: &mut RunReport,
) -> anyhow::Result<BackendReport> {
    let mut rng = Rng::seeded();
    // Declared before the server, so it is dropped after it: the server is gone before its
    // database is.
    let database = match backend {
        Backend::Postgres => TempDatabase::postgres(&args.database_url, DB_PREFIX, &mut rng)?,
        Backend::Sqlite => TempDatabase::sqlite(DB_PREFIX, &mut rng)?,
    };
    let port = free_port()?;
    let secret = rng.string(ALNUM, 80);
    let env = server_env(&database.url, port, &secret, &args.log);
    let log = args.out.join(format!("server-{}.log", backend.slug()));
    let mut server = Server::spawn_logged(server_path, &env, &log)?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http_client()?, &base, &mut server)
        .await
        .with_context(|| format!("see {}", log.display()))?;

    let url = DatabaseUrl::parse(&database.url).map_err(anyhow::Error::msg)?;
    let pool = db::build_pool(&url, SERVER_POOL_SIZE)?;
    let plan = seed::Plan::new(&args.config, report.hashes_per_second);
    let keys = Keys::derive(&secret, None);
    let seeded = seed::seed(&pool, server_path, &env, &keys, &plan).await?;

    if report.page.is_none() {
        report.page = Some(page_baseline(&base, &args.config).await?);
    }
    eprintln!("  baseline (b): the forgot handler's statements");
    let floor = baselines::db_floor(&pool, &args.config, rng.string(LOWER_ALNUM, 6)).await?;
    eprintln!("    {}", floor.summary());
    scenarios::clear_backlog(&pool).await?;

    let site = Arc::new(Site::new(base, rng.string(LOWER_ALNUM, 6)));
    let runner = scenarios::Runner::new(site, seeded, &mut server, &pool, args.config);
    let (rows, notes) = runner.run_all().await;
    let hwm_mib = load::status_mib(server.pid(), "VmHWM:");
    Ok(BackendReport {
        backend,
        floor,
        rows,
        hwm_mib,
        notes,
        log,
    })
}

/// Baseline (c), serving the bytes of a real `GET /forgot` from `base`.
async fn page_baseline(base: &str, config: &LoadConfig) -> anyhow::Result<PageBaseline> {
    let page = http_client()?
        .get(format!("{base}/forgot"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let bytes = page.len();
    eprintln!("  baseline (c): a static {bytes}-byte page on a minimal actix-web server");
    let m = baselines::static_page(page, config).await?;
    eprintln!("    {}", m.summary());
    Ok(PageBaseline { bytes, m })
}

/// The server's environment: defaults except for what the benchmark needs. No
/// `SMTP_URL`: the dev mailbox keeps mail in memory.
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
        // The load generator is the proxy: its X-Forwarded-For names the client.
        ("TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
        ("RATE_LIMIT_FORGOT", RATE_LIMIT.to_owned()),
        ("RATE_LIMIT_LOGIN", RATE_LIMIT.to_owned()),
        ("RATE_LIMIT_RESET", RATE_LIMIT.to_owned()),
        ("RUST_LOG", log.to_owned()),
    ]
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

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Command line

/// A database backend the server can run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Command-line options, parsed by hand as `timing_parity` does.
struct Args {
    server: PathBuf,
    backends: Vec<Backend>,
    config: LoadConfig,
    database_url: String,
    log: String,
    out: PathBuf,
}

impl Args {
    /// Reads `std::env::args`; `None` when help was asked for.
    fn parse() -> anyhow::Result<Option<Self>> {
        let mut server = None;
        let mut backends = vec![Backend::Postgres, Backend::Sqlite];
        let (mut duration, mut warmup): (Option<u64>, Option<u64>) = (None, None);
        let mut quick = false;
        let mut connections: usize = 16;
        let mut database_url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.trim().is_empty());
        let mut log = "info".to_owned();
        let mut out = PathBuf::from("target/bench");
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
                "--duration" => duration = Some(number(&mut args, &arg)?),
                "--warmup" => warmup = Some(number(&mut args, &arg)?),
                "--quick" => quick = true,
                "--connections" => connections = number(&mut args, &arg)?,
                "--database-url" => database_url = Some(value(&mut args, &arg)?),
                "--log" => log = value(&mut args, &arg)?,
                "--out" => out = PathBuf::from(value(&mut args, &arg)?),
                "-h" | "--help" => return Ok(None),
                other => bail!("unknown argument '{other}'\n\n{USAGE}"),
            }
        }
        let server = server.with_context(|| format!("--server is required\n\n{USAGE}"))?;
        let measure = duration.unwrap_or(if quick { 3 } else { 10 });
        let warmup = warmup.unwrap_or(if quick { 1 } else { 2 });
        ensure!(measure >= 1, "--duration must be at least 1 second");
        ensure!(connections >= 1, "--connections must be at least 1");
        let database_url = database_url
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        Ok(Some(Self {
            server,
            backends,
            config: LoadConfig {
                connections,
                warmup: Duration::from_secs(warmup),
                measure: Duration::from_secs(measure),
            },
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
