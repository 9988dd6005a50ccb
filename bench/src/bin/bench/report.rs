//! The markdown report: the baselines, one table per backend with every figure as a ratio
//! to its baseline and as a multiple of the Django anchor, then the targets of issue 5,
//! each met or not. Targets are reported, not enforced: this is a measurement.

use std::{
    fmt::{self, Write as _},
    path::PathBuf,
};

use crate::{
    Backend,
    baselines::ARGON2_MEMORY_KIB,
    load::{LoadConfig, Measurement, cores},
    scenarios::{Row, STORM_READERS, Scenario},
    workloads::FAKE_CLIENTS,
};

/// Resident memory the server may use beyond its hashing pool, in MiB.
const BASE_RSS_MIB: f64 = 64.0;
/// The most `GET /login` may take at the 99th percentile during the reset storm.
const LOGIN_P99_MS: f64 = 20.0;

/// Baseline (c), with the size of the page it served.
pub struct PageBaseline {
    pub bytes: usize,
    pub m: Measurement,
}

/// What one backend measured.
pub struct BackendReport {
    pub backend: Backend,
    /// Baseline (b) on this backend.
    pub floor: Measurement,
    pub rows: Vec<Row>,
    /// The server's peak resident memory over its whole life (`VmHWM`), in MiB.
    pub hwm_mib: Option<f64>,
    /// What went wrong or deserves a mention.
    pub notes: Vec<String>,
    /// The server's log.
    pub log: PathBuf,
}

/// Everything one run measured.
pub struct RunReport {
    pub config: LoadConfig,
    pub log_filter: String,
    pub commit: Option<String>,
    /// Baseline (a).
    pub hashes_per_second: f64,
    pub page: Option<PageBaseline>,
    pub backends: Vec<BackendReport>,
    /// Backends that could not be measured at all.
    pub failures: Vec<String>,
}

/// The baseline a scenario is held against.
#[derive(Clone, Copy)]
enum Base {
    /// (a) argon2id hashes/s: resets.
    Hashes,
    /// (b) the database floor: forgot requests.
    Floor,
    /// (c) the static page: GET pages.
    Page,
}

impl Base {
    fn letter(self) -> &'static str {
        match self {
            Base::Hashes => "a",
            Base::Floor => "b",
            Base::Page => "c",
        }
    }
}

fn base_of(scenario: Scenario) -> Option<Base> {
    match scenario {
        Scenario::GetForgot => Some(Base::Page),
        // Opening a link is no mere page: it reads the token and writes the session and an
        // audit event. The issue holds it to the Django anchor only.
        Scenario::OpenLink => None,
        Scenario::FormForgotRegistered
        | Scenario::FormForgotUnknown
        | Scenario::ApiForgotRegistered
        | Scenario::ApiForgotUnknown => Some(Base::Floor),
        Scenario::ApiReset | Scenario::FormReset | Scenario::StormReset => Some(Base::Hashes),
        Scenario::LoginDuringStorm => None,
    }
}

/// The smallest ratio to its baseline a scenario must reach.
fn min_ratio(scenario: Scenario) -> Option<f64> {
    if scenario == Scenario::StormReset {
        // Reported beside its baseline; the storm's target is the sign-in page's p99.
        return None;
    }
    Some(match base_of(scenario)? {
        Base::Hashes => 0.85,
        Base::Floor => 0.6,
        Base::Page => 0.5,
    })
}

/// Django 5.2's req/s for the scenario on this machine kind (wrk -t2 -c16, 15 s), and
/// the multiple of it we want.
fn django(scenario: Scenario) -> Option<(f64, f64)> {
    match scenario {
        Scenario::GetForgot => Some((2557.0, 10.0)),
        Scenario::FormForgotRegistered | Scenario::ApiForgotRegistered => Some((495.0, 5.0)),
        Scenario::FormForgotUnknown | Scenario::ApiForgotUnknown => Some((1802.0, 5.0)),
        Scenario::OpenLink => Some((953.0, 10.0)),
        Scenario::ApiReset | Scenario::FormReset => Some((11.0, 10.0)),
        Scenario::StormReset | Scenario::LoginDuringStorm => None,
    }
}

/// The resident memory allowed: 64 MiB plus one argon2 block per hashing thread.
fn rss_limit_mib() -> f64 {
    BASE_RSS_MIB + cores() as f64 * f64::from(ARGON2_MEMORY_KIB) / 1024.0
}

fn tick(met: bool) -> &'static str {
    if met { "✓" } else { "✗" }
}

