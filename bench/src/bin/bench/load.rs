//! The load generator: a closed loop, as wrk runs one. `connections` tasks each send a
//! request, wait for the whole answer, and send the next, until the deadline. Nothing is
//! recorded during the warm-up; afterwards every answer that arrives before the deadline
//! is, so req/s counts the successful answers of the measured seconds only.
//!
//! Also here: the sampler of the server's resident memory, read from `/proc` while a
//! scenario runs.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use reqwest::{RequestBuilder, StatusCode};

/// How often the server's resident memory is sampled.
const RSS_PERIOD: Duration = Duration::from_millis(20);

/// How hard and how long every scenario and baseline is driven.
#[derive(Clone, Copy, Debug)]
pub struct LoadConfig {
    /// Concurrent connections (wrk's `-c`).
    pub connections: usize,
    /// Driven but not recorded: connections open, caches fill, the CPU's clock settles.
    pub warmup: Duration,
    /// Driven and recorded.
    pub measure: Duration,
}

/// The number of cores, which is also the server's default number of hashing threads.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// How one request went.
pub enum Outcome {
    /// The expected answer.
    Ok,
    /// 503: the password-hashing pool was saturated and shed the request (counted apart).
    Busy,
    /// A transport error or an unexpected status.
    Error(String),
}

/// One request: how it went and how long it took.
pub struct Sample {
    pub outcome: Outcome,
    pub latency: Duration,
}

impl Sample {
    /// A success.
    pub fn ok(latency: Duration) -> Self {
        Self {
            outcome: Outcome::Ok,
            latency,
        }
    }

    /// A failure, with what went wrong.
    pub fn failed(error: impl std::fmt::Display, latency: Duration) -> Self {
        Self {
            outcome: Outcome::Error(error.to_string()),
            latency,
        }
    }

    /// Judges an HTTP answer against the status the scenario expects.
    pub fn judge(
        answer: Result<StatusCode, reqwest::Error>,
        latency: Duration,
        expected: StatusCode,
    ) -> Self {
        match answer {
            Ok(status) if status == expected => Self::ok(latency),
            Ok(status) if status == StatusCode::SERVICE_UNAVAILABLE => Self {
                outcome: Outcome::Busy,
                latency,
            },
            Ok(status) => Self::failed(format!("answered {status}"), latency),
            Err(e) => Self::failed(format!("{:#}", anyhow::Error::from(e)), latency),
        }
    }
}

/// What the simulated clients of one scenario do.
pub trait Workload: Send + Sync + 'static {
    /// The state of one connection: its own HTTP client (and so its own TCP connection
    /// and cookie jar), its CSRF token…
    type Conn: Send + 'static;

    /// Opens one connection; runs during the warm-up.
    fn connect(&self) -> impl Future<Output = anyhow::Result<Self::Conn>> + Send;

    /// Sends one request and waits for the whole answer.
    fn once(&self, conn: &mut Self::Conn) -> impl Future<Output = Sample> + Send;
}

/// Sends one request and reads the whole body. The request is built (and its body
/// serialised) by the caller; the latency runs from sending to the last byte.
pub async fn send(request: RequestBuilder) -> (Result<StatusCode, reqwest::Error>, Duration) {
    let started = Instant::now();
    let answer = match request.send().await {
        Ok(response) => {
            let status = response.status();
            response.bytes().await.map(|_| status)
        }
        Err(e) => Err(e),
    };
    (answer, started.elapsed())
}

/// When recording starts and when the load stops.
#[derive(Clone, Copy)]
pub struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    /// A window that opens after the warm-up, from now.
    pub fn after_warmup(config: &LoadConfig) -> Self {
        let start = Instant::now() + config.warmup;
        Self {
            start,
            end: start + config.measure,
        }
    }
}

/// Drives `workload` on `connections` connections through `window` and summarises it.
/// Fails when a connection could not be opened.
pub async fn drive<W: Workload>(
    workload: Arc<W>,
    connections: usize,
    window: Window,
) -> anyhow::Result<Measurement> {
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(Arc::clone(&workload), window)))
        .collect();
    let mut tally = Tally::default();
    let mut failure = None;
    // Every task is awaited, even after a failure, so none outlives this scenario.
    for task in tasks {
        match task.await {
            Ok(Ok(part)) => tally.merge(part),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(e.into())),
        }
    }
    match failure {
        Some(e) => Err(e.context("a connection could not be opened")),
        None => Ok(tally.summarise((window.end - window.start).as_secs_f64())),
    }
}

