//! Background jobs of one instance, beside the HTTP server: turning queued reset requests
//! into emails ([`requests`]), delivering queued mail ([`delivery`]) and housekeeping
//! ([`housekeeping`]). They use the services and the mail transports; nothing in the
//! services or below knows they exist.
//!
//! The request and delivery loops run side by side and never wait for each other: a flood
//! of requests never holds up mail already queued, and a slow SMTP server never holds up
//! the turning of requests into emails. HTTP handlers never wait for SMTP: they write rows
//! and wake the loop concerned.

mod delivery;
mod housekeeping;
mod requests;

use std::time::Duration;

use lettre::message::Mailbox;
use tokio::sync::watch;

use crate::{db, mail::Transport, services::Services};

pub use delivery::{LEASE, MAX_ATTEMPTS};

/// How often the loops look for work when nobody wakes them (other instances' rows,
/// retries that came due).
const POLL: Duration = Duration::from_secs(1);

/// The background worker of one instance.
pub struct Worker {
    services: Services,
    transport: Transport,
    from: Mailbox,
}

/// Says when the worker should stop: `true` once the server has stopped.
pub type Stop = watch::Receiver<bool>;

fn stopping(stop: &Stop) -> bool {
    *stop.borrow()
}

/// Waits until `stop` turns true (never, if its sender is gone without saying so).
async fn stopped(stop: &Stop) {
    let mut stop = stop.clone();
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Worker {
    /// A worker sending through `transport` as `MAIL_FROM`.
    pub fn new(services: Services, transport: Transport) -> Result<Self, String> {
        let from = services
            .settings
            .mail_from
            .parse::<Mailbox>()
            .map_err(|e| format!("MAIL_FROM: {e}"))?;
        Ok(Self {
            services,
            transport,
            from,
        })
    }

    /// The services this worker uses.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Runs until `stop` says so: both loops, in this one task (each waits on the database
    /// off the async workers, so they proceed side by side). Stopping lets the sends under
    /// way finish and hands the rest of the claimed mail back to the queue.
    pub async fn run(self, stop: Stop) {
        tokio::join!(self.request_loop(&stop), self.delivery_loop(&stop));
        self.transport.shutdown().await;
        tracing::info!("mail worker stopped");
    }
}

/// Logs a failed round of background work. While the database is down every round fails
/// the same way; the pool logs the outage once when it starts and once when it ends.
fn log_failure(what: &str, e: &db::DbError) {
    if e.is_unavailable() {
        tracing::debug!(error = %e, "{what} failed: database unavailable");
    } else {
        tracing::error!(error = %e, "{what} failed");
    }
}
