//! Queries on `outbox`: mail written in the same transaction as what it announces, and
//! delivered later by the worker.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{
    AnyConnection, DbError,
    keyset::{self, Keyset, Page},
    schema::outbox,
};

/// Statuses a message moves through.
pub mod status {
    pub const QUEUED: &str = "queued";
    pub const SENT: &str = "sent";
    pub const FAILED: &str = "failed";
    pub const EXPIRED: &str = "expired";
}

/// An outbox row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub recipient: String,
    pub payload: Vec<u8>,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: NaiveDateTime,
    pub locked_until: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub sent_at: Option<NaiveDateTime>,
    pub expires_at: Option<NaiveDateTime>,
    /// The account the message concerns (for its audit events).
    pub user_id: Option<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = outbox)]
struct NewOutbox<'a> {
    kind: &'a str,
    recipient: &'a str,
    payload: &'a [u8],
    status: &'a str,
    attempts: i64,
    next_attempt_at: NaiveDateTime,
    created_at: NaiveDateTime,
    expires_at: Option<NaiveDateTime>,
    user_id: Option<i64>,
}

/// Queues a message about an account (its payload already sealed).
pub fn insert(
    conn: &mut AnyConnection,
    user_id: i64,
    kind: &str,
    recipient: &str,
    payload: &[u8],
    expires_at: Option<NaiveDateTime>,
) -> Result<(), DbError> {
    let now = super::now();
    diesel::insert_into(outbox::table)
        .values(NewOutbox {
            kind,
            recipient,
            payload,
            status: status::QUEUED,
            attempts: 0,
            next_attempt_at: now,
            created_at: now,
            expires_at,
            user_id: Some(user_id),
        })
        .execute(conn)?;
    Ok(())
}

