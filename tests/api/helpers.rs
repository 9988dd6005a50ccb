//! `spawn_app`: the real application on port 0, with a fresh database (a temporary SQLite
//! file, or a new Postgres database dropped afterwards) and a real SMTP sink on loopback.

use std::{collections::HashMap, sync::LazyLock};

use diesel::{Connection, PgConnection, RunQueryDsl, connection::SimpleConnection};
use latchkey::{
    config::Settings,
    db::{self, DbPool},
    startup::Application,
};
use reqwest::{Client, Response, StatusCode, redirect::Policy};

use crate::smtp::{Email, MailSink};

/// The public origin the app is configured with. It is deliberately not the address the
/// server listens on, so a link built from anything but `BASE_URL` is caught.
///
/// A `.localhost` name is a loopback origin, so the dev mailbox stays allowed in tests.
pub const BASE_URL: &str = "http://latchkey.localhost/";

/// A password every strength check accepts.
pub const GOOD_PASSWORD: &str = "plum tractor violet oasis";
pub const OTHER_GOOD_PASSWORD: &str = "cobalt lantern orbit meadow";
pub const THIRD_GOOD_PASSWORD: &str = "saffron glacier pocket turbine";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static PG_ADMIN_URL: LazyLock<String> = LazyLock::new(|| {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
});

/// A database that exists for one test and is removed afterwards.
pub enum TestDb {
    Sqlite(std::path::PathBuf),
    Postgres { name: String },
}

impl TestDb {
    pub fn create(backend: Backend) -> (TestDb, String) {
        let name = format!(
            "latchkey_test_{}",
            latchkey::crypto::random_token_string(9)
                .to_lowercase()
                .replace(['-', '_'], "x")
        );
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                let url = format!("sqlite://{}", path.display());
                (TestDb::Sqlite(path), url)
            }
            Backend::Postgres => {
                let mut admin = PgConnection::establish(&PG_ADMIN_URL).unwrap_or_else(|e| {
                    panic!(
                        "The Postgres tests need a PostgreSQL server and could not reach one at {} ({e}). \
                         Start one (e.g. `pg_ctlcluster --skip-systemctl-redirect 15 main start`) or point \
                         TEST_DATABASE_URL at a server where this user may create databases.",
                        *PG_ADMIN_URL
                    )
                });
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create test database");
                let mut url = url::Url::parse(&PG_ADMIN_URL).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&format!("/{name}"));
                (TestDb::Postgres { name }, url.to_string())
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            TestDb::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            TestDb::Postgres { name } => {
                if let Ok(mut admin) = PgConnection::establish(&PG_ADMIN_URL) {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin);
                }
            }
        }
    }
}

/// A running app and what a test needs to talk to it.
pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub mail: MailSink,
    pub pool: DbPool,
    /// The variables the app was started with.
    pub vars: HashMap<String, String>,
    server: actix_web::dev::ServerHandle,
    db: Option<TestDb>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Ask the server to stop; its worker threads end on their own.
        drop(self.server.stop(false));
    }
}

/// Starts the app with the test defaults.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Starts the app with some variables overridden (`("RESET_TOKEN_TTL_SECS", "2")`).
pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let mail = MailSink::start().await;
    let (test_db, database_url) = TestDb::create(backend);
    let mut vars: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), database_url),
        ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        ("BASE_URL".into(), BASE_URL.into()),
        ("SMTP_URL".into(), format!("smtp://127.0.0.1:{}", mail.port)),
        (
            "MAIL_FROM".into(),
            "Latchkey Test <no-reply@latchkey.test>".into(),
        ),
        ("SECRET_KEY".into(), "test-secret-key-".repeat(5)),
        ("DATABASE_POOL_SIZE".into(), "8".into()),
        // Every test talks from 127.0.0.1: the per-client limits get their own tests.
        ("RATE_LIMIT_FORGOT".into(), "1000/600".into()),
        ("RATE_LIMIT_LOGIN".into(), "1000/600".into()),
        ("RATE_LIMIT_RESET".into(), "1000/600".into()),
        ("RATE_LIMIT_SIGNUP".into(), "1000/600".into()),
        ("RATE_LIMIT_ACCOUNT".into(), "1000/600".into()),
    ]);
    for (k, v) in overrides {
        if v.is_empty() {
            vars.remove(*k);
        } else {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
    }
    start(vars, mail, Some(test_db)).await
}

