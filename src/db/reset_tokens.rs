//! Queries on `reset_tokens`. Only keyed hashes are stored, never the tokens.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{
    AnyConnection, DbError,
    schema::{reset_tokens, users},
    users::UserRow,
};

/// A token row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = reset_tokens)]
pub struct ResetTokenRow {
    pub id: i64,
    pub user_id: i64,
    pub token_hash: Vec<u8>,
    pub sent_to: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    /// How often the link was opened while live.
    pub openings: i64,
}

#[derive(Insertable)]
#[diesel(table_name = reset_tokens)]
struct NewResetToken<'a> {
    user_id: i64,
    token_hash: &'a [u8],
    sent_to: &'a str,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
}

/// Stores a token's hash.
pub fn insert(
    conn: &mut AnyConnection,
    user_id: i64,
    token_hash: &[u8],
    sent_to: &str,
    expires_at: NaiveDateTime,
) -> Result<(), DbError> {
    diesel::insert_into(reset_tokens::table)
        .values(NewResetToken {
            user_id,
            token_hash,
            sent_to,
            created_at: super::now(),
            expires_at,
        })
        .execute(conn)?;
    Ok(())
}

/// The token stored under one of these hashes, used or not, expired or not (the caller
/// says why a dead link is dead), with its account: one query, as a token cannot outlive
/// its account (`ON DELETE CASCADE`).
pub fn find_with_user(
    conn: &mut AnyConnection,
    token_hashes: &[Vec<u8>],
) -> Result<Option<(ResetTokenRow, UserRow)>, DbError> {
    Ok(reset_tokens::table
        .inner_join(users::table)
        .filter(reset_tokens::token_hash.eq_any(token_hashes))
        .select((ResetTokenRow::as_select(), UserRow::as_select()))
        .first(conn)
        .optional()?)
}

/// Counts one opening of a live link; returns how many there have been, this one
/// included (one statement, so concurrent openings each get their own number).
pub fn count_opening(conn: &mut AnyConnection, id: i64) -> Result<i64, DbError> {
    Ok(diesel::update(reset_tokens::table.find(id))
        .set(reset_tokens::openings.eq(reset_tokens::openings + 1))
        .returning(reset_tokens::openings)
        .get_result(conn)?)
}

/// Marks the token used if it is still live and its account is enabled and still at the
/// address the link was sent to. Exactly one of any number of concurrent callers gets
/// `true`: every condition and the write are one statement.
pub fn consume(conn: &mut AnyConnection, token_hash: &[u8]) -> Result<bool, DbError> {
    let now = super::now();
    let account_still_matches = diesel::dsl::exists(
        users::table
            .filter(users::id.eq(reset_tokens::user_id))
            .filter(users::email.eq(reset_tokens::sent_to))
            .filter(users::disabled.eq(false)),
    );
    let n = diesel::update(
        reset_tokens::table
            .filter(reset_tokens::token_hash.eq(token_hash))
            .filter(reset_tokens::used_at.is_null())
            .filter(reset_tokens::expires_at.gt(now))
            .filter(account_still_matches),
    )
    .set(reset_tokens::used_at.eq(Some(now)))
    .execute(conn)?;
    Ok(n == 1)
}

/// Kills every outstanding token of a user (after any password change). Rows are kept,
/// marked used, so the cooldown and the daily cap still count them.
pub fn revoke_for_user(conn: &mut AnyConnection, user_id: i64) -> Result<usize, DbError> {
    Ok(diesel::update(
        reset_tokens::table
            .filter(reset_tokens::user_id.eq(user_id))
            .filter(reset_tokens::used_at.is_null()),
    )
    .set(reset_tokens::used_at.eq(Some(super::now())))
    .execute(conn)?)
}

/// When tokens were issued to these users since `since`, as `(user_id, created_at)`:
/// the inputs of the cooldown and the daily cap.
pub fn issued_since(
    conn: &mut AnyConnection,
    user_ids: &[i64],
    since: NaiveDateTime,
) -> Result<Vec<(i64, NaiveDateTime)>, DbError> {
    Ok(reset_tokens::table
        .filter(reset_tokens::user_id.eq_any(user_ids))
        .filter(reset_tokens::created_at.gt(since))
        .select((reset_tokens::user_id, reset_tokens::created_at))
        .load(conn)?)
}

/// Drops rows that expired more than a day ago (used ones too: by then they no longer
/// count towards the daily cap).
pub fn purge_dead(conn: &mut AnyConnection) -> Result<usize, DbError> {
    let cutoff = super::now_minus(std::time::Duration::from_secs(24 * 3600));
    Ok(
        diesel::delete(reset_tokens::table.filter(reset_tokens::expires_at.lt(cutoff)))
            .execute(conn)?,
    )
}
