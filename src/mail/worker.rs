//! The outbox worker: turns queued reset requests into emails, then delivers queued
//! mail with retries and exponential backoff.
//!
//! HTTP handlers never wait for SMTP: they write rows and wake this worker. A lease
//! (`locked_until`) and `FOR UPDATE SKIP LOCKED` on Postgres keep workers on several
//! instances from sending one row twice; a crashed worker's lease simply runs out.

use std::time::Duration;

use lettre::message::Mailbox;

use crate::{
    db::{self, outbox},
    services::{
        Services,
        audit::{self, Event, EventKind},
        recovery::REQUEST_BATCH,
    },
};

use super::{EmailMessage, Transport, transport::SendError};

/// How long a claimed batch is reserved for this worker. It must outlast the slowest
/// delivery of a whole batch (BATCH × a few SMTP commands × the 15 s command timeout),
/// or another instance could claim and send a row again; a crashed worker's rows are
/// retried by others once it runs out.
const LEASE: Duration = Duration::from_secs(15 * 60);
/// Attempts before a message is marked failed.
pub const MAX_ATTEMPTS: i64 = 8;
/// A permanent refusal (5xx) is given up at this attempt: tried once more after the first
/// (a server may misspeak once), never eight times.
const PERMANENT_ATTEMPTS: i64 = 2;
/// Messages claimed at once.
const BATCH: i64 = 5;
/// How often the worker looks for work when nobody wakes it (other instances' rows,
/// retries that came due).
const POLL: Duration = Duration::from_secs(1);
/// Batches of reset requests handled before the queued mail is delivered: a flood of
/// requests is worked through quickly, yet never keeps mail waiting long.
const BATCHES_PER_PASS: usize = 20;
/// How often expired mail is marked and dead sessions and tokens are dropped.
const HOUSEKEEPING: Duration = Duration::from_secs(60);

/// The background worker of one instance.
pub struct Worker {
    services: Services,
    transport: Transport,
    from: Mailbox,
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

