//! The three baselines every figure is divided by, measured in the same run on the same
//! machine, so each result is a ratio to what the hardware allows rather than a number
//! that means something only beside the machine it came from:
//!
//! - (a) argon2id hashes per second at the server's parameters on every core: the most
//!   resets the machine could ever do;
//! - (b) the database floor of a forgot request: the statements the handler runs
//!   (the rate-limit counter and the queued request), issued directly over a pool of the
//!   server's size;
//! - (c) a minimal actix-web handler serving a static page as large as `GET /forgot`:
//!   the most pages the HTTP stack could serve.

use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Instant,
};

use actix_web::{App, HttpResponse, HttpServer, dev::ServerHandle, web};
use anyhow::Context;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use latchkey::db::{self, DbPool, rate_limits, reset_requests};

use crate::{
    RATE_WINDOW,
    load::{self, LoadConfig, Measurement, Sample, Window, Workload, cores},
    workloads::{GetPage, Site, fake_client},
};

/// The server's default argon2id cost (`ARGON2_MEMORY_KIB`, `ARGON2_ITERATIONS`,
/// `ARGON2_PARALLELISM`).
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
const ARGON2_ITERATIONS: u32 = 2;
const ARGON2_PARALLELISM: u32 = 1;

// ---------------------------------------------------------------------------------------
// (a) argon2id

/// Baseline (a): argon2id hashes per second, one thread per core, each hashing in a loop.
pub async fn hash_rate(config: &LoadConfig) -> anyhow::Result<f64> {
    let config = *config;
    tokio::task::spawn_blocking(move || count_hashes(&config)).await?
}

fn count_hashes(config: &LoadConfig) -> anyhow::Result<f64> {
    let params = Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_PARALLELISM,
        Some(32),
    )
    .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let start = Instant::now() + config.warmup;
    let end = start + config.measure;
    let params = &params;
    let mut hashes = 0;
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..cores())
            .map(|_| scope.spawn(move || hash_loop(params, start, end)))
            .collect();
        for thread in threads {
            let counted = thread
                .join()
                .map_err(|_| anyhow::anyhow!("an argon2 thread panicked"))??;
            hashes += counted;
        }
        anyhow::Ok(())
    })?;
    Ok(hashes as f64 / config.measure.as_secs_f64())
}

/// Hashes until `end`; returns how many hashes finished between `start` and `end`.
fn hash_loop(params: &Params, start: Instant, end: Instant) -> anyhow::Result<usize> {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut counted = 0;
    loop {
        argon2
            .hash_password(b"baseline password for the hash rate")
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        let now = Instant::now();
        if now >= end {
            return Ok(counted);
        }
        if now >= start {
            counted += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// (b) the database floor of a forgot request

/// Baseline (b): the forgot handler's statements in a closed loop on `connections`
/// tasks over `pool`, one `db::run` per request, as the handler does them; the gap is
/// everything else the handler does (HTTP, CSRF, the page) and the worker behind it.
pub async fn db_floor(
    pool: &DbPool,
    config: &LoadConfig,
    tag: String,
) -> anyhow::Result<Measurement> {
    let floor = DbFloor {
        pool: pool.clone(),
        tag,
        next: AtomicUsize::new(0),
    };
    load::drive(
        Arc::new(floor),
        config.connections,
        Window::after_warmup(config),
    )
    .await
}

/// What one forgot request costs the database, without HTTP.
struct DbFloor {
    pool: DbPool,
    /// Tags the queued addresses, as the unknown addresses of the scenarios are.
    tag: String,
    next: AtomicUsize,
}

impl Workload for DbFloor {
    type Conn = ();

    async fn connect(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// `rate_limits::hit` on the client's `forgot:` bucket, computed as
    /// `services::limits` does, then `reset_requests::insert`: exactly the statements of
    /// `throttle` and `request_reset`, from the same spread of client addresses.
    async fn once(&self, _: &mut ()) -> Sample {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let ip = fake_client(n);
        let email = format!("floor{n}-{}@bench.test", self.tag);
        let started = Instant::now();
        let window_us = i64::try_from(RATE_WINDOW.as_micros()).unwrap_or(i64::MAX);
        let now_us = db::now().and_utc().timestamp_micros();
        let window_no = now_us.div_euclid(window_us);
        let expires_at = db::now_plus(RATE_WINDOW * 2);
        let bucket = format!("forgot:{ip}");
        let done = db::run(&self.pool, move |c| {
            rate_limits::hit(c, &bucket, window_no, expires_at)?;
            reset_requests::insert(c, &email, &ip, "", None)
        })
        .await;
        match done {
            Ok(()) => Sample::ok(started.elapsed()),
            Err(e) => Sample::failed(e, started.elapsed()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// (c) a static page

/// Baseline (c): `GET /` on a minimal actix-web server answering `page` (the bytes of a
/// real `GET /forgot`) as `text/html; charset=utf-8`, with one worker per core.
pub async fn static_page(page: web::Bytes, config: &LoadConfig) -> anyhow::Result<Measurement> {
    let server = StaticServer::start(page)?;
    let site = Site::new(
        format!("http://127.0.0.1:{}", server.port),
        "static".to_owned(),
    );
    let workload = GetPage {
        site: Arc::new(site),
        path: "/",
    };
    load::drive(
        Arc::new(workload),
        config.connections,
        Window::after_warmup(config),
    )
    .await
}

/// The in-process static page server, on a thread of its own (actix-web runs its own
/// runtime); stopped when this value is dropped.
struct StaticServer {
    port: u16,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl StaticServer {
    fn start(page: web::Bytes) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let (handles, handle) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let served = actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let page = page.clone();
                    App::new().route(
                        "/",
                        web::get().to(move || {
                            let page = page.clone();
                            async move {
                                HttpResponse::Ok()
                                    .content_type("text/html; charset=utf-8")
                                    .body(page)
                            }
                        }),
                    )
                })
                .workers(cores())
                .listen(listener)?
                .run();
                // The receiver only goes away if `start` already failed.
                let _ = handles.send(server.handle());
                server.await
            });
            if let Err(e) = served {
                eprintln!("bench: the static page server failed: {e}");
            }
        });
        let handle = handle
            .recv()
            .context("the static page server did not start")?;
        Ok(Self {
            port,
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        // `stop` sends the command at once; its future only reports completion, which
        // joining the thread waits for.
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
