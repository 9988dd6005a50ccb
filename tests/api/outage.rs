//! A database outage with real processes: the release-shaped binary on a PostgreSQL
//! cluster of the test's own (`initdb`, `pg_ctl`, its own port), stopped under load and
//! started again. SPEC §12: every route answers quickly, with a real page or JSON body
//! (503 where it needs the database), signed-in pages included; `/readyz` says so within a
//! second; nothing hangs or panics; the service recovers by itself; no reset is half done.

use std::{
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use diesel::prelude::*;
use latchkey::{config::DatabaseUrl, db};
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::faults::{Instance, LIMITS_OFF};
use crate::helpers::*;
use crate::smtp::MailSink;

/// How long any answer may take while the database is down ("quickly", under load).
const QUICK: Duration = Duration::from_millis(1500);
/// How long `/readyz` may take to say the database is gone (a load balancer's probe).
const PROBE: Duration = Duration::from_secs(1);
const ACCOUNTS: usize = 6;

/// A PostgreSQL cluster in a temporary directory, on its own port, that the test stops
/// and starts. As root, the server runs as the `postgres` user (it refuses root).
struct PrivateCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl PrivateCluster {
    fn start() -> PrivateCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|bin| bin.join("pg_ctl").exists())
            .expect(
                "the outage test needs PostgreSQL's server binaries (initdb, pg_ctl) under \
                 /usr/lib/postgresql/*/bin; scripts/test installs them",
            );
        let dir = std::env::temp_dir().join(format!(
            "latchkey-cluster-{}",
            latchkey::crypto::random_token_string(9).replace(['-', '_'], "x")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PrivateCluster { dir, bin, port };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster's directory");
        }
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one of the cluster's programs (as `postgres` when the test runs as root).
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let output = command.args(args).output().expect(program);
        assert!(
            output.status.success(),
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server the way an operator or a failing host would: open connections are
    /// cut and open transactions rolled back.
    fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new(if is_root() { "runuser" } else { "true" })
            .args(if is_root() {
                vec!["-u", "postgres", "--"]
            } else {
                vec![]
            })
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// One answer seen while the database was down or coming back.
#[derive(Debug, Clone)]
struct Seen {
    route: &'static str,
    status: u16,
    took: Duration,
    body: String,
}

impl Seen {
    /// A 503 with something a person or a client can read: the error page or the JSON
    /// envelope, and when to try again.
    fn is_readable_unavailable(&self) -> bool {
        self.status == 503
            && (self.body.contains("Temporarily unavailable")
                || self.body.contains("\"code\":\"unavailable\"")
                || (self.route == "GET /readyz" && self.body == "database unavailable"))
    }
}

pub(crate) async fn csrf_of(client: &Client, base: &str, path: &str) -> String {
    let html = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    csrf_in(&html).expect("a CSRF token on the form")
}

/// The form's CSRF token (first on the page), or the answer that came instead of the form (a signed-in
/// browser gets the 503 page while the database is down).
async fn form_or_answer(client: &Client, base: &str, path: &str) -> Result<String, Answer> {
    let res = client.get(format!("{base}{path}")).send().await?;
    let status = res.status().as_u16();
    let body = res.text().await.unwrap_or_default();
    csrf_in(&body).ok_or(Answer::Page(status, body))
}

/// What came back instead of the answer to the request itself.
enum Answer {
    Page(u16, String),
    Failed(reqwest::Error),
}

impl From<reqwest::Error> for Answer {
    fn from(e: reqwest::Error) -> Self {
        Answer::Failed(e)
    }
}

pub(crate) async fn sign_up(client: &Client, base: &str, email: &str) {
    let token = csrf_of(client, base, "/signup").await;
    let res = client
        .post(format!("{base}/signup"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", email),
            ("password", GOOD_PASSWORD),
            ("password_confirm", GOOD_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "sign-up of {email}");
}

/// One request of the mixed load, timed; the route names what was asked.
async fn request(client: &Client, base: &str, route: &'static str, token: &str) -> Seen {
    let started = Instant::now();
    let (status, body) = match answer(client, base, route, token).await {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.text().await.unwrap_or_default())
        }
        Err(Answer::Page(status, body)) => (status, body),
        Err(Answer::Failed(e)) => panic!("{route}: no answer: {e:?}"),
    };
    Seen {
        route,
        status,
        took: started.elapsed(),
        body,
    }
}

async fn answer(
    client: &Client,
    base: &str,
    route: &'static str,
    token: &str,
) -> Result<reqwest::Response, Answer> {
    let res = match route {
        "GET /readyz" => client.get(format!("{base}/readyz")).send().await?,
        "GET /" => client.get(format!("{base}/")).send().await?,
        "GET /login" => client.get(format!("{base}/login")).send().await?,
        "GET /account" => client.get(format!("{base}/account")).send().await?,
        "GET /admin" => client.get(format!("{base}/admin")).send().await?,
        "GET /reset" => {
            client
                .get(format!("{base}/reset?token={token}"))
                .send()
                .await?
        }
        "POST /forgot" => {
            let csrf = form_or_answer(client, base, "/forgot").await?;
            client
                .post(format!("{base}/forgot"))
                .form(&[("csrf_token", csrf.as_str()), ("email", "ann0@example.com")])
                .send()
                .await?
        }
        "POST /login" => {
            let csrf = form_or_answer(client, base, "/login").await?;
            client
                .post(format!("{base}/login"))
                .form(&[
                    ("csrf_token", csrf.as_str()),
                    ("email", "ann0@example.com"),
                    ("password", "not the password at all"),
                ])
                .send()
                .await?
        }
        "POST /auth/forgot" => {
            client
                .post(format!("{base}/auth/forgot"))
                .json(&json!({"email": "ann1@example.com"}))
                .send()
                .await?
        }
        other => panic!("no such route in the load: {other}"),
    };
    Ok(res)
}

const ROUTES: [&str; 9] = [
    "GET /readyz",
    "GET /",
    "GET /login",
    "GET /account",
    "GET /admin",
    "GET /reset",
    "POST /forgot",
    "POST /login",
    "POST /auth/forgot",
];

/// Runs until `stop` is set, round after round of every route from one signed-in browser.
async fn load(
    client: Client,
    base: String,
    token: String,
    seen: Arc<Mutex<Vec<(Instant, Seen)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for route in ROUTES {
            let answer = request(&client, &base, route, &token).await;
            seen.lock().unwrap().push((Instant::now(), answer));
        }
    }
}

async fn reset(client: &Client, base: &str, token: &str) -> u16 {
    client
        .post(format!("{base}/auth/reset"))
        .json(&json!({"token": token, "password": OTHER_GOOD_PASSWORD}))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Per account: credential generation, whether its token was used, password-changed
/// emails queued, `reset_done` events.
async fn reset_state(url: &str) -> Vec<(String, i64, bool, i64, i64)> {
    let pool = db::build_pool(&DatabaseUrl::parse(url).unwrap(), 1).unwrap();
    db::run(&pool, |c| {
        use latchkey::db::schema::{events, outbox, reset_tokens, users};
        let mut out = vec![];
        for i in 0..ACCOUNTS {
            let email = format!("ann{i}@example.com");
            let (id, generation): (i64, i64) = users::table
                .filter(users::email.eq(&email))
                .select((users::id, users::credential_generation))
                .first(c)?;
            let used = reset_tokens::table
                .filter(reset_tokens::user_id.eq(id))
                .filter(reset_tokens::used_at.is_not_null())
                .count()
                .get_result::<i64>(c)?
                > 0;
            let notices = outbox::table
                .filter(outbox::user_id.eq(id))
                .filter(outbox::kind.ne("reset"))
                .count()
                .get_result(c)?;
            let done = events::table
                .filter(events::user_id.eq(id))
                .filter(events::kind.eq("reset_done"))
                .count()
                .get_result(c)?;
            out.push((email, generation, used, notices, done));
        }
        Ok(out)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_answered_quickly_and_recovered_from() {
    let cluster = PrivateCluster::start();
    let url = cluster.url();
    let sink = MailSink::start().await;
    let instance = Instance::start_with(&url, &sink, &LIMITS_OFF);
    instance.ready().await;
    let base = instance.address.clone();

    // Accounts with a live reset link each, and a browser signed in to one of them.
    let browser = new_client();
    for i in 0..ACCOUNTS {
        sign_up(&new_client(), &base, &format!("ann{i}@example.com")).await;
    }
    sign_up(&browser, &base, "signed.in@example.com").await;
    assert_eq!(
        request(&browser, &base, "GET /account", "").await.status,
        200
    );
    let mut tokens = vec![];
    for i in 0..ACCOUNTS {
        let address = format!("ann{i}@example.com");
        let res = new_client()
            .post(format!("{base}/auth/forgot"))
            .json(&json!({ "email": address }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        let emails = sink.wait_for(i + 1).await;
        let link = emails[i]
            .link_starting_with(&format!("{base}/reset?token="))
            .expect("a reset link");
        tokens.push(link.rsplit('=').next().unwrap().to_owned());
    }
    let before = reset_state(&url).await;

    // Mixed load from three browsers; resets in flight when the database stops.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop_load = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders: Vec<_> = (0..3)
        .map(|i| {
            let client = if i == 0 {
                browser.clone()
            } else {
                new_client()
            };
            tokio::spawn(load(
                client,
                base.clone(),
                tokens[i].clone(),
                seen.clone(),
                stop_load.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resets: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let (base, token) = (base.clone(), token.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(15 * i as u64)).await;
                reset(&new_client(), &base, &token).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(40)).await;
    let stopped_at = Instant::now();
    cluster.stop();
    let mut reset_answers = vec![];
    for r in resets {
        reset_answers.push(r.await.unwrap());
    }

    // Down: the probe says so within a second, from a client of its own.
    let probe_started = Instant::now();
    let probe = new_client()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        probe_started.elapsed() < PROBE,
        "/readyz took {:?}",
        probe_started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted_at = Instant::now();
    cluster.pg_ctl_start();

    // Up again: the instance finds out by itself.
    let started = Instant::now();
    loop {
        let probe = new_client().get(format!("{base}/readyz")).send().await;
        if probe.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not ready 15 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loaders {
        l.await.expect("the load ran without a panic");
    }

    let seen = seen.lock().unwrap().clone();
    let during: Vec<&Seen> = seen
        .iter()
        .filter(|(at, s)| *at > stopped_at + s.took && *at < restarted_at)
        .map(|(_, s)| s)
        .collect();
    assert!(
        during.len() > 20,
        "only {} answers during the outage",
        during.len()
    );
    for s in &seen {
        let s = &s.1;
        assert!(
            s.status != 500 && s.status != 0,
            "{} answered {} during the outage: {}",
            s.route,
            s.status,
            s.body
        );
        assert!(
            s.status != 503 || s.is_readable_unavailable(),
            "{} answered 503 without a page or envelope: {:?}",
            s.route,
            s.body
        );
        assert!(s.took < QUICK, "{} took {:?}", s.route, s.took);
    }
    // Every route that needs the database said so, signed-in pages included.
    for route in [
        "GET /readyz",
        "GET /account",
        "GET /admin",
        "GET /reset",
        "POST /forgot",
        "POST /login",
        "POST /auth/forgot",
    ] {
        assert!(
            during
                .iter()
                .any(|s| s.route == route && s.is_readable_unavailable()),
            "{route} never answered 503 during the outage: {:?}",
            during
                .iter()
                .filter(|s| s.route == route)
                .map(|s| s.status)
                .collect::<Vec<_>>()
        );
    }

    // After: the signed-in browser is still signed in, and new mail goes out.
    assert_eq!(
        request(&browser, &base, "GET /account", "").await.status,
        200
    );

    // No reset half done: each account is either untouched, or fully reset (password,
    // its link used up, the notice queued, the audit event), and a reset answered 200
    // is one of the latter.
    let after = reset_state(&url).await;
    for (i, ((email, gen_before, ..), (_, generation, used, notices, done))) in
        before.iter().zip(&after).enumerate()
    {
        let reset_happened = *generation > *gen_before;
        assert_eq!(
            (reset_happened, *used, *notices > 0, *done > 0),
            (
                reset_happened,
                reset_happened,
                reset_happened,
                reset_happened
            ),
            "{email} is half reset: {:?}",
            after[i]
        );
        if reset_answers[i] == 200 {
            assert!(reset_happened, "{email}: answered 200 but not reset");
        } else {
            assert!(
                reset_answers[i] == 503,
                "{email}: the reset in flight answered {}",
                reset_answers[i]
            );
            // A reset refused by the outage is still possible afterwards.
            if !reset_happened {
                assert_eq!(reset(&new_client(), &base, &tokens[i]).await, 200);
            }
        }
    }
    let mailed = sink.emails().await.len();
    let res = new_client()
        .post(format!("{base}/auth/forgot"))
        .json(&json!({"email": "signed.in@example.com"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    sink.wait_for(mailed + 1).await;
}
