//! Queries on `events`: the audit trail.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{AnyConnection, DbError, schema::events};

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