/// Claims up to `limit` due messages for this worker with a lease, so that workers on
/// several instances never send one row twice. On Postgres the candidates are locked
/// with `FOR UPDATE SKIP LOCKED`; on SQLite (one process) the conditional update suffices.
pub fn claim_due(
    conn: &mut AnyConnection,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<OutboxRow>, DbError> {
    let now = super::now();
    let until = super::now_plus(lease);
    let due = || {
        outbox::table
            .filter(outbox::status.eq(status::QUEUED))
            .filter(outbox::next_attempt_at.le(now))
            // A message whose link has expired is never sent (housekeeping marks it later).
            .filter(outbox::expires_at.is_null().or(outbox::expires_at.gt(now)))
            .filter(
                outbox::locked_until
                    .is_null()
                    .or(outbox::locked_until.lt(now)),
            )
            .select(outbox::id)
    };
    // First attempts before retries: a message the server refused once must not keep a
    // fresh one waiting. Among them, half the batch from the newest and half from the
    // oldest: a person who asks during a flood is not queued behind all of it, and the
    // backlog still drains (as `reset_requests::next_batch`).
    let newest = due()
        .order((outbox::attempts.asc(), outbox::id.desc()))
        .limit(limit / 2);
    let oldest = due()
        .order((outbox::attempts.asc(), outbox::id.asc()))
        .limit(limit);
    let ids: Vec<i64> = match conn {
        AnyConnection::Postgresql(pg) => pg.transaction(|pg| {
            // Rows this transaction locked in the first query are not skipped by the
            // second (only other transactions' are): the union is taken below.
            let newest: Vec<i64> = newest.for_update().skip_locked().load(pg)?;
            let oldest: Vec<i64> = oldest.for_update().skip_locked().load(pg)?;
            let ids = super::both_ends(newest, oldest, limit, |id| *id);
            diesel::update(outbox::table.filter(outbox::id.eq_any(&ids)))
                .set(outbox::locked_until.eq(Some(until)))
                .execute(pg)?;
            Ok::<_, diesel::result::Error>(ids)
        })?,
        AnyConnection::Sqlite(_) => {
            let newest: Vec<i64> = newest.load(conn)?;
            let oldest: Vec<i64> = oldest.load(conn)?;
            let candidates = super::both_ends(newest, oldest, limit, |id| *id);
            let mut won = Vec::with_capacity(candidates.len());
            for id in candidates {
                let n = diesel::update(
                    outbox::table.find(id).filter(
                        outbox::locked_until
                            .is_null()
                            .or(outbox::locked_until.lt(now)),
                    ),
                )
                .set(outbox::locked_until.eq(Some(until)))
                .execute(conn)?;
                if n == 1 {
                    won.push(id);
                }
            }
            won
        }
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(outbox::table
        .filter(outbox::id.eq_any(&ids))
        .order((outbox::attempts.asc(), outbox::id.asc()))
        .select(OutboxRow::as_select())
        .load(conn)?)
}

/// Extends the lease on messages this worker is still sending.
pub fn renew(
    conn: &mut AnyConnection,
    ids: &[i64],
    lease: std::time::Duration,
) -> Result<(), DbError> {
    diesel::update(
        outbox::table
            .filter(outbox::id.eq_any(ids))
            .filter(outbox::status.eq(status::QUEUED)),
    )
    .set(outbox::locked_until.eq(Some(super::now_plus(lease))))
    .execute(conn)?;
    Ok(())
}

/// Hands claimed messages back unsent (at shutdown), so that any worker sends them at once
/// instead of when the lease runs out.
pub fn release(conn: &mut AnyConnection, ids: &[i64]) -> Result<(), DbError> {
    if ids.is_empty() {
        return Ok(());
    }
    diesel::update(
        outbox::table
            .filter(outbox::id.eq_any(ids))
            .filter(outbox::status.eq(status::QUEUED)),
    )
    .set(outbox::locked_until.eq(None::<NaiveDateTime>))
    .execute(conn)?;
    Ok(())
}

/// Which of these messages are still waiting to be sent (not dropped meanwhile): one
/// query for a whole claimed batch.
pub fn still_queued(conn: &mut AnyConnection, ids: &[i64]) -> Result<Vec<i64>, DbError> {
    Ok(outbox::table
        .filter(outbox::id.eq_any(ids))
        .filter(outbox::status.eq(status::QUEUED))
        .select(outbox::id)
        .load(conn)?)
}

/// Whether a message is still waiting to be sent (not dropped meanwhile).
pub fn is_queued(conn: &mut AnyConnection, id: i64) -> Result<bool, DbError> {
    let found: Option<String> = outbox::table
        .find(id)
        .select(outbox::status)
        .first(conn)
        .optional()?;
    Ok(found.as_deref() == Some(status::QUEUED))
}

/// Records deliveries and scrubs their bodies (a sent message's link must not outlive
/// it), in one statement for a whole batch.
pub fn mark_sent(conn: &mut AnyConnection, ids: &[i64]) -> Result<(), DbError> {
    if ids.is_empty() {
        return Ok(());
    }
    let now = super::now();
    diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set((
            outbox::status.eq(status::SENT),
            outbox::sent_at.eq(Some(now)),
            outbox::attempts.eq(outbox::attempts + 1),
            outbox::payload.eq(Vec::<u8>::new()),
            outbox::locked_until.eq(None::<NaiveDateTime>),
            outbox::last_error.eq(None::<String>),
        ))
        .execute(conn)?;
    Ok(())
}

/// Records a failed attempt: retried at `retry_at`, or given up (`None`). A message given
/// up on keeps its sealed body so that an admin can retry it; housekeeping scrubs it when
/// its link expires ([`expire_stale`]). A message dropped meanwhile stays dropped.
pub fn mark_attempt_failed(
    conn: &mut AnyConnection,
    id: i64,
    error: &str,
    retry_at: Option<NaiveDateTime>,
) -> Result<(), DbError> {
    let error: String = error.chars().take(500).collect();
    match retry_at {
        Some(at) => diesel::update(
            outbox::table
                .find(id)
                .filter(outbox::status.eq(status::QUEUED)),
        )
        .set((
            outbox::attempts.eq(outbox::attempts + 1),
            outbox::next_attempt_at.eq(at),
            outbox::locked_until.eq(None::<NaiveDateTime>),
            outbox::last_error.eq(Some(error)),
        ))
        .execute(conn)?,
        None => diesel::update(
            outbox::table
                .find(id)
                .filter(outbox::status.eq(status::QUEUED)),
        )
        .set((
            outbox::status.eq(status::FAILED),
            outbox::attempts.eq(outbox::attempts + 1),
            outbox::locked_until.eq(None::<NaiveDateTime>),
            outbox::last_error.eq(Some(error)),
        ))
        .execute(conn)?,
    };
    Ok(())
}

/// How long a failed message without a link keeps its body for an admin's retry.
pub const FAILED_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Gives up on queued messages whose link has expired, and scrubs the bodies of failed
/// messages that can no longer be retried (link expired, or failed long ago).
pub fn expire_stale(conn: &mut AnyConnection) -> Result<usize, DbError> {
    let now = super::now();
    let scrubbed = diesel::update(
        outbox::table
            .filter(outbox::status.eq(status::FAILED))
            .filter(outbox::payload.ne(Vec::<u8>::new()))
            .filter(
                outbox::expires_at.lt(now).or(outbox::expires_at
                    .is_null()
                    .and(outbox::created_at.lt(super::now_minus(FAILED_KEPT_FOR)))),
            ),
    )
    .set(outbox::payload.eq(Vec::<u8>::new()))
    .execute(conn)?;
    Ok(scrubbed
        + diesel::update(
            outbox::table
                .filter(outbox::status.eq(status::QUEUED))
                .filter(outbox::expires_at.lt(now)),
        )
        .set((
            outbox::status.eq(status::EXPIRED),
            outbox::payload.eq(Vec::<u8>::new()),
            outbox::locked_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)?)
}

/// Gives up on a user's reset emails that are still queued or failed, scrubbing their
/// bodies: called wherever the user's reset links are revoked, so that no dead link is
/// sent later (by the worker, or by an admin's retry).
pub fn drop_reset_mail(conn: &mut AnyConnection, user_id: i64) -> Result<usize, DbError> {
    Ok(diesel::update(
        outbox::table
            .filter(outbox::user_id.eq(user_id))
            .filter(outbox::kind.eq("reset"))
            .filter(outbox::status.eq_any([status::QUEUED, status::FAILED])),
    )
    .set((
        outbox::status.eq(status::EXPIRED),
        outbox::payload.eq(Vec::<u8>::new()),
        outbox::locked_until.eq(None::<NaiveDateTime>),
    ))
    .execute(conn)?)
}

/// An outbox row as the admin page lists it: never its body.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxSummary {
    pub id: i64,
    pub kind: String,
    pub recipient: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub sent_at: Option<NaiveDateTime>,
    pub expires_at: Option<NaiveDateTime>,
    pub user_id: Option<i64>,
}

/// A page of messages, newest first, optionally of one status.
pub fn page(
    conn: &mut AnyConnection,
    status: Option<&str>,
    keyset: Keyset<i64>,
    limit: usize,
) -> Result<Page<(OutboxSummary, bool), i64>, DbError> {
    keyset::read(
        keyset,
        limit,
        |(m, _): &(OutboxSummary, bool)| m.id,
        |keyset| {
            let mut query = outbox::table
                .select((
                    OutboxSummary::as_select(),
                    outbox::payload.ne(Vec::<u8>::new()),
                ))
                .limit(limit as i64 + 1)
                .into_boxed();
            if let Some(status) = status {
                query = query.filter(outbox::status.eq(status.to_owned()));
            }
            query = match keyset {
                Keyset::First => query.order(outbox::id.desc()),
                Keyset::Before(id) => query.filter(outbox::id.lt(id)).order(outbox::id.desc()),
                Keyset::After(id) => query.filter(outbox::id.gt(id)).order(outbox::id.asc()),
            };
            query.load(conn).map_err(DbError::from)
        },
    )
}

/// How many messages have this status.
pub fn count_status(conn: &mut AnyConnection, status: &str) -> Result<i64, DbError> {
    Ok(outbox::table
        .filter(outbox::status.eq(status))
        .count()
        .get_result(conn)?)
}

/// One message, for the admin's retry.
pub fn summary(conn: &mut AnyConnection, id: i64) -> Result<Option<OutboxSummary>, DbError> {
    Ok(outbox::table
        .find(id)
        .select(OutboxSummary::as_select())
        .first(conn)
        .optional()?)
}

/// Whether [`requeue_failed`] would take this message (its condition, for the page that
/// offers the button): failed, its body kept, its link not expired.
pub fn retryable(mail: &OutboxSummary, has_body: bool, now: NaiveDateTime) -> bool {
    mail.status == status::FAILED && has_body && mail.expires_at.is_none_or(|at| at > now)
}

/// Puts a failed message back in the queue with a fresh set of attempts, if it still has
/// its body and its link has not expired (keep [`retryable`] in step); returns whether it
/// did.
pub fn requeue_failed(conn: &mut AnyConnection, id: i64) -> Result<bool, DbError> {
    let now = super::now();
    let n = diesel::update(
        outbox::table
            .find(id)
            .filter(outbox::status.eq(status::FAILED))
            .filter(outbox::payload.ne(Vec::<u8>::new()))
            .filter(outbox::expires_at.is_null().or(outbox::expires_at.gt(now))),
    )
    .set((
        outbox::status.eq(status::QUEUED),
        outbox::attempts.eq(0),
        outbox::next_attempt_at.eq(now),
        outbox::locked_until.eq(None::<NaiveDateTime>),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Every row, newest first (for tests).
pub fn recent(conn: &mut AnyConnection, limit: i64) -> Result<Vec<OutboxRow>, DbError> {
    Ok(outbox::table
        .order(outbox::id.desc())
        .limit(limit)
        .select(OutboxRow::as_select())
        .load(conn)?)
}
