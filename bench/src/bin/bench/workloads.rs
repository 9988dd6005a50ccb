//! What the simulated clients send in each scenario.
//!
//! Every connection is a browser of its own (its own client, cookie jar and CSRF token),
//! and every request carries `X-Forwarded-For` from one of 4096 fake client addresses,
//! handed out in turn: the server believes it (`TRUSTED_PROXIES=127.0.0.1/32`), so its
//! rate-limit counters are spread over thousands of rows as in production, not piled on
//! one hot row.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use reqwest::{Client, RequestBuilder, StatusCode};

use crate::{
    load::{Sample, Workload, send},
    support::{csrf_in, http_client},
};

/// The password every reset sets: long and strong enough for the policy.
pub const NEW_PASSWORD: &str = "cobalt lantern orbit meadow";

/// How many client addresses the load seems to come from.
pub const FAKE_CLIENTS: usize = 4096;

/// The `n`-th fake client address (modulo [`FAKE_CLIENTS`]), `10.a.b.c`.
pub fn fake_client(n: usize) -> String {
    let n = n % FAKE_CLIENTS;
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// The server under load, and the counters its clients share.
pub struct Site {
    base: String,
    /// Tags the unknown addresses of this run, so no other run's rows can match them.
    tag: String,
    next_client: AtomicUsize,
    next_unknown: AtomicUsize,
}

impl Site {
    /// `base` is the origin, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: String, tag: String) -> Self {
        Self {
            base,
            tag,
            next_client: AtomicUsize::new(0),
            next_unknown: AtomicUsize::new(0),
        }
    }

    /// `GET base+path` from the next fake client.
    pub fn get(&self, client: &Client, path: &str) -> RequestBuilder {
        self.tagged(client.get(format!("{}{path}", self.base)))
    }

    /// `POST base+path` from the next fake client.
    pub fn post(&self, client: &Client, path: &str) -> RequestBuilder {
        self.tagged(client.post(format!("{}{path}", self.base)))
    }

    fn tagged(&self, request: RequestBuilder) -> RequestBuilder {
        let n = self.next_client.fetch_add(1, Ordering::Relaxed);
        request.header("x-forwarded-for", fake_client(n))
    }

    /// An address nobody has, never used before in this run.
    pub fn unknown_address(&self) -> String {
        let n = self.next_unknown.fetch_add(1, Ordering::Relaxed);
        format!("nobody{n}-{}@bench.test", self.tag)
    }
}

/// One simulated browser: its own client and the CSRF token that goes with its cookie.
/// The client keeps cookies, follows no redirects and keeps its one connection alive
/// (reqwest keeps idle connections without limit by default), as a browser or wrk does.
pub struct Browser {
    client: Client,
    csrf: String,
}

impl Browser {
    /// A new browser that has loaded `path` once: it holds the CSRF cookie from then on,
    /// and the page's CSRF field (if it has one) is its token.
    pub async fn open(site: &Site, path: &str) -> anyhow::Result<Self> {
        let client = http_client()?;
        let html = site
            .get(&client, path)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let csrf = csrf_in(&html).unwrap_or_default();
        Ok(Self { client, csrf })
    }
}

/// Reset tokens handed out in turn. A pool of single-use tokens must be large enough for
/// the scenario: past its end it starts over, and reused tokens answer 400 (errors).
pub struct TokenPool {
    tokens: Vec<String>,
    next: AtomicUsize,
}