    /// Runs until the process ends.
    pub async fn run(self) {
        let mut last_housekeeping = std::time::Instant::now();
        loop {
            if let Err(e) = self.pass().await {
                tracing::error!(error = %e, "outbox worker pass failed");
            }
            // Writes that need not happen every second: an idle instance should not take
            // the database's write lock once a second.
            if last_housekeeping.elapsed() > HOUSEKEEPING {
                last_housekeeping = std::time::Instant::now();
                let result = db::run(&self.services.pool, |c| {
                    outbox::expire_stale(c)?;
                    db::sessions::purge_expired(c)?;
                    db::rate_limits::purge_expired(c)?;
                    db::reset_tokens::purge_dead(c)?;
                    db::optimize(c)
                })
                .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "housekeeping failed");
                }
            }
            tokio::select! {
                _ = self.services.mail_wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// One pass: requests → emails (batch after batch, for a while), then delivery.
    pub async fn pass(&self) -> Result<(), crate::services::ServiceError> {
        for _ in 0..BATCHES_PER_PASS {
            let services = self.services.clone();
            let handled = db::run(&self.services.pool, move |c| {
                services
                    .process_reset_requests(c)
                    .map_err(|e| db::DbError::Other(e.to_string()))
            })
            .await;
            match handled {
                Ok(handled) if (handled as i64) < REQUEST_BATCH => break,
                Ok(_) => {}
                // Mail already queued goes out even when the requests could not be read.
                Err(e) => {
                    tracing::error!(error = %e, "reading reset requests failed");
                    break;
                }
            }
        }
        loop {
            let rows = db::run(&self.services.pool, |c| outbox::claim_due(c, BATCH, LEASE)).await?;
            if rows.is_empty() {
                return Ok(());
            }
            for row in rows {
                self.deliver(row).await?;
            }
        }
    }

    async fn deliver(&self, row: outbox::OutboxRow) -> Result<(), crate::services::ServiceError> {
        // A reset email claimed with others may have died while they were sent (its link
        // revoked by a password change, a reset or a disabled account): never mail it then.
        if row.kind == "reset" {
            let id = row.id;
            if !db::run(&self.services.pool, move |c| outbox::is_queued(c, id)).await? {
                tracing::info!(outbox_id = id, "reset email dropped before sending");
                return Ok(());
            }
        }
        let message = EmailMessage::open(&self.services.keys, &row.payload);
        let result = match &message {
            Some(message) => {
                let id = message_id(&row, &self.from);
                self.transport
                    .send(&self.from, &row.recipient, message, &id)
                    .await
            }
            // Sealed under a key this instance does not hold: during a rolling key rotation
            // another instance may, so it is retried (and given up like any failure).
            None => Err(SendError {
                permanent: false,
                text: "the message cannot be decrypted with this instance's SECRET_KEY or \
                       SECRET_KEY_PREVIOUS"
                    .to_owned(),
            }),
        };
        let id = row.id;
        let about = |kind: EventKind| match row.user_id {
            Some(user_id) => Event::new(kind).user(user_id, &row.recipient),
            None => Event::new(kind),
        };
        let what = format!("{} email", row.kind.replace('_', " "));
        match result {
            Ok(()) => {
                tracing::info!(outbox_id = id, kind = %row.kind, "email sent");
                let sent = about(EventKind::MailSent).detail(what);
                db::run(&self.services.pool, move |c| {
                    db::write_transaction(c, |c| {
                        outbox::mark_sent(c, id)?;
                        audit::record(c, &sent)
                    })
                })
                .await?;
            }
            Err(SendError {
                permanent,
                text: error,
            }) => {
                let attempts = row.attempts + 1;
                let last = if permanent {
                    PERMANENT_ATTEMPTS
                } else {
                    MAX_ATTEMPTS
                };
                let retry_at = (attempts < last).then(|| {
                    db::now_plus(backoff(attempts, self.services.settings.mail_retry_base))
                });
                tracing::warn!(outbox_id = id, attempts, error = %error, "email delivery failed");
                // The error is already redacted (no addresses); it says what the server said.
                let outcome = if retry_at.is_some() {
                    "will retry"
                } else {
                    "gave up"
                };
                let failed = about(EventKind::MailFailed)
                    .detail(format!("{what}, attempt {attempts}, {outcome}: {error}"));
                db::run(&self.services.pool, move |c| {
                    db::write_transaction(c, |c| {
                        outbox::mark_attempt_failed(c, id, &error, retry_at)?;
                        audit::record(c, &failed)
                    })
                })
                .await?;
            }
        }
        Ok(())
    }
}

/// The `Message-ID` of an outbox row: the same for every attempt (a receiver that got a
/// message whose acknowledgement was lost sees the retry as the same message), different
/// for every row, and telling nothing about how many emails were sent (a hash of the row
/// id and its random sealing nonce), at the sender's domain.
pub fn message_id(row: &outbox::OutboxRow, from: &Mailbox) -> String {
    use sha2::{Digest, Sha256};
    let nonce = row.payload.get(..24).unwrap_or(&row.payload);
    let digest = Sha256::new()
        .chain_update(row.id.to_be_bytes())
        .chain_update(nonce)
        .finalize();
    let local: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("<{local}.latchkey@{}>", from.email.domain())
}

/// `base`, then twice that, four times… (5 s, 10 s, 20 s by default), capped at one hour.
pub fn backoff(attempts: i64, base: Duration) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    base.saturating_mul(1u32 << exp)
        .min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(1, base), Duration::from_secs(5));
        assert_eq!(backoff(2, base), Duration::from_secs(10));
        assert_eq!(backoff(4, base), Duration::from_secs(40));
        assert_eq!(backoff(30, base), Duration::from_secs(3600));
    }
}
