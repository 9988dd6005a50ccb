//! The scenarios of issue 5, run one after the other against one server.
//!
//! While each runs, a thread samples the server's resident memory. After each, the
//! harness checks that the server is still up, and empties the queue of forgot requests
//! the worker had not reached yet: that backlog would otherwise land on the next scenario
//! (its size is reported; it shows whether the worker keeps up).

use std::{mem::take, sync::Arc};

use diesel::RunQueryDsl;
use latchkey::db::{self, DbPool, schema};

use crate::{
    load::{self, LoadConfig, Measurement, UsageSampler, Window, Workload},
    seed::Seeded,
    support::Server,
    workloads::{ApiReset, Forgot, FormReset, GetPage, OpenLink, Site, TokenPool, Via},
};

/// Connections loading `GET /login` during the reset storm (the storm has the usual
/// number).
pub const STORM_READERS: usize = 4;

/// One row of the report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scenario {
    GetForgot,
    FormForgotRegistered,
    FormForgotUnknown,
    ApiForgotRegistered,
    ApiForgotUnknown,
    OpenLink,
    ApiReset,
    FormReset,
    /// The storm: `POST /auth/reset` with fresh tokens, beside `LoginDuringStorm`.
    StormReset,
    /// `GET /login` while the storm saturates the hashing pool.
    LoginDuringStorm,
}

impl Scenario {
    /// Every row, in report order.
    pub const ALL: [Scenario; 10] = [
        Scenario::GetForgot,
        Scenario::FormForgotRegistered,
        Scenario::FormForgotUnknown,
        Scenario::ApiForgotRegistered,
        Scenario::ApiForgotUnknown,
        Scenario::OpenLink,
        Scenario::ApiReset,
        Scenario::FormReset,
        Scenario::StormReset,
        Scenario::LoginDuringStorm,
    ];

    /// What is run, in order: `StormReset` runs the storm, which yields both of its rows.
    const RUNS: [Scenario; 9] = [
        Scenario::GetForgot,
        Scenario::FormForgotRegistered,
        Scenario::FormForgotUnknown,
        Scenario::ApiForgotRegistered,
        Scenario::ApiForgotUnknown,
        Scenario::OpenLink,
        Scenario::ApiReset,
        Scenario::FormReset,
        Scenario::StormReset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::GetForgot => "GET /forgot",
            Scenario::FormForgotRegistered => "POST /forgot (form), registered",
            Scenario::FormForgotUnknown => "POST /forgot (form), unknown",
            Scenario::ApiForgotRegistered => "POST /auth/forgot, registered",
            Scenario::ApiForgotUnknown => "POST /auth/forgot, unknown",
            Scenario::OpenLink => "GET /reset?token=… (open a link)",
            Scenario::ApiReset => "POST /auth/reset",
            Scenario::FormReset => "POST /reset (form)",
            Scenario::StormReset => "POST /auth/reset, the storm",
            Scenario::LoginDuringStorm => "GET /login during the storm",
        }
    }
}

/// A measured scenario.
pub struct Row {
    pub scenario: Scenario,
    pub m: Measurement,
    /// What the server (and the machine) used while the scenario ran.
    pub usage: load::Usage,
}