impl TokenPool {
    /// `tokens` must not be empty.
    pub fn new(tokens: Vec<String>) -> Self {
        Self {
            tokens,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> &str {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.tokens[n % self.tokens.len()]
    }
}

/// `GET path`, expecting 200: a page (or the static page of baseline c).
pub struct GetPage {
    pub site: Arc<Site>,
    pub path: &'static str,
}

impl Workload for GetPage {
    type Conn = Browser;

    async fn connect(&self) -> anyhow::Result<Browser> {
        Browser::open(&self.site, self.path).await
    }

    async fn once(&self, browser: &mut Browser) -> Sample {
        let (answer, latency) = send(self.site.get(&browser.client, self.path)).await;
        Sample::judge(answer, latency, StatusCode::OK)
    }
}

/// Which forgot endpoint.
#[derive(Clone, Copy)]
pub enum Via {
    /// `POST /forgot`, the form with its CSRF field.
    Form,
    /// `POST /auth/forgot`, JSON.
    Api,
}

/// A forgot request, expecting 200: for registered addresses in turn, or for a fresh
/// unknown address each time.
pub struct Forgot {
    site: Arc<Site>,
    via: Via,
    /// `Some(n)`: cycle through `reg1@bench.test` … `reg<n>@bench.test`.
    registered: Option<usize>,
    next: AtomicUsize,
}

impl Forgot {
    pub fn new(site: Arc<Site>, via: Via, registered: Option<usize>) -> Self {
        Self {
            site,
            via,
            registered,
            next: AtomicUsize::new(0),
        }
    }

    fn address(&self) -> String {
        match self.registered {
            Some(count) => {
                let n = self.next.fetch_add(1, Ordering::Relaxed) % count;
                format!("reg{}@bench.test", n + 1)
            }
            None => self.site.unknown_address(),
        }
    }
}

impl Workload for Forgot {
    type Conn = Browser;

    async fn connect(&self) -> anyhow::Result<Browser> {
        Browser::open(&self.site, "/forgot").await
    }

    async fn once(&self, browser: &mut Browser) -> Sample {
        let email = self.address();
        let request = match self.via {
            Via::Form => self.site.post(&browser.client, "/forgot").form(&[
                ("email", email.as_str()),
                ("csrf_token", browser.csrf.as_str()),
            ]),
            Via::Api => self
                .site
                .post(&browser.client, "/auth/forgot")
                .json(&serde_json::json!({ "email": email })),
        };
        let (answer, latency) = send(request).await;
        Sample::judge(answer, latency, StatusCode::OK)
    }
}

/// Opening a reset link, `GET /reset?token=T`, expecting 303 to `/reset`. Opening never
/// consumes a token, so a pool of live tokens is reused round-robin.
pub struct OpenLink {
    pub site: Arc<Site>,
    pub tokens: TokenPool,
}

impl Workload for OpenLink {
    type Conn = Browser;

    async fn connect(&self) -> anyhow::Result<Browser> {
        Browser::open(&self.site, "/forgot").await
    }

    async fn once(&self, browser: &mut Browser) -> Sample {
        let path = format!("/reset?token={}", self.tokens.pick());
        let (answer, latency) = send(self.site.get(&browser.client, &path)).await;
        Sample::judge(answer, latency, StatusCode::SEE_OTHER)
    }
}

/// `POST /auth/reset` with a fresh token each time, expecting 200.
pub struct ApiReset {
    pub site: Arc<Site>,
    pub tokens: TokenPool,
}

impl Workload for ApiReset {
    type Conn = Browser;

    async fn connect(&self) -> anyhow::Result<Browser> {
        Browser::open(&self.site, "/forgot").await
    }

    async fn once(&self, browser: &mut Browser) -> Sample {
        let body = serde_json::json!({ "token": self.tokens.pick(), "password": NEW_PASSWORD });
        let request = self.site.post(&browser.client, "/auth/reset").json(&body);
        let (answer, latency) = send(request).await;
        Sample::judge(answer, latency, StatusCode::OK)
    }
}

/// The form reset with a fresh token each time: `GET /reset?token=T` (not timed: it is
/// the link scenario) puts the token in the browser's session, then `POST /reset` (timed)
/// sets the password and answers 303 to `/login`.
pub struct FormReset {
    pub site: Arc<Site>,
    pub tokens: TokenPool,
}

impl Workload for FormReset {
    type Conn = Browser;

    async fn connect(&self) -> anyhow::Result<Browser> {
        Browser::open(&self.site, "/forgot").await
    }

    async fn once(&self, browser: &mut Browser) -> Sample {
        let path = format!("/reset?token={}", self.tokens.pick());
        let (opened, latency) = send(self.site.get(&browser.client, &path)).await;
        if !opened
            .as_ref()
            .is_ok_and(|status| *status == StatusCode::SEE_OTHER)
        {
            return Sample::judge(opened, latency, StatusCode::SEE_OTHER);
        }
        let request = self.site.post(&browser.client, "/reset").form(&[
            ("password", NEW_PASSWORD),
            ("password_confirm", NEW_PASSWORD),
            ("csrf_token", browser.csrf.as_str()),
        ]);
        let (answer, latency) = send(request).await;
        Sample::judge(answer, latency, StatusCode::SEE_OTHER)
    }
}
