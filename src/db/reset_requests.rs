//! Queries on `reset_requests`: "forgot password" requests waiting for the worker.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{AnyConnection, DbError, schema::reset_requests};

/// A queued request.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = reset_requests)]
pub struct ResetRequestRow {
    pub id: i64,
    pub email: String,
    pub client_ip: String,
    pub user_agent: String,
    pub created_at: NaiveDateTime,
    /// The admin who asked, when one did.
    pub actor_id: Option<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = reset_requests)]
struct NewResetRequest<'a> {
    email: &'a str,
    client_ip: &'a str,
    user_agent: &'a str,
    created_at: NaiveDateTime,
    actor_id: Option<i64>,
}

/// Queues a request: the only write of a forgot request, whatever the address.
pub fn insert(
    conn: &mut AnyConnection,
    email: &str,
    client_ip: &str,
    user_agent: &str,
    actor_id: Option<i64>,
) -> Result<(), DbError> {
    diesel::insert_into(reset_requests::table)
        .values(NewResetRequest {
            email,
            client_ip,
            user_agent,
            created_at: super::now(),
            actor_id,
        })
        .execute(conn)?;
    Ok(())
}

/// The next batch: up to `limit` queued requests, half of them the newest and half the
/// oldest (all of them when fewer are queued), oldest first.
///
/// Oldest-first alone puts a person who asks right now behind every request of a flood
/// (thousands, most of them refused by the cooldown in the end); newest-first alone could
/// leave an old request waiting for as long as a flood lasts. Taking both ends, a request
/// is handled within a batch or two of its arrival while the backlog still drains at half
/// speed from the other end (SPEC §12; "adaptive LIFO" in the queueing literature). The
/// outbox is claimed the same way (`outbox::claim_due`).
pub fn next_batch(conn: &mut AnyConnection, limit: i64) -> Result<Vec<ResetRequestRow>, DbError> {
    let newest: Vec<ResetRequestRow> = reset_requests::table
        .order(reset_requests::id.desc())
        .limit(limit / 2)
        .select(ResetRequestRow::as_select())
        .load(conn)?;
    let oldest: Vec<ResetRequestRow> = reset_requests::table
        .order(reset_requests::id.asc())
        .limit(limit)
        .select(ResetRequestRow::as_select())
        .load(conn)?;
    let mut batch = super::both_ends(newest, oldest, limit, |r| r.id);
    batch.sort_by_key(|r| r.id);
    Ok(batch)
}

/// Removes requests; returns the ids this caller removed. Called first inside the worker's
/// transaction, it is the claim: of several instances exactly one deletes each row. On
/// Postgres the rows are locked first with `SKIP LOCKED`, so an instance never waits for
/// another's batch (nor deadlocks with it): it takes what is free and moves on.
pub fn take(conn: &mut AnyConnection, ids: &[i64]) -> Result<Vec<i64>, DbError> {
    let ids: Vec<i64> = match conn {
        AnyConnection::Postgresql(pg) => reset_requests::table
            .filter(reset_requests::id.eq_any(ids))
            .order(reset_requests::id.asc())
            .select(reset_requests::id)
            .for_update()
            .skip_locked()
            .load(pg)?,
        AnyConnection::Sqlite(_) => ids.to_vec(),
    };
    Ok(
        diesel::delete(reset_requests::table.filter(reset_requests::id.eq_any(&ids)))
            .returning(reset_requests::id)
            .get_results(conn)?,
    )
}
