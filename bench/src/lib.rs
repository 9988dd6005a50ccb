//! What Latchkey's benchmarks share (each is a binary of this crate, in `src/bin/`): a
//! small random number generator, a throwaway database on PostgreSQL or SQLite, the release
//! server as a child process, SMTP servers to deliver to ([`smtp`]), the few HTTP helpers
//! they need and their command-line reading.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs::File,
    io::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail, ensure};
use diesel::{Connection, PgConnection, connection::SimpleConnection};
use reqwest::{Client, StatusCode, redirect::Policy};

pub mod smtp;

/// The account created through the CLI, whose real password hash the seeded accounts copy.
pub const LOGIN_EMAIL: &str = "login@bench.test";
pub const LOGIN_PASSWORD: &str = "plum tractor violet oasis";

pub const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The name of the benchmark running, for messages.
fn program() -> String {
    std::env::args()
        .next()
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bench".to_owned())
}

// ---------------------------------------------------------------------------------------
// Randomness

/// A xorshift64* generator seeded from the clock and the process id. Names, the secret key
/// and the shuffle need variety, not cryptographic quality, and this has no API to drift.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (the modulo bias is negligible for our bounds).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    /// `len` characters drawn from `alphabet`.
    pub fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| char::from(alphabet[self.below(alphabet.len())]))
            .collect()
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------
// A database for one run

/// Where a temporary database lives.
enum Place {
    /// A database on a PostgreSQL server, created through the admin URL.
    Postgres { admin_url: String, name: String },
    /// A directory holding the SQLite file (and its `-wal` and `-shm` companions).
    Sqlite { dir: PathBuf },
}

/// A database that exists for this run only: a fresh PostgreSQL database, or a SQLite file
/// in a fresh temporary directory. Dropped (with its connections, or its files) when this
/// value is, including on an error.
pub struct TempDatabase {
    /// The `DATABASE_URL` the server gets.
    pub url: String,
    place: Place,
}

impl TempDatabase {
    /// Creates `<prefix>_<random>` on the PostgreSQL server at `admin_url`.
    pub fn postgres(admin_url: &str, prefix: &str, rng: &mut Rng) -> anyhow::Result<Self> {
        let name = format!("{prefix}_{}", rng.string(LOWER_ALNUM, 10));
        let mut admin = PgConnection::establish(admin_url).context(
            "could not reach PostgreSQL (start it, or pass --database-url / TEST_DATABASE_URL)",
        )?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let mut url = url::Url::parse(admin_url).context("the database URL is not a URL")?;
        url.set_path(&format!("/{name}"));
        Ok(Self {
            url: url.to_string(),
            place: Place::Postgres {
                admin_url: admin_url.to_owned(),
                name,
            },
        })
    }