/// Runs every scenario against one server, in order.
pub struct Runner<'a> {
    site: Arc<Site>,
    seeded: Seeded,
    server: &'a mut Server,
    pool: &'a DbPool,
    config: LoadConfig,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl<'a> Runner<'a> {
    pub fn new(
        site: Arc<Site>,
        seeded: Seeded,
        server: &'a mut Server,
        pool: &'a DbPool,
        config: LoadConfig,
    ) -> Self {
        Self {
            site,
            seeded,
            server,
            pool,
            config,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The rows measured, and notes on what went wrong or deserves a mention. Stops early
    /// when the server dies.
    pub async fn run_all(mut self) -> (Vec<Row>, Vec<String>) {
        for scenario in Scenario::RUNS {
            eprintln!("  {} …", scenario.name());
            let result = self.run(scenario).await;
            if !self.keep(scenario.name(), result).await {
                break;
            }
        }
        (self.rows, self.notes)
    }

    async fn run(&mut self, scenario: Scenario) -> anyhow::Result<Vec<Row>> {
        let site = Arc::clone(&self.site);
        let config = self.config;
        let pid = self.server.pid();
        let forgot_accounts = Some(self.seeded.forgot_accounts);
        match scenario {
            Scenario::GetForgot => {
                let workload = GetPage {
                    site,
                    path: "/forgot",
                };
                measure(scenario, workload, &config, pid).await
            }
            Scenario::FormForgotRegistered => {
                let workload = Forgot::new(site, Via::Form, forgot_accounts);
                measure(scenario, workload, &config, pid).await
            }
            Scenario::FormForgotUnknown => {
                let workload = Forgot::new(site, Via::Form, None);
                measure(scenario, workload, &config, pid).await
            }
            Scenario::ApiForgotRegistered => {
                let workload = Forgot::new(site, Via::Api, forgot_accounts);
                measure(scenario, workload, &config, pid).await
            }
            Scenario::ApiForgotUnknown => {
                let workload = Forgot::new(site, Via::Api, None);
                measure(scenario, workload, &config, pid).await
            }
            Scenario::OpenLink => {
                let tokens = TokenPool::new(take(&mut self.seeded.link_tokens));
                measure(scenario, OpenLink { site, tokens }, &config, pid).await
            }
            Scenario::ApiReset => {
                let tokens = TokenPool::new(take(&mut self.seeded.api_tokens));
                measure(scenario, ApiReset { site, tokens }, &config, pid).await
            }
            Scenario::FormReset => {
                let tokens = TokenPool::new(take(&mut self.seeded.form_tokens));
                measure(scenario, FormReset { site, tokens }, &config, pid).await
            }
            Scenario::StormReset | Scenario::LoginDuringStorm => {
                let tokens = TokenPool::new(take(&mut self.seeded.storm_tokens));
                storm(site, tokens, &config, pid).await
            }
        }
    }

    /// Keeps a run's rows (or notes why there are none), then checks the server and
    /// empties the worker's queue. Returns whether the server is still up.
    async fn keep(&mut self, label: &str, result: anyhow::Result<Vec<Row>>) -> bool {
        match result {
            Ok(rows) => {
                for row in &rows {
                    eprintln!("    {}: {}", row.scenario.name(), row.m.summary());
                }
                self.rows.extend(rows);
            }
            Err(e) => self.note(format!("{label}: not measured: {e:#}")),
        }
        match self.server.exited() {
            Ok(None) => {}
            Ok(Some(status)) => {
                self.note(format!("the server exited during {label} ({status})"));
                return false;
            }
            Err(e) => {
                self.note(format!("could not check the server after {label}: {e:#}"));
                return false;
            }
        }
        match clear_backlog(self.pool).await {
            Ok(0) => {}
            Ok(n) => self.note(format!(
                "{label}: {n} forgot requests were still queued for the worker when it \
                 ended (discarded before the next scenario)"
            )),
            Err(e) => self.note(format!(
                "{label}: could not empty the worker's queue: {e:#}"
            )),
        }
        true
    }

    fn note(&mut self, note: String) {
        eprintln!("    {note}");
        self.notes.push(note);
    }
}

/// Drives one workload on the usual number of connections.
async fn measure<W: Workload>(
    scenario: Scenario,
    workload: W,
    config: &LoadConfig,
    pid: u32,
) -> anyhow::Result<Vec<Row>> {
    let sampler = UsageSampler::start(pid);
    let m = load::drive(
        Arc::new(workload),
        config.connections,
        Window::after_warmup(config),
    )
    .await;
    let usage = sampler.stop();
    Ok(vec![Row {
        scenario,
        m: m?,
        usage,
    }])
}

/// The reset storm: `POST /auth/reset` with fresh tokens on the usual number of
/// connections saturates the hashing pool while `GET /login` runs on
/// [`STORM_READERS`] more, over the same window. A page that hashes nothing must not
/// wait behind the hashes.
async fn storm(
    site: Arc<Site>,
    tokens: TokenPool,
    config: &LoadConfig,
    pid: u32,
) -> anyhow::Result<Vec<Row>> {
    let resets = ApiReset {
        site: Arc::clone(&site),
        tokens,
    };
    let logins = GetPage {
        site,
        path: "/login",
    };
    let window = Window::after_warmup(config);
    let sampler = UsageSampler::start(pid);
    let (resets, logins) = tokio::join!(
        load::drive(Arc::new(resets), config.connections, window),
        load::drive(Arc::new(logins), STORM_READERS, window),
    );
    let usage = sampler.stop();
    Ok(vec![
        Row {
            scenario: Scenario::StormReset,
            m: resets?,
            usage,
        },
        Row {
            scenario: Scenario::LoginDuringStorm,
            m: logins?,
            usage,
        },
    ])
}

/// Deletes the forgot requests still queued for the worker; returns how many there were.
pub async fn clear_backlog(pool: &DbPool) -> anyhow::Result<usize> {
    let cleared = db::run(pool, |c| {
        diesel::delete(schema::reset_requests::table)
            .execute(c)
            .map_err(db::DbError::from)
    })
    .await?;
    Ok(cleared)
}
