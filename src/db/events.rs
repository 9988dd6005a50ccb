//! Queries on `events`: the audit trail.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{
    AnyConnection, DbError,
    keyset::{self, Keyset, Page},
    schema::events,
};

/// An audit event as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct EventRow {
    pub id: i64,
    pub kind: String,
    pub user_id: Option<i64>,
    pub actor_id: Option<i64>,
    pub email: Option<String>,
    pub detail: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: NaiveDateTime,
}

/// A new event.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = events)]
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub user_id: Option<i64>,
    pub actor_id: Option<i64>,
    pub email: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub client_ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub created_at: NaiveDateTime,
}

/// Appends an event.
pub fn insert(conn: &mut AnyConnection, event: &NewEvent<'_>) -> Result<(), DbError> {
    diesel::insert_into(events::table)
        .values(event)
        .execute(conn)?;
    Ok(())
}

/// Appends many events: on Postgres in one statement per hundred (the worker's batches
/// record two or three events per queued request, and a round trip each would be most of
/// a batch's cost); on SQLite, in process, one by one costs no round trips.
pub fn insert_all(conn: &mut AnyConnection, events: &[NewEvent<'_>]) -> Result<(), DbError> {
    match conn {
        AnyConnection::Postgresql(pg) => {
            for chunk in events.chunks(100) {
                diesel::insert_into(events::table)
                    .values(chunk)
                    .execute(pg)?;
            }
        }
        AnyConnection::Sqlite(_) => {
            for event in events {
                insert(conn, event)?;
            }
        }
    }
    Ok(())
}

/// The newest events, newest first; only those of one user when `user_id` is given.
pub fn recent(
    conn: &mut AnyConnection,
    user_id: Option<i64>,
    limit: i64,
) -> Result<Vec<EventRow>, DbError> {
    let mut query = events::table
        .order(events::id.desc())
        .limit(limit)
        .select(EventRow::as_select())
        .into_boxed();
    if let Some(id) = user_id {
        query = query.filter(events::user_id.eq(id));
    }
    Ok(query.load(conn)?)
}

/// Where an event sits in the newest-first log: its time, then its id among equal times.
pub type EventKey = (NaiveDateTime, i64);

/// Which events an admin asked to see; every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kind: Option<String>,
    /// Only events about these accounts.
    pub user_ids: Option<Vec<i64>>,
    /// Only events whose address contains this fragment (a scan: used only when the
    /// fragment is too common to list the accounts it matches).
    pub email_fragment: Option<String>,
    pub client_ip: Option<String>,
    /// From this time, inclusive.
    pub from: Option<NaiveDateTime>,
    /// Until this time, exclusive.
    pub until: Option<NaiveDateTime>,
}

/// A page of events, newest first. Each filter has an index ending in (created_at, id), so
/// a page is one index range walked from the key.
pub fn page(
    conn: &mut AnyConnection,
    filter: &EventFilter,
    keyset: Keyset<EventKey>,
    limit: usize,
) -> Result<Page<EventRow, EventKey>, DbError> {
    let pattern = filter
        .email_fragment
        .as_deref()
        .map(super::users::contains_pattern);
    keyset::read(
        keyset,
        limit,
        |e: &EventRow| (e.created_at, e.id),
        |keyset| {
            let mut query = events::table
                .select(EventRow::as_select())
                .limit(limit as i64 + 1)
                .into_boxed();
            if let Some(kind) = &filter.kind {
                query = query.filter(events::kind.eq(kind.clone()));
            }
            if let Some(ids) = &filter.user_ids {
                query = query.filter(events::user_id.eq_any(ids.clone()));
            }
            if let Some(pattern) = &pattern {
                query = query.filter(events::email.like(pattern.clone()).escape('\\'));
            }
            if let Some(ip) = &filter.client_ip {
                query = query.filter(events::client_ip.eq(ip.clone()));
            }
            if let Some(from) = filter.from {
                query = query.filter(events::created_at.ge(from));
            }
            if let Some(until) = filter.until {
                query = query.filter(events::created_at.lt(until));
            }
            // `(created_at, id) < (t, i)`, written so that `created_at <= t` bounds the index
            // range.
            query = match keyset {
                Keyset::First => query.order((events::created_at.desc(), events::id.desc())),
                Keyset::Before((at, id)) => query
                    .filter(events::created_at.le(at))
                    .filter(events::created_at.lt(at).or(events::id.lt(id)))
                    .order((events::created_at.desc(), events::id.desc())),
                Keyset::After((at, id)) => query
                    .filter(events::created_at.ge(at))
                    .filter(events::created_at.gt(at).or(events::id.gt(id)))
                    .order((events::created_at.asc(), events::id.asc())),
            };
            query.load(conn).map_err(DbError::from)
        },
    )
}

/// How many events of `kind` happened since `since` (an index range count).
pub fn count_since(
    conn: &mut AnyConnection,
    kind: &str,
    since: NaiveDateTime,
) -> Result<i64, DbError> {
    Ok(events::table
        .filter(events::kind.eq(kind))
        .filter(events::created_at.ge(since))
        .count()
        .get_result(conn)?)
}
