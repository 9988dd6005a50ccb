//! Delivery: queued mail claimed in batches and sent over `SMTP_CONNECTIONS` connections
//! at once, first attempts before retries, with exponential backoff.
//!
//! A lease (`locked_until`) and `FOR UPDATE SKIP LOCKED` on Postgres keep workers on
//! several instances from sending one row twice. The lease is short and renewed while a
//! batch is being sent, so a crashed worker's claims come back within [`LEASE`]; at
//! shutdown the sends under way finish and the claims not yet sent are handed back at
//! once. Outcomes are recorded every `SMTP_CONNECTIONS` messages, so a crash repeats at
//! most the messages that were in flight (at-least-once, with the same `Message-ID`).

use std::time::Duration;

use futures_util::{StreamExt, future::BoxFuture, stream};
use lettre::message::Mailbox;

use crate::{
    db::{self, DbError, outbox},
    mail::{EmailMessage, transport::SendError},
    services::audit::{self, Event, EventKind},
};

use super::{POLL, Stop, Worker, log_failure, stopped, stopping};

/// How long a claim is reserved for this worker without renewal: how long a crashed
/// worker's claims wait before any worker sends them.
pub const LEASE: Duration = Duration::from_secs(20);
/// How often the lease of a batch being sent is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Attempts before a message is marked failed.
pub const MAX_ATTEMPTS: i64 = 8;
/// A permanent refusal (5xx) is given up at this attempt: tried once more after the first
/// (a server may misspeak once), never eight times.
const PERMANENT_ATTEMPTS: i64 = 2;
/// Messages claimed at once, per SMTP connection.
const CLAIM_PER_CONNECTION: usize = 16;
/// What became of one message of a batch.
enum Outcome {
    Sent,
    /// Dropped while it waited (its link died): not sent, nothing to record.
    Dropped,
    /// Not sent because the worker is stopping: handed back to the queue.
    Released,
    Failed(SendError),
}