/// One connection's closed loop.
async fn connection<W: Workload>(workload: Arc<W>, window: Window) -> anyhow::Result<Tally> {
    let mut conn = workload.connect().await?;
    let mut tally = Tally::default();
    loop {
        let sample = workload.once(&mut conn).await;
        let now = Instant::now();
        if now >= window.end {
            return Ok(tally);
        }
        if now >= window.start {
            tally.record(sample);
        }
    }
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    /// Latencies of the successful requests, in milliseconds.
    latencies_ms: Vec<f64>,
    errors: usize,
    busy: usize,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, sample: Sample) {
        match sample.outcome {
            Outcome::Ok => self
                .latencies_ms
                .push(sample.latency.as_secs_f64() * 1000.0),
            Outcome::Busy => self.busy += 1,
            Outcome::Error(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_ms.extend(other.latencies_ms);
        self.errors += other.errors;
        self.busy += other.busy;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn summarise(mut self, seconds: f64) -> Measurement {
        self.latencies_ms.sort_by(f64::total_cmp);
        Measurement {
            ok: self.latencies_ms.len(),
            errors: self.errors,
            busy: self.busy,
            seconds,
            p50_ms: percentile(&self.latencies_ms, 0.50),
            p99_ms: percentile(&self.latencies_ms, 0.99),
            first_error: self.first_error,
        }
    }
}

/// The summary of one measured run.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Successful requests.
    pub ok: usize,
    /// Transport errors and unexpected statuses.
    pub errors: usize,
    /// 503s from a saturated hashing pool.
    pub busy: usize,
    /// The measured seconds.
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub first_error: Option<String>,
}

impl Measurement {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    /// One line for the progress output.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{:.1} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            self.rate(),
            self.p50_ms,
            self.p99_ms,
            self.errors
        );
        if self.busy > 0 {
            line.push_str(&format!(", {} × 503", self.busy));
        }
        if let Some(e) = &self.first_error {
            line.push_str(&format!(" (first: {e})"));
        }
        line
    }
}

/// Nearest-rank percentile of sorted values; NaN when there are none.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

// ---------------------------------------------------------------------------------------
// Memory

/// A field of `/proc/<pid>/status` given in kB (`VmRSS:`, `VmHWM:`), in MiB.
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// What the server used while a scenario ran.
#[derive(Clone, Copy, Default)]
pub struct Usage {
    /// Highest resident memory, MiB.
    pub peak_rss_mib: Option<f64>,
    /// The server's CPU time over the wall time, as a share of all cores (1.0 = all busy).
    pub server_cpu: Option<f64>,
    /// Every process's CPU time (server, database, load generator) the same way.
    pub machine_cpu: Option<f64>,
}

/// A process's user + system CPU time in clock ticks (`/proc/<pid>/stat` fields 14-15).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields are counted after its `)`.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's busy and total clock ticks, summed over all cores (`/proc/stat`).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Watches the server while a scenario runs: a thread samples its resident memory every
/// 20 ms, keeping the highest value, and its CPU time and the machine's are read at the
/// start and the end, to show who the cores worked for.
pub struct UsageSampler {
    done: Arc<AtomicBool>,
    thread: JoinHandle<Option<f64>>,
    pid: u32,
    started: std::time::Instant,
    server_ticks: Option<u64>,
    machine: Option<(u64, u64)>,
}

impl UsageSampler {
    pub fn start(pid: u32) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&done);
        let thread = std::thread::spawn(move || {
            let mut peak: Option<f64> = None;
            while !stopped.load(Ordering::Relaxed) {
                if let Some(rss) = status_mib(pid, "VmRSS:") {
                    peak = Some(peak.map_or(rss, |p| p.max(rss)));
                }
                std::thread::sleep(RSS_PERIOD);
            }
            peak
        });
        Self {
            done,
            thread,
            pid,
            started: std::time::Instant::now(),
            server_ticks: process_ticks(pid),
            machine: machine_ticks(),
        }
    }

    /// Stops sampling and sums up.
    pub fn stop(self) -> Usage {
        let wall = self.started.elapsed().as_secs_f64();
        let cores = cores() as f64;
        let server_cpu = self
            .server_ticks
            .zip(process_ticks(self.pid))
            .map(|(a, b)| (b - a) as f64 / TICKS_PER_SECOND / wall / cores);
        let machine_cpu =
            self.machine
                .zip(machine_ticks())
                .map(|((busy0, total0), (busy1, total1))| {
                    (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64
                });
        self.done.store(true, Ordering::Relaxed);
        Usage {
            peak_rss_mib: self.thread.join().ok().flatten(),
            server_cpu,
            machine_cpu,
        }
    }
}