impl RunReport {
    /// A scenario's rate divided by its baseline's.
    fn ratio(&self, backend: &BackendReport, row: &Row) -> Option<(f64, Base)> {
        let base = base_of(row.scenario)?;
        let limit = match base {
            Base::Hashes => self.hashes_per_second,
            Base::Floor => backend.floor.rate(),
            Base::Page => self.page.as_ref()?.m.rate(),
        };
        Some((row.m.rate() / limit, base))
    }

    /// Each target on `backend`: what was measured, and whether it is met.
    fn targets(&self, backend: &BackendReport) -> Vec<(String, bool)> {
        let mut targets = Vec::new();
        for row in &backend.rows {
            let name = row.scenario.name();
            if let (Some(min), Some((ratio, base))) =
                (min_ratio(row.scenario), self.ratio(backend, row))
            {
                targets.push((
                    format!("{name}: {ratio:.2} × ({}), target ≥ {min}", base.letter()),
                    ratio >= min,
                ));
            }
            if row.scenario == Scenario::LoginDuringStorm {
                targets.push((
                    format!(
                        "{name}: p99 {:.1} ms, target ≤ {LOGIN_P99_MS} ms",
                        row.m.p99_ms
                    ),
                    row.m.p99_ms <= LOGIN_P99_MS,
                ));
            }
        }
        if let Some(peak) = peak_rss(backend) {
            let limit = rss_limit_mib();
            targets.push((
                format!("peak RSS: {peak:.1} MiB, target ≤ {limit:.0} MiB"),
                peak <= limit,
            ));
        }
        if backend.backend == Backend::Postgres {
            for row in &backend.rows {
                if let Some((anchor, want)) = django(row.scenario) {
                    let times = row.m.rate() / anchor;
                    targets.push((
                        format!(
                            "{}: {times:.1}× Django ({anchor} req/s), wanted ≥ {want}×",
                            row.scenario.name()
                        ),
                        times >= want,
                    ));
                }
            }
        }
        targets
    }
}

/// The highest resident memory seen: the sampled peaks and the kernel's high-water mark.
fn peak_rss(backend: &BackendReport) -> Option<f64> {
    backend
        .rows
        .iter()
        .filter_map(|row| row.usage.peak_rss_mib)
        .chain(backend.hwm_mib)
        .reduce(f64::max)
}

/// The whole report, in markdown.
pub fn render(report: &RunReport) -> Result<String, fmt::Error> {
    let mut out = String::new();
    header(&mut out, report)?;
    baselines(&mut out, report)?;
    for backend in &report.backends {
        backend_section(&mut out, report, backend)?;
    }
    for failure in &report.failures {
        writeln!(out, "\n**Not measured** — {failure}")?;
    }
    Ok(out)
}

