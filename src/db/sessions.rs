//! Queries on `sessions`: server-side session records, stored under a keyed hash of the
//! cookie's session id so that a copy of the table cannot be used to sign in.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{
    AnyConnection, DbError,
    schema::{sessions, users},
};

/// A session row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct SessionRow {
    pub id: i64,
    pub key_hash: Vec<u8>,
    pub user_id: Option<i64>,
    pub public_id: Option<String>,
    pub state: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    /// The account's credential generation this sign-in was made for.
    pub credential_generation: Option<i64>,
}

/// What a session row holds besides its key (and, for a sign-in, its generation, which
/// only the account's own changes move).
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = sessions, treat_none_as_null = true)]
pub struct SessionData {
    pub user_id: Option<i64>,
    pub public_id: Option<String>,
    pub state: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = sessions)]
struct NewSession<'a> {
    key_hash: &'a [u8],
    user_id: Option<i64>,
    public_id: Option<&'a str>,
    state: &'a str,
    client_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    credential_generation: Option<i64>,
}

/// The live session stored under one of these key hashes. A signed-in session is live
/// only while its account is enabled and still at the generation the session was made
/// for: a reset, password change or disable ends it even if its row escaped the delete.
pub fn find_live(
    conn: &mut AnyConnection,
    key_hashes: &[Vec<u8>],
) -> Result<Option<SessionRow>, DbError> {
    Ok(sessions::table
        .left_join(users::table)
        .filter(sessions::key_hash.eq_any(key_hashes))
        .filter(sessions::expires_at.gt(super::now()))
        .filter(
            sessions::user_id.is_null().or(users::credential_generation
                .nullable()
                .eq(sessions::credential_generation)
                .and(users::disabled.eq(false))),
        )
        .select(SessionRow::as_select())
        .first(conn)
        .optional()?)
}

/// Stores a new session until `expires_at`, which nothing moves later: a session's
/// lifetime is absolute from sign-in. `generation`: the account's, for a sign-in.
pub fn insert(
    conn: &mut AnyConnection,
    key_hash: &[u8],
    data: &SessionData,
    expires_at: NaiveDateTime,
    generation: Option<i64>,
) -> Result<(), DbError> {
    diesel::insert_into(sessions::table)
        .values(NewSession {
            key_hash,
            user_id: data.user_id,
            public_id: data.public_id.as_deref(),
            state: &data.state,
            client_ip: data.client_ip.as_deref(),
            user_agent: data.user_agent.as_deref(),
            created_at: super::now(),
            expires_at,
            credential_generation: generation,
        })
        .execute(conn)?;
    Ok(())
}

/// Replaces a session's data (never its expiry nor its generation); returns false when the row is gone (it was ended meanwhile).
pub fn update(
    conn: &mut AnyConnection,
    key_hash: &[u8],
    data: &SessionData,
) -> Result<bool, DbError> {
    let n = diesel::update(sessions::table.filter(sessions::key_hash.eq(key_hash)))
        .set(data)
        .execute(conn)?;
    Ok(n == 1)
}

/// Moves the one session a password change keeps to the account's new generation.
pub fn set_generation(
    conn: &mut AnyConnection,
    user_id: i64,
    public_id: &str,
    generation: i64,
) -> Result<(), DbError> {
    diesel::update(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::public_id.eq(public_id)),
    )
    .set(sessions::credential_generation.eq(Some(generation)))
    .execute(conn)?;
    Ok(())
}

/// Moves a session to a new key hash (after a key rotation).
pub fn rekey(conn: &mut AnyConnection, old: &[u8], new: &[u8]) -> Result<(), DbError> {
    diesel::update(sessions::table.filter(sessions::key_hash.eq(old)))
        .set(sessions::key_hash.eq(new))
        .execute(conn)?;
    Ok(())
}

/// Ends one session by key.
pub fn delete(conn: &mut AnyConnection, key_hash: &[u8]) -> Result<(), DbError> {
    diesel::delete(sessions::table.filter(sessions::key_hash.eq(key_hash))).execute(conn)?;
    Ok(())
}

/// A user's live signed-in sessions, newest first.
pub fn for_user(conn: &mut AnyConnection, user_id: i64) -> Result<Vec<SessionRow>, DbError> {
    Ok(sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::expires_at.gt(super::now()))
        .order(sessions::created_at.desc())
        .select(SessionRow::as_select())
        .load(conn)?)
}

/// Ends every session of a user except the one with `keep` as public id.
pub fn delete_for_user_except(
    conn: &mut AnyConnection,
    user_id: i64,
    keep: Option<&str>,
) -> Result<usize, DbError> {
    let n = match keep {
        Some(keep) => diesel::delete(
            sessions::table
                .filter(sessions::user_id.eq(user_id))
                .filter(sessions::public_id.ne(keep)),
        )
        .execute(conn)?,
        None => {
            diesel::delete(sessions::table.filter(sessions::user_id.eq(user_id))).execute(conn)?
        }
    };
    Ok(n)
}

/// Drops expired sessions.
pub fn purge_expired(conn: &mut AnyConnection) -> Result<usize, DbError> {
    Ok(
        diesel::delete(sessions::table.filter(sessions::expires_at.lt(super::now())))
            .execute(conn)?,
    )
}
