//! Requests → emails: the queued "forgot password" requests, batch after batch, become
//! tokens and queued emails (the work itself is the recovery service's); housekeeping runs
//! from this loop now and then.

use std::time::Duration;

use crate::{db, services::recovery::REQUEST_BATCH};

use super::{POLL, Stop, Worker, log_failure, stopped, stopping};

/// How often expired mail is marked and dead sessions and tokens are dropped.
const HOUSEKEEPING: Duration = Duration::from_secs(60);

impl Worker {
    /// Requests → emails, batch after batch while there are any; housekeeping now and then.
    pub(super) async fn request_loop(&self, stop: &Stop) {
        let mut last_housekeeping = std::time::Instant::now();
        while !stopping(stop) {
            while !stopping(stop) {
                let services = self.services.clone();
                let handled = db::run(&self.services.pool, move |c| {
                    services.process_reset_requests(c)
                })
                .await;
                match handled {
                    Ok(0) => break,
                    Ok(handled) => {
                        self.services.mail_wake.notify_one();
                        if (handled as i64) < REQUEST_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        log_failure("reading reset requests", &e);
                        break;
                    }
                }
            }
            // Writes that need not happen every second: an idle instance should not take
            // the database's write lock once a second.
            if last_housekeeping.elapsed() > HOUSEKEEPING {
                last_housekeeping = std::time::Instant::now();
                self.housekeeping().await;
            }
            tokio::select! {
                _ = self.services.requests_wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stopped(stop) => {}
            }
        }
    }
}
