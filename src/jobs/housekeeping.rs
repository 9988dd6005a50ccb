//! Housekeeping: expired mail marked, dead sessions, rate-limit windows and tokens
//! dropped, the query planner's statistics kept current.

use crate::db::{self, outbox};

use super::{Worker, log_failure};

impl Worker {
    pub(super) async fn housekeeping(&self) {
        let result = db::run(&self.services.pool, |c| {
            outbox::expire_stale(c)?;
            db::sessions::purge_expired(c)?;
            db::rate_limits::purge_expired(c)?;
            db::reset_tokens::purge_dead(c)?;
            db::optimize(c)
        })
        .await;
        if let Err(e) = result {
            log_failure("housekeeping", &e);
        }
    }
}