    /// A `sqlite://` URL for a file in a new directory `<prefix>_<random>` under the
    /// system's temporary directory; the server creates and migrates the file.
    pub fn sqlite(prefix: &str, rng: &mut Rng) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("{prefix}_{}", rng.string(LOWER_ALNUM, 10)));
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self {
            url: format!("sqlite://{}", dir.join("latchkey.db").display()),
            place: Place::Sqlite { dir },
        })
    }

    /// A direct connection, for checks in SQL (PostgreSQL only).
    pub fn connect(&self) -> anyhow::Result<PgConnection> {
        match &self.place {
            Place::Postgres { .. } => {
                PgConnection::establish(&self.url).context("connect to the benchmark database")
            }
            Place::Sqlite { .. } => bail!("TempDatabase::connect is for PostgreSQL databases"),
        }
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        match &self.place {
            Place::Postgres { admin_url, name } => {
                let dropped = PgConnection::establish(admin_url)
                    .map_err(anyhow::Error::from)
                    .and_then(|mut admin| {
                        admin
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .map_err(anyhow::Error::from)
                    });
                if let Err(e) = dropped {
                    eprintln!("{}: could not drop database {name}: {e:#}", program());
                }
            }
            Place::Sqlite { dir } => {
                if let Err(e) = std::fs::remove_dir_all(dir) {
                    eprintln!("{}: could not remove {}: {e}", program(), dir.display());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server

/// A port nobody listens on right now (the listener is closed before the server binds).
pub fn free_port() -> anyhow::Result<u16> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    Ok(port)
}

/// The latchkey binary with exactly the given environment (plus `PATH` and `HOME`), run in
/// the temporary directory so a developer's `.env` cannot change what is measured.
pub fn latchkey_command(server: &Path, env: &[(&'static str, String)]) -> Command {
    let mut cmd = Command::new(server);
    cmd.env_clear().current_dir(std::env::temp_dir());
    for inherited in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(inherited) {
            cmd.env(inherited, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The server process; killed when this value is dropped, including on an error.
pub struct Server(Child);

impl Server {
    /// Starts the server with its standard error on ours and its standard output dropped.
    pub fn spawn(path: &Path, env: &[(&'static str, String)]) -> anyhow::Result<Self> {
        Self::start(path, env, Stdio::null(), Stdio::inherit())
    }

    /// Starts the server with both of its output streams going to the file `log`.
    pub fn spawn_logged(
        path: &Path,
        env: &[(&'static str, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let stdout = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let stderr = stdout.try_clone()?;
        Self::start(path, env, Stdio::from(stdout), Stdio::from(stderr))
    }

    fn start(
        path: &Path,
        env: &[(&'static str, String)],
        stdout: Stdio,
        stderr: Stdio,
    ) -> anyhow::Result<Self> {
        let child = latchkey_command(path, env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("start {}", path.display()))?;
        Ok(Self(child))
    }

    /// The server's process id (for reading its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The exit status, if the server has already stopped.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.0.try_wait()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `latchkey user create --email login@bench.test --password-stdin`.
pub fn create_login_account(server: &Path, env: &[(&'static str, String)]) -> anyhow::Result<()> {
    let mut child = latchkey_command(server, env)
        .args(["user", "create", "--email", LOGIN_EMAIL, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run latchkey user create")?;
    child
        .stdin
        .take()
        .context("the CLI's standard input")?
        .write_all(format!("{LOGIN_PASSWORD}\n").as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "latchkey user create failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Command line (the small benchmarks take a few `--name value` options)

/// The exit code of a benchmark that says whether it met its target: 0 when it did, 1
/// when it did not or could not run (the reason printed).
pub fn exit_code(result: anyhow::Result<bool>) -> std::process::ExitCode {
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{}: {e:#}", program());
            std::process::ExitCode::FAILURE
        }
    }
}

/// The value after `--name` parsed, or `default` when it is missing or unreadable.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    flag(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The raw value after `--name`, if given.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

// ---------------------------------------------------------------------------------------
// HTTP

/// One browser-like client: keeps cookies (the CSRF cookie), follows no redirects, and
/// keeps its connection alive, so connection set-up is not part of any measurement.
pub fn http_client() -> anyhow::Result<Client> {
    Ok(Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()?)
}

/// Polls `GET /readyz` until the server answers 200; migrations have run by then.
pub async fn wait_ready(client: &Client, base: &str, server: &mut Server) -> anyhow::Result<()> {
    let url = format!("{base}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.exited()? {
            bail!("the server exited during start-up ({status})");
        }
        let ready = client
            .get(url.as_str())
            .send()
            .await
            .is_ok_and(|res| res.status() == StatusCode::OK);
        if ready {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the server was not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The hidden CSRF field of a page.
pub fn csrf_in(html: &str) -> Option<String> {
    const MARK: &str = "name=\"csrf_token\" value=\"";
    let start = html.find(MARK)? + MARK.len();
    let len = html[start..].find('"')?;
    Some(html[start..start + len].to_owned())
}