async fn start(vars: HashMap<String, String>, mail: MailSink, db: Option<TestDb>) -> TestApp {
    let settings =
        Settings::from_lookup(|k| vars.get(k).cloned()).expect("test settings are valid");
    let app = Application::build(settings).await.expect("the app starts");
    let port = app.port();
    let pool = app.pool();
    let server = app.server_handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: new_client(),
        mail,
        pool,
        vars,
        server,
        db,
    }
}

/// A browser: keeps cookies, does not follow redirects (tests check each 303).
pub fn new_client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .cookie_store(true)
        .build()
        .expect("client")
}

/// A browser whose requests say, in `X-Forwarded-For`, that they come from `ip` (the app
/// believes it only with `TRUSTED_PROXIES=127.0.0.1/32`).
pub fn client_from(ip: &str) -> Client {
    Client::builder()
        .redirect(Policy::none())
        .cookie_store(true)
        .default_headers(
            [("x-forwarded-for".parse().unwrap(), ip.parse().unwrap())]
                .into_iter()
                .collect(),
        )
        .build()
        .expect("client")
}

/// Where a 303 leads, or `None` for any other answer.
pub fn redirect_of(res: &Response) -> Option<String> {
    (res.status() == StatusCode::SEE_OTHER)
        .then(|| {
            res.headers()
                .get("location")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .flatten()
}

/// The hidden CSRF field of a page.
pub fn csrf_in(html: &str) -> Option<String> {
    let start = html.find("name=\"csrf_token\" value=\"")? + "name=\"csrf_token\" value=\"".len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

impl TestApp {
    /// A second instance on the same database and SMTP server, as behind a load balancer.
    pub async fn sibling(&self) -> TestApp {
        self.sibling_with(&[]).await
    }

    /// A second instance on the same database and SMTP server, with some variables
    /// changed (`""` removes one), as after an operator's configuration change.
    pub async fn sibling_with(&self, overrides: &[(&str, &str)]) -> TestApp {
        let mut vars = self.vars.clone();
        for (k, v) in overrides {
            if v.is_empty() {
                vars.remove(*k);
            } else {
                vars.insert((*k).to_owned(), (*v).to_owned());
            }
        }
        start(vars, self.mail.clone(), None).await
    }

    /// Stops this instance (its database stays) and waits until its port no longer answers.
    pub async fn stop(&self) {
        let (server, address) = (self.server.clone(), self.address.clone());
        server.stop(false).await;
        for _ in 0..100 {
            if reqwest::get(format!("{address}/healthz")).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the app did not stop");
    }

    /// The audit events recorded so far, oldest first.
    pub async fn events(&self) -> Vec<db::events::EventRow> {
        let mut rows = self.db(|c| db::events::recent(c, None, 10_000)).await;
        rows.reverse();
        rows
    }

    /// Waits for an audit event of `kind` (the worker writes some a moment later).
    pub async fn event(&self, kind: &str) -> db::events::EventRow {
        self.events_of(kind, 1).await.remove(0)
    }

    /// Waits until `n` audit events of `kind` are recorded; returns them, oldest first.
    pub async fn events_of(&self, kind: &str, n: usize) -> Vec<db::events::EventRow> {
        for _ in 0..100 {
            let found: Vec<_> = self
                .events()
                .await
                .into_iter()
                .filter(|e| e.kind == kind)
                .collect();
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} {kind} events were recorded");
    }

    /// Drops this app's Postgres database while the app runs (to see it notice).
    pub fn drop_database(&mut self) {
        drop(self.db.take());
    }

    pub fn database_url(&self) -> &str {
        &self.vars["DATABASE_URL"]
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Turns a link from an email (under `BASE_URL`) into one on the test server.
    pub fn local(&self, link: &str) -> String {
        assert!(
            link.starts_with(BASE_URL),
            "link {link} is not under BASE_URL"
        );
        format!("{}/{}", self.address, &link[BASE_URL.len()..])
    }

    pub async fn get(&self, path: &str) -> Response {
        self.get_with(&self.client, path).await
    }

    pub async fn get_with(&self, client: &Client, path: &str) -> Response {
        client.get(self.url(path)).send().await.expect("GET")
    }

    /// A CSRF token for this client, read from a form page.
    pub async fn csrf(&self, client: &Client) -> String {
        let html = self.get_with(client, "/forgot").await.text().await.unwrap();
        csrf_in(&html).expect("the forgot page has a CSRF field")
    }

    /// Posts a form with this client's CSRF token added.
    pub async fn post_form_with(
        &self,
        client: &Client,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Response {
        let token = self.csrf(client).await;
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf_token", &token));
        client
            .post(self.url(path))
            .form(&form)
            .send()
            .await
            .expect("POST")
    }

    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.post_form_with(&self.client, path, fields).await
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST JSON")
    }

    /// Signs up with this client (and stays signed in).
    pub async fn sign_up_with(&self, client: &Client, email: &str, password: &str) {
        let res = self
            .post_form_with(
                client,
                "/signup",
                &[
                    ("email", email),
                    ("password", password),
                    ("password_confirm", password),
                ],
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "sign-up failed: {}",
            res.text().await.unwrap_or_default()
        );
    }

    /// Creates an account from a throwaway browser (this client stays signed out).
    pub async fn create_account(&self, email: &str, password: &str) {
        self.sign_up_with(&new_client(), email, password).await;
    }

    pub async fn sign_in_with(&self, client: &Client, email: &str, password: &str) -> Response {
        self.post_form_with(
            client,
            "/login",
            &[("email", email), ("password", password)],
        )
        .await
    }

    /// Asks for a reset link through the form.
    pub async fn forgot(&self, email: &str) -> Response {
        self.post_form("/forgot", &[("email", email)]).await
    }

    /// Waits for the `n`-th email and returns the reset link in it (under BASE_URL).
    pub async fn reset_link_in_email(&self, n: usize) -> String {
        let emails = self.mail.wait_for(n).await;
        let email: &Email = &emails[n - 1];
        email
            .link_starting_with(&format!("{BASE_URL}reset?token="))
            .unwrap_or_else(|| panic!("no reset link in: {}", email.text))
    }

    /// Opens a reset link (from an email) in this app's browser.
    pub async fn open_link(&self, link: &str) -> Response {
        self.client
            .get(self.local(link))
            .send()
            .await
            .expect("GET link")
    }

    /// Submits the reset form of the link this browser opened.
    pub async fn set_new_password(&self, password: &str, confirmation: &str) -> Response {
        self.post_form(
            "/reset",
            &[("password", password), ("password_confirm", confirmation)],
        )
        .await
    }

    /// Waits for the reset email sent to `address` (10 s at most) and returns its link.
    pub async fn reset_link_to(&self, address: &str) -> String {
        for _ in 0..200 {
            let found = self.mail.emails().await.into_iter().find_map(|e| {
                (e.envelope_to.iter().any(|to| to == address))
                    .then(|| e.link_starting_with(&format!("{BASE_URL}reset?token=")))
                    .flatten()
            });
            if let Some(link) = found {
                return link;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no reset email reached {address}");
    }

    /// Whether `email` and `password` sign in, tried from a fresh browser.
    pub async fn signs_in(&self, email: &str, password: &str) -> bool {
        let res = self.sign_in_with(&new_client(), email, password).await;
        res.status() == StatusCode::SEE_OTHER
    }

    /// Whether this browser is signed in: its account page answers 200, not a 303.
    pub async fn is_signed_in(&self, client: &Client) -> bool {
        self.get_with(client, "/account").await.status() == StatusCode::OK
    }

    /// A form POST ready to send, with a CSRF token fetched earlier: races send these so
    /// that no page load stands between the start signal and the request.
    pub fn prepared_post(
        &self,
        client: &Client,
        path: &str,
        token: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut form: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        form.push(("csrf_token".to_owned(), token.to_owned()));
        client.post(self.url(path)).form(&form)
    }

    /// The token of a reset link.
    pub fn token_of(link: &str) -> String {
        link.split("token=").nth(1).expect("token").to_owned()
    }

    /// Waits until the outbox row of `kind` reaches `status` (the SMTP server's "250 OK"
    /// arrives a moment before the worker records it).
    pub async fn outbox_row(
        &self,
        kind: &'static str,
        status: &'static str,
    ) -> db::outbox::OutboxRow {
        for _ in 0..100 {
            let rows = self.db(|c| db::outbox::recent(c, 50)).await;
            if let Some(row) = rows
                .into_iter()
                .find(|r| r.kind == kind && r.status == status)
            {
                return row;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no {kind} email reached status {status}");
    }

    /// Runs blocking diesel work against the app's database.
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut db::AnyConnection) -> Result<T, db::DbError> + Send + 'static,
    ) -> T {
        db::run(&self.pool, f).await.expect("db query")
    }
}

/// Runs each listed `async fn(Backend)` as two tests, `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}
