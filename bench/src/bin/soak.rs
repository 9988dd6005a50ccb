//! Soak: `--minutes` (default 10) of mixed load on the release binary, sampling its
//! resident memory and counting errors (SPEC §12: no errors, memory flat after warm-up).
//!
//! The server runs with production settings (argon2 at its default cost, the mail worker
//! delivering over SMTP to a server on loopback in this process), on a fresh PostgreSQL
//! database (`--backend sqlite` for a SQLite file). `--connections` browsers (default 8)
//! each repeat a round of what people do: open and submit the forgot form for a registered
//! and an unknown address, ask through the API, sign in with a right and a wrong password,
//! look at the account page and sign out, complete a whole reset (the email's link opened,
//! a new password set), and now and then sign up. Rate limits are on but never refuse
//! (10⁹ per 10 minutes), requests come from 4 096 fake client addresses.
//!
//! An error is any answer other than the one the step expects (a 5xx above all) or a
//! request that got no answer. Memory: the server's VmRSS every `--sample` seconds; the
//! first minute is warm-up. It passes when there were no errors and the highest RSS of the
//! last third of the run is within 10 % of the highest RSS of the first third after
//! warm-up. Report: `target/soak.md`. Run it with `scripts/bench-soak`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use latchkey_bench as support;

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use reqwest::{Client, redirect::Policy};
use serde_json::json;

use support::{Rng, Server, TempDatabase, arg, csrf_in, free_port, smtp::SmtpSink, wait_ready};

const SECRET: &str = "soak-benchmark-secret-key-that-is-long-enough-0123456789abcdef0123";
const PASSWORDS: [&str; 2] = ["plum tractor violet oasis", "copper lantern meadow swift"];
const WARM_UP: Duration = Duration::from_secs(60);
/// Allowed growth of the highest RSS from the first third to the last third.
const RSS_GROWTH: f64 = 0.10;

#[tokio::main]
async fn main() -> ExitCode {
    support::exit_code(run().await)
}

/// Counts shared by the browsers.
#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
    resets: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Counts {
    fn error(&self, what: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 1000 {
            errors.push(what);
        }
    }

    fn error_count(&self) -> usize {
        self.errors.lock().unwrap().len()
    }
}

/// One browser: its own cookies, a fake address, and the accounts it owns.
struct Browser {
    client: Client,
    base: String,
    counts: Arc<Counts>,
    sink: Arc<SmtpSink>,
    /// Its accounts and the index of each one's current password.
    accounts: Vec<(String, usize)>,
    id: usize,
    round: usize,
}

impl Browser {
    fn new(base: &str, id: usize, counts: Arc<Counts>, sink: Arc<SmtpSink>) -> Self {
        let ip = format!("10.{}.{}.{}", id % 16, (id / 16) % 256, 1 + id % 254);
        let client = Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .default_headers(
                [("x-forwarded-for".parse().unwrap(), ip.parse().unwrap())]
                    .into_iter()
                    .collect(),
            )
            .build()
            .unwrap();
        Self {
            client,
            base: base.to_owned(),
            counts,
            sink,
            accounts: vec![],
            id,
            round: 0,
        }
    }

    /// Sends a request and checks its status; false (and an error counted) otherwise.
    async fn expect(&self, step: &str, request: reqwest::RequestBuilder, want: &[u16]) -> bool {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        match request.send().await {
            Ok(res) if want.contains(&res.status().as_u16()) => {
                let _ = res.bytes().await;
                true
            }
            Ok(res) => {
                let status = res.status();
                let body: String = res
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                self.counts.error(format!("{step}: {status} {body}"));
                false
            }
            Err(e) => {
                self.counts.error(format!("{step}: no answer: {e}"));
                false
            }
        }
    }