impl Worker {
    /// Delivery: claims batches while there are any, sends each over the connections at
    /// once, then sleeps until woken.
    pub(super) async fn delivery_loop(&self, stop: &Stop) {
        while !stopping(stop) {
            while !stopping(stop) {
                match self.deliver_batch(stop).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        log_failure("outbox delivery", &e);
                        break;
                    }
                }
            }
            tokio::select! {
                _ = self.services.mail_wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stopped(stop) => {}
            }
        }
    }

    /// Claims and delivers one batch; how many messages it claimed. The batch's lease is
    /// renewed while it is sent, and its outcomes are recorded every `SMTP_CONNECTIONS`
    /// messages.
    async fn deliver_batch(&self, stop: &Stop) -> Result<usize, DbError> {
        let connections = self.services.settings.smtp_connections;
        let limit = (connections * CLAIM_PER_CONNECTION) as i64;
        let rows = db::run(&self.services.pool, move |c| {
            outbox::claim_due(c, limit, LEASE)
        })
        .await?;
        let claimed = rows.len();
        if claimed == 0 {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        // The first message on each connection goes out as soon as it is claimed: the
        // claim itself saw it queued. Those after it wait for a connection, and are checked
        // again when their turn comes (their link may have died meanwhile).
        let mut outcomes = stream::iter(rows.into_iter().enumerate())
            .map(|(n, row)| async move {
                let outcome = self.deliver(&row, n >= connections, stop).await;
                (row, outcome)
            })
            .buffer_unordered(connections);
        // Group commit: outcomes are recorded while the next messages are sent, all that
        // finished during one commit in the next, so a crash repeats at most the messages
        // sent during the last commit, and sending never waits for the database.
        let mut pending: Vec<(outbox::OutboxRow, Outcome)> = Vec::new();
        let mut recording: Option<BoxFuture<'_, Result<(), DbError>>> = None;
        let mut sending = true;
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
        while sending || recording.is_some() || !pending.is_empty() {
            if recording.is_none() && !pending.is_empty() {
                recording = Some(Box::pin(self.record(std::mem::take(&mut pending))));
            }
            tokio::select! {
                next = outcomes.next(), if sending => match next {
                    Some(outcome) => pending.push(outcome),
                    None => sending = false,
                },
                recorded = async {
                    match recording.as_mut() {
                        Some(commit) => commit.await,
                        None => std::future::pending().await,
                    }
                }, if recording.is_some() => {
                    recording = None;
                    recorded?;
                }
                _ = renew.tick() => {
                    let ids = ids.clone();
                    db::run(&self.services.pool, move |c| outbox::renew(c, &ids, LEASE)).await?;
                }
            }
        }
        Ok(claimed)
    }

    /// Sends one message, unless it was dropped after it was claimed or the worker is
    /// stopping.
    async fn deliver(&self, row: &outbox::OutboxRow, recheck: bool, stop: &Stop) -> Outcome {
        if stopping(stop) {
            return Outcome::Released;
        }
        // A reset email claimed with others may have died while they were sent (its link
        // revoked by a password change, a reset or a disabled account): never mail it then.
        if recheck && row.kind == "reset" {
            let id = row.id;
            match db::run(&self.services.pool, move |c| outbox::still_queued(c, &[id])).await {
                Ok(queued) if queued.is_empty() => {
                    tracing::info!(outbox_id = id, "reset email dropped before sending");
                    return Outcome::Dropped;
                }
                Ok(_) => {}
                Err(e) => return Outcome::Failed(SendError::local(e.to_string())),
            }
        }
        let Some(message) = EmailMessage::open(&self.services.keys, &row.payload) else {
            // Sealed under a key this instance does not hold: during a rolling key
            // rotation another instance may, so it is retried (and given up like any
            // failure).
            return Outcome::Failed(SendError::local(
                "the message cannot be decrypted with this instance's SECRET_KEY or \
                 SECRET_KEY_PREVIOUS",
            ));
        };
        let id = message_id(row, &self.from);
        match self
            .transport
            .send(&self.from, &row.recipient, &message, &id)
            .await
        {
            Ok(()) => Outcome::Sent,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Records a batch's outcomes in one transaction: the sent ones in one statement and
    /// their events in another, each failure with its retry time.
    async fn record(&self, outcomes: Vec<(outbox::OutboxRow, Outcome)>) -> Result<(), DbError> {
        let base = self.services.settings.mail_retry_base;
        let about = |row: &outbox::OutboxRow, kind: EventKind| match row.user_id {
            Some(user_id) => Event::new(kind).user(user_id, &row.recipient),
            None => Event::new(kind),
        };
        let what = |row: &outbox::OutboxRow| format!("{} email", row.kind.replace('_', " "));
        let mut sent = Vec::new();
        let mut events = Vec::new();
        let mut failed = Vec::new();
        let mut released = Vec::new();
        for (row, outcome) in outcomes {
            match outcome {
                Outcome::Dropped => {}
                Outcome::Released => released.push(row.id),
                Outcome::Sent => {
                    tracing::info!(outbox_id = row.id, kind = %row.kind, "email sent");
                    sent.push(row.id);
                    events.push(about(&row, EventKind::MailSent).detail(what(&row)));
                }
                Outcome::Failed(SendError {
                    permanent,
                    text: error,
                    ..
                }) => {
                    let attempts = row.attempts + 1;
                    let last = if permanent {
                        PERMANENT_ATTEMPTS
                    } else {
                        MAX_ATTEMPTS
                    };
                    let retry_at = (attempts < last).then(|| db::now_plus(backoff(attempts, base)));
                    tracing::warn!(outbox_id = row.id, attempts, error = %error, "email delivery failed");
                    // The error is already redacted (no addresses); it says what the server
                    // said.
                    let outcome = if retry_at.is_some() {
                        "will retry"
                    } else {
                        "gave up"
                    };
                    events.push(about(&row, EventKind::MailFailed).detail(format!(
                        "{}, attempt {attempts}, {outcome}: {error}",
                        what(&row)
                    )));
                    failed.push((row.id, error, retry_at));
                }
            }
        }
        db::run(&self.services.pool, move |c| {
            db::write_transaction(c, |c| {
                outbox::mark_sent(c, &sent)?;
                outbox::release(c, &released)?;
                for (id, error, retry_at) in &failed {
                    outbox::mark_attempt_failed(c, *id, error, *retry_at)?;
                }
                audit::record_all(c, &events)
            })
        })
        .await?;
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