fn header(out: &mut String, report: &RunReport) -> fmt::Result {
    let c = &report.config;
    writeln!(out, "# Throughput benchmark\n")?;
    writeln!(
        out,
        "- date: {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    )?;
    writeln!(
        out,
        "- machine: {} cores, {} {}; commit {}",
        cores(),
        std::env::consts::OS,
        std::env::consts::ARCH,
        report.commit.as_deref().unwrap_or("unknown")
    )?;
    writeln!(
        out,
        "- load: closed loop on {n} connections (as wrk -c{n}), {warmup} s warm-up then \
         {measure} s measured per scenario and baseline; req/s counts successful answers; \
         p50 and p99 are nearest-rank over them; errors are transport errors and \
         unexpected statuses",
        n = c.connections,
        warmup = c.warmup.as_secs_f64(),
        measure = c.measure.as_secs_f64()
    )?;
    writeln!(
        out,
        "- server: release build, `RUST_LOG={}`, defaults otherwise (pool 10, {} hashing \
         threads, argon2id m={ARGON2_MEMORY_KIB} KiB t=2 p=1); rate limits on at 10⁹ per \
         10 min, so every request runs the limiter and none is refused; requests come from \
         {FAKE_CLIENTS} fake clients through `X-Forwarded-For`",
        report.log_filter,
        cores()
    )?;
    writeln!(
        out,
        "- form reset: each request opens its link first (`GET /reset?token=…`, not timed), \
         then `POST /reset` is timed; the storm runs `POST /auth/reset` on {} connections \
         and `GET /login` on {STORM_READERS} more at once; 503s from a saturated hashing \
         pool are counted apart from errors",
        c.connections
    )?;
    writeln!(
        out,
        "- × Django: Django 5.2 on this machine kind (wrk -t2 -c16, 15 s), PostgreSQL rows only\n"
    )
}

fn baselines(out: &mut String, report: &RunReport) -> fmt::Result {
    writeln!(out, "## Baselines\n")?;
    writeln!(out, "| baseline | req/s | p50 ms | p99 ms |")?;
    writeln!(out, "|---|---:|---:|---:|")?;
    writeln!(
        out,
        "| (a) argon2id hashes/s, m={ARGON2_MEMORY_KIB} KiB t=2 p=1, {} threads | {:.1} | — | — |",
        cores(),
        report.hashes_per_second
    )?;
    for backend in &report.backends {
        let f = &backend.floor;
        writeln!(
            out,
            "| (b) forgot's statements on {} (`rate_limits::hit` + `reset_requests::insert`, \
             one `db::run`, pool 10) | {:.0} | {:.2} | {:.2} |",
            backend.backend.name(),
            f.rate(),
            f.p50_ms,
            f.p99_ms
        )?;
    }
    if let Some(page) = &report.page {
        writeln!(
            out,
            "| (c) static {}-byte page, minimal actix-web, {} workers | {:.0} | {:.2} | {:.2} |",
            page.bytes,
            cores(),
            page.m.rate(),
            page.m.p50_ms,
            page.m.p99_ms
        )?;
    }
    writeln!(
        out,
        "\nBaseline (b) runs the forgot handler's statements in one hop to the blocking pool, \
         as the handler does; the gap is HTTP, CSRF, the page, and the worker behind them."
    )
}

fn backend_section(out: &mut String, report: &RunReport, backend: &BackendReport) -> fmt::Result {
    let postgres = backend.backend == Backend::Postgres;
    writeln!(out, "\n## {}\n", backend.backend.name())?;
    writeln!(
        out,
        "| scenario | req/s | p50 ms | p99 ms | errors | peak RSS MiB | CPU server / all | vs baseline | target | × Django |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|---|")?;
    for row in &backend.rows {
        let ratio = report.ratio(backend, row);
        let vs_django = django(row.scenario).filter(|_| postgres).map_or_else(
            || "—".to_owned(),
            |(anchor, want)| {
                let times = row.m.rate() / anchor;
                format!("{times:.1}× (≥ {want} {})", tick(times >= want))
            },
        );
        writeln!(
            out,
            "| {} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {vs_django} |",
            row.scenario.name(),
            row.m.rate(),
            row.m.p50_ms,
            row.m.p99_ms,
            errors_cell(&row.m),
            row.usage
                .peak_rss_mib
                .map_or_else(|| "—".to_owned(), |mib| format!("{mib:.1}")),
            cpu_cell(&row.usage),
            ratio.map_or_else(
                || "—".to_owned(),
                |(r, base)| format!("{r:.2} × ({})", base.letter())
            ),
            target_cell(row, ratio),
        )?;
    }
    writeln!(
        out,
        "\nServer memory: peak RSS over the run (VmHWM) {}; allowed {:.0} MiB \
         (64 MiB + {} hashing threads × {} KiB). Server log: `{}`.",
        backend
            .hwm_mib
            .map_or_else(|| "unknown".to_owned(), |mib| format!("{mib:.1} MiB")),
        rss_limit_mib(),
        cores(),
        ARGON2_MEMORY_KIB,
        backend.log.display()
    )?;
    if !backend.notes.is_empty() {
        writeln!(out)?;
    }
    for note in &backend.notes {
        writeln!(out, "- {note}")?;
    }
    let scope = if postgres {
        ""
    } else {
        " (the targets are set for PostgreSQL)"
    };
    writeln!(out, "\n### Targets on {}{scope}\n", backend.backend.name())?;
    for (target, met) in report.targets(backend) {
        let verdict = if met { "met" } else { "**not met**" };
        writeln!(out, "- {verdict} — {target}")?;
    }
    Ok(())
}

/// Errors, and the 503s of a saturated hashing pool beside them.
fn errors_cell(m: &Measurement) -> String {
    if m.busy > 0 {
        format!("{} (+{} × 503)", m.errors, m.busy)
    } else {
        m.errors.to_string()
    }
}

fn target_cell(row: &Row, ratio: Option<(f64, Base)>) -> String {
    if row.scenario == Scenario::LoginDuringStorm {
        return format!(
            "p99 ≤ {LOGIN_P99_MS} ms {}",
            tick(row.m.p99_ms <= LOGIN_P99_MS)
        );
    }
    match (min_ratio(row.scenario), ratio) {
        (Some(min), Some((r, _))) => format!("≥ {min} {}", tick(r >= min)),
        _ => "—".to_owned(),
    }
}

/// The server's share of all cores and the whole machine's, in percent.
fn cpu_cell(usage: &crate::load::Usage) -> String {
    match (usage.server_cpu, usage.machine_cpu) {
        (Some(server), Some(all)) => format!("{:.0} % / {:.0} %", server * 100.0, all * 100.0),
        _ => "—".to_owned(),
    }
}