    async fn csrf(&self, path: &str) -> Option<String> {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        let res = self.client.get(format!("{}{path}", self.base)).send().await;
        match res {
            Ok(res) if res.status() == 200 => csrf_in(&res.text().await.ok()?),
            Ok(res) => {
                self.counts.error(format!("GET {path}: {}", res.status()));
                None
            }
            Err(e) => {
                self.counts.error(format!("GET {path}: no answer: {e}"));
                None
            }
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }

    async fn sign_up(&mut self) {
        let Some(csrf) = self.csrf("/signup").await else {
            return;
        };
        let email = format!("soak{}.{}@example.com", self.id, self.accounts.len());
        let form = [
            ("csrf_token", csrf.as_str()),
            ("email", email.as_str()),
            ("password", PASSWORDS[0]),
            ("password_confirm", PASSWORDS[0]),
        ];
        if self
            .expect("POST /signup", self.post("/signup").form(&form), &[303])
            .await
        {
            self.accounts.push((email, 0));
        }
        self.sign_out().await;
    }

    async fn sign_out(&self) {
        if let Some(csrf) = self.csrf("/account").await {
            let form = [("csrf_token", csrf.as_str())];
            self.expect("POST /logout", self.post("/logout").form(&form), &[303])
                .await;
        }
    }

    /// One round of everything, on the account `round` picks.
    async fn round(&mut self) {
        self.round += 1;
        if self.accounts.is_empty() || self.round.is_multiple_of(20) {
            self.sign_up().await;
        }
        let Some((email, password)) = self.accounts.get(self.round % self.accounts.len()).cloned()
        else {
            return;
        };
        let unknown = format!("nobody{}.{}@example.com", self.id, self.round);
        // Forgot by form, for the account and for an unknown address; and by the API.
        for address in [email.as_str(), unknown.as_str()] {
            if let Some(csrf) = self.csrf("/forgot").await {
                let form = [("csrf_token", csrf.as_str()), ("email", address)];
                self.expect(
                    "POST /forgot",
                    self.post("/forgot").form(&form),
                    &[200, 303],
                )
                .await;
            }
        }
        self.expect(
            "POST /auth/forgot",
            self.post("/auth/forgot").json(&json!({ "email": unknown })),
            &[200, 202],
        )
        .await;
        // Sign-in: wrong, then right, the account page, sign-out.
        if let Some(csrf) = self.csrf("/login").await {
            let wrong = [
                ("csrf_token", csrf.as_str()),
                ("email", email.as_str()),
                ("password", "not the password at all"),
            ];
            self.expect(
                "POST /login (wrong)",
                self.post("/login").form(&wrong),
                &[401, 422],
            )
            .await;
            let right = [
                ("csrf_token", csrf.as_str()),
                ("email", email.as_str()),
                ("password", PASSWORDS[password]),
            ];
            if self
                .expect("POST /login", self.post("/login").form(&right), &[303])
                .await
            {
                self.expect(
                    "GET /account",
                    self.client.get(format!("{}/account", self.base)),
                    &[200],
                )
                .await;
                self.sign_out().await;
            }
        }
        // A whole reset, every other round: the email's link, the form, a new password.
        if self.round.is_multiple_of(2) {
            self.reset(&email, password).await;
        }
    }

    async fn reset(&mut self, email: &str, password: usize) {
        let before = self.sink.last_message_to(email);
        let asked = self
            .expect(
                "POST /auth/forgot (reset)",
                self.post("/auth/forgot").json(&json!({ "email": email })),
                &[200, 202],
            )
            .await;
        if !asked {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let token = loop {
            let now = self.sink.last_message_to(email);
            if now != before
                && let Some(token) = now.as_deref().and_then(token_in)
            {
                break token;
            }
            if Instant::now() > deadline {
                self.counts
                    .error(format!("reset email for {email} not delivered in 30 s"));
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let link = format!("{}/reset?token={token}", self.base);
        if !self
            .expect("GET /reset?token", self.client.get(link), &[303])
            .await
        {
            return;
        }
        let Some(csrf) = self.csrf("/reset").await else {
            return;
        };
        let next = 1 - password;
        let form = [
            ("csrf_token", csrf.as_str()),
            ("password", PASSWORDS[next]),
            ("password_confirm", PASSWORDS[next]),
        ];
        if self
            .expect("POST /reset", self.post("/reset").form(&form), &[303])
            .await
        {
            self.counts.resets.fetch_add(1, Ordering::Relaxed);
            if let Some(account) = self.accounts.iter_mut().find(|(e, _)| e == email) {
                account.1 = next;
            }
        }
    }
}

/// The reset token in a raw email (its text part, quoted-printable decoded).
fn token_in(raw: &str) -> Option<String> {
    let parsed = mailparse::parse_mail(raw.as_bytes()).ok()?;
    let mut texts = vec![];
    fn walk(part: &mailparse::ParsedMail, out: &mut Vec<String>) {
        if part.subparts.is_empty() && part.ctype.mimetype == "text/plain" {
            out.push(part.get_body().unwrap_or_default());
        }
        for sub in &part.subparts {
            walk(sub, out);
        }
    }
    walk(&parsed, &mut texts);
    texts.iter().find_map(|text| {
        let start = text.find("reset?token=")? + "reset?token=".len();
        let token: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        (!token.is_empty()).then_some(token)
    })
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

async fn run() -> anyhow::Result<bool> {
    let args: Vec<String> = std::env::args().collect();
    let minutes: u64 = arg(&args, "--minutes", 10);
    let connections: usize = arg(&args, "--connections", 8);
    let sample = Duration::from_secs(arg(&args, "--sample", 5));
    let backend: String = arg(&args, "--backend", "postgres".to_owned());
    let server_path: PathBuf = arg(&args, "--server", PathBuf::from("target/release/latchkey"))
        .canonicalize()
        .context("the server binary (--server)")?;
    let admin_url = arg(
        &args,
        "--database-url",
        std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
    );
    let duration = Duration::from_secs(minutes * 60);
    if duration <= WARM_UP {
        bail!("--minutes must be more than the one-minute warm-up");
    }

    let sink = Arc::new(SmtpSink::in_process().await?);
    let mut rng = Rng::seeded();
    let database = match backend.as_str() {
        "postgres" => TempDatabase::postgres(&admin_url, "latchkey_soak", &mut rng)?,
        "sqlite" => TempDatabase::sqlite("latchkey_soak", &mut rng)?,
        other => bail!("--backend: '{other}' is not postgres or sqlite"),
    };
    let listen = format!("127.0.0.1:{}", free_port()?);
    let base = format!("http://{listen}");
    let limit = "1000000000/600".to_owned();
    let env = [
        ("DATABASE_URL", database.url.clone()),
        ("SECRET_KEY", SECRET.to_owned()),
        ("SMTP_URL", format!("smtp://127.0.0.1:{}", sink.port)),
        (
            "MAIL_FROM",
            "Latchkey <no-reply@latchkey.example>".to_owned(),
        ),
        ("BASE_URL", base.clone()),
        ("LISTEN_ADDR", listen.clone()),
        ("TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
        ("RATE_LIMIT_FORGOT", limit.clone()),
        ("RATE_LIMIT_LOGIN", limit.clone()),
        ("RATE_LIMIT_RESET", limit.clone()),
        ("RATE_LIMIT_SIGNUP", limit.clone()),
        ("RATE_LIMIT_ACCOUNT", limit),
        ("RESET_COOLDOWN_SECS", "0".to_owned()),
        ("RESET_DAILY_CAP", "1000000".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let mut server = Server::spawn(&server_path, &env)?;
    wait_ready(&support::http_client()?, &base, &mut server).await?;
    let pid = server.pid();

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let browsers: Vec<_> = (0..connections)
        .map(|id| {
            let mut browser = Browser::new(&base, id, counts.clone(), sink.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    browser.round().await;
                }
            })
        })
        .collect();

    // (seconds since start, RSS MiB, requests so far, errors so far)
    let started = Instant::now();
    let mut samples: Vec<(f64, f64, usize, usize)> = vec![];
    while started.elapsed() < duration {
        tokio::time::sleep(sample).await;
        if let Some(status) = server.exited()? {
            bail!("the server exited during the soak ({status})");
        }
        let rss = rss_mib(pid).context("read the server's RSS")?;
        let t = started.elapsed().as_secs_f64();
        let (requests, errors) = (
            counts.requests.load(Ordering::Relaxed),
            counts.error_count(),
        );
        eprintln!("{t:>6.0} s  RSS {rss:>6.1} MiB  {requests:>8} requests  {errors} errors");
        samples.push((t, rss, requests, errors));
    }
    stop.store(true, Ordering::Relaxed);
    for b in browsers {
        b.await?;
    }
    drop(server);

    let measured: Vec<_> = samples
        .iter()
        .filter(|s| s.0 >= WARM_UP.as_secs_f64())
        .collect();
    let third = (measured.len() / 3).max(1);
    let peak = |part: &[&(f64, f64, usize, usize)]| part.iter().map(|s| s.1).fold(0.0, f64::max);
    let first = peak(&measured[..third]);
    let last = peak(&measured[measured.len() - third..]);
    let growth = last / first - 1.0;
    let requests = counts.requests.load(Ordering::Relaxed);
    let errors = counts.errors.lock().unwrap().clone();
    let pass = errors.is_empty() && growth <= RSS_GROWTH;
    let mut per_minute = String::new();
    let mut last_requests = 0;
    for s in samples.iter().filter(|s| {
        let t = s.0.round() as u64;
        t % 60 < sample.as_secs().max(1)
    }) {
        per_minute.push_str(&format!(
            "| {:.0} | {:.1} | {} | {} |\n",
            s.0 / 60.0,
            s.1,
            s.2 - last_requests,
            s.3
        ));
        last_requests = s.2;
    }
    let report = format!(
        "# Soak\n\n\
         {minutes} minutes of mixed load from {connections} browsers on {backend} (forgot by \
         form and API, sign-in right and wrong, account page, sign-out, whole resets through \
         the emailed link, sign-ups), production argon2 cost, mail over SMTP.\n\n\
         Requests: {requests} ({:.0}/s), whole resets: {}, errors: {}.\n\n\
         RSS after the {}-s warm-up: highest in the first third {first:.1} MiB, in the last \
         third {last:.1} MiB ({:+.1} %; allowed +{:.0} %). Result: **{}**.\n\n\
         | minute | RSS MiB | requests in the minute | errors so far |\n\
         |---:|---:|---:|---:|\n{per_minute}\n{}",
        requests as f64 / duration.as_secs_f64(),
        counts.resets.load(Ordering::Relaxed),
        errors.len(),
        WARM_UP.as_secs(),
        growth * 100.0,
        RSS_GROWTH * 100.0,
        if pass { "passed" } else { "failed" },
        if errors.is_empty() {
            String::new()
        } else {
            format!(
                "First errors:\n\n{}\n",
                errors
                    .iter()
                    .take(20)
                    .map(|e| format!("- {e}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        }
    );
    print!("{report}");
    std::fs::write("target/soak.md", &report).context("write target/soak.md")?;
    Ok(pass)
}
