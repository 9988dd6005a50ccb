//! Queries on `users`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{AnyConnection, DbError, schema::users};

/// An account row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: NaiveDateTime,
    pub password_changed_at: NaiveDateTime,
    pub last_login_at: Option<NaiveDateTime>,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUser<'a> {
    email: &'a str,
    password_hash: &'a str,
    is_admin: bool,
    disabled: bool,
    created_at: NaiveDateTime,
    password_changed_at: NaiveDateTime,
}

/// Inserts an account; a taken address surfaces as a unique violation.
pub fn insert(
    conn: &mut AnyConnection,
    email: &str,
    password_hash: &str,
    is_admin: bool,
) -> Result<UserRow, DbError> {
    let now = super::now();
    diesel::insert_into(users::table)
        .values(NewUser {
            email,
            password_hash,
            is_admin,
            disabled: false,
            created_at: now,
            password_changed_at: now,
        })
        .execute(conn)?;
    find_by_email(conn, email)?.ok_or(DbError::Query(diesel::result::Error::NotFound))
}

/// The account with this (normalised) address.
pub fn find_by_email(conn: &mut AnyConnection, email: &str) -> Result<Option<UserRow>, DbError> {
    Ok(users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

/// The account with this id.
pub fn find(conn: &mut AnyConnection, id: i64) -> Result<Option<UserRow>, DbError> {
    Ok(users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

/// Replaces the password hash and records when.
pub fn set_password(conn: &mut AnyConnection, id: i64, hash: &str) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set((
            users::password_hash.eq(hash),
            users::password_changed_at.eq(super::now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Replaces the hash only if it is still `old`: used to upgrade parameters at sign-in
/// without overwriting a password changed meanwhile.
pub fn rehash(conn: &mut AnyConnection, id: i64, old: &str, new: &str) -> Result<(), DbError> {
    diesel::update(users::table.find(id).filter(users::password_hash.eq(old)))
        .set(users::password_hash.eq(new))
        .execute(conn)?;
    Ok(())
}

/// Stamps a successful sign-in.
pub fn touch_login(conn: &mut AnyConnection, id: i64) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set(users::last_login_at.eq(Some(super::now())))
        .execute(conn)?;
    Ok(())
}

/// Grants the admin role; returns whether the account exists.
pub fn promote(conn: &mut AnyConnection, email: &str) -> Result<bool, DbError> {
    let n = diesel::update(users::table.filter(users::email.eq(email)))
        .set(users::is_admin.eq(true))
        .execute(conn)?;
    Ok(n == 1)
}

/// The accounts with these addresses, locked until the transaction ends on Postgres (in id
/// order, so two workers never lock them crosswise), so that two workers
/// handling requests for one address apply the cooldown one after the other. (SQLite
/// needs no lock: its write transactions are already serialised.)
pub fn find_by_emails_locked(
    conn: &mut AnyConnection,
    emails: &[&str],
) -> Result<Vec<UserRow>, DbError> {
    let query = users::table
        .filter(users::email.eq_any(emails))
        .order(users::id.asc());
    match conn {
        // NO KEY UPDATE: workers still take turns on an account, but foreign-key checks
        // (a sign-in's new session row) are not held up by a worker's batch.
        AnyConnection::Postgresql(pg) => Ok(query
            .select(UserRow::as_select())
            .for_no_key_update()
            .load(pg)?),
        AnyConnection::Sqlite(_) => Ok(query.select(UserRow::as_select()).load(conn)?),
    }
}
