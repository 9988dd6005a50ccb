//! Queries on `users`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{
    AnyConnection, DbError,
    keyset::{self, Keyset, Page},
    schema::users,
};

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
    pub last_reset_at: Option<NaiveDateTime>,
    /// Bumped by every reset, password change and disable: a session is good only for the
    /// generation its password was checked against.
    pub credential_generation: i64,
}

/// An account as the admin pages list it: everything but the password hash, which no
/// page may show (it is not even read).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserSummary {
    pub id: i64,
    pub email: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: NaiveDateTime,
    pub last_login_at: Option<NaiveDateTime>,
    pub last_reset_at: Option<NaiveDateTime>,
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

/// How a password is being replaced.
#[derive(Debug, Clone, Copy)]
pub enum PasswordSet {
    /// Through a reset link: unconditional (the consumed token decided the race).
    Reset,
    /// By a signed-in user: only if the account is still at the generation the current
    /// password was checked against, so a change cannot undo a reset that won meanwhile.
    Change { generation: i64 },
}

/// Replaces the password hash, records when (and, for a reset link, that it was one) and
/// bumps the credential generation. Returns false when a change found the account at
/// another generation (nothing was written).
pub fn set_password(
    conn: &mut AnyConnection,
    id: i64,
    hash: &str,
    by: PasswordSet,
) -> Result<bool, DbError> {
    let now = super::now();
    let changed = (
        users::password_hash.eq(hash),
        users::password_changed_at.eq(now),
        users::credential_generation.eq(users::credential_generation + 1),
    );
    let n = match by {
        PasswordSet::Reset => diesel::update(users::table.find(id))
            .set((changed, users::last_reset_at.eq(Some(now))))
            .execute(conn)?,
        PasswordSet::Change { generation } => diesel::update(
            users::table
                .find(id)
                .filter(users::credential_generation.eq(generation)),
        )
        .set(changed)
        .execute(conn)?,
    };
    Ok(n == 1)
}

/// The account's credential generation, if a session may be written for it (it exists
/// and is enabled). On Postgres the row is share-locked until the transaction ends, so a
/// reset, change or disable in progress is waited for and seen, and none can begin
/// before the session row is in (where it will then end it).
pub fn session_generation(conn: &mut AnyConnection, id: i64) -> Result<Option<i64>, DbError> {
    let query = users::table
        .find(id)
        .filter(users::disabled.eq(false))
        .select(users::credential_generation);
    match conn {
        AnyConnection::Postgresql(pg) => Ok(query.for_share().first(pg).optional()?),
        AnyConnection::Sqlite(_) => Ok(query.first(conn).optional()?),
    }
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

/// Disables or enables an account; returns whether it changed (false when it was already
/// so, or does not exist).
pub fn set_disabled(conn: &mut AnyConnection, id: i64, disabled: bool) -> Result<bool, DbError> {
    let target = users::table.find(id).filter(users::disabled.ne(disabled));
    // Disabling moves the generation on, so a session written for the enabled account
    // (a sign-in in flight) does not come back to life when it is enabled again.
    let n = if disabled {
        diesel::update(target)
            .set((
                users::disabled.eq(true),
                users::credential_generation.eq(users::credential_generation + 1),
            ))
            .execute(conn)?
    } else {
        diesel::update(target)
            .set(users::disabled.eq(false))
            .execute(conn)?
    };
    Ok(n == 1)
}

/// The ids of the enabled admins, locked until the transaction ends on Postgres (in id
/// order), so that two admins disabling each other at once take turns and the second
/// sees the first's change. (SQLite's write transactions are serialised already.)
pub fn enabled_admins_locked(conn: &mut AnyConnection) -> Result<Vec<i64>, DbError> {
    let query = users::table
        .filter(users::is_admin.eq(true))
        .filter(users::disabled.eq(false))
        .order(users::id.asc())
        .select(users::id);
    match conn {
        // NO KEY UPDATE: two disables still take turns, but sign-ins (a session row's
        // foreign-key check) are not held up.
        AnyConnection::Postgresql(pg) => Ok(query.for_no_key_update().load(pg)?),
        AnyConnection::Sqlite(_) => Ok(query.load(conn)?),
    }
}

/// Locks an account's row until the transaction ends (Postgres; SQLite's write
/// transactions are serialised already). Transactions that change an account and its
/// reset tokens take the account first, so that two of them never wait for each other
/// crosswise.
pub fn lock(conn: &mut AnyConnection, id: i64) -> Result<(), DbError> {
    if let AnyConnection::Postgresql(pg) = conn {
        users::table
            .find(id)
            .select(users::id)
            .for_no_key_update()
            .load::<i64>(pg)?;
    }
    Ok(())
}

/// How many accounts there are.
pub fn count(conn: &mut AnyConnection) -> Result<i64, DbError> {
    Ok(users::table.count().get_result(conn)?)
}

/// One account for the admin pages.
pub fn summary(conn: &mut AnyConnection, id: i64) -> Result<Option<UserSummary>, DbError> {
    Ok(users::table
        .find(id)
        .select(UserSummary::as_select())
        .first(conn)
        .optional()?)
}

/// The addresses of these accounts (to name the admins in the audit log).
pub fn emails_of(conn: &mut AnyConnection, ids: &[i64]) -> Result<Vec<(i64, String)>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(users::table
        .filter(users::id.eq_any(ids))
        .select((users::id, users::email))
        .load(conn)?)
}

/// A `LIKE` pattern matching `fragment` anywhere, its wildcards taken literally (escaped
/// with `\`). Addresses are stored lower-cased, so the fragment is lower-cased too.
pub fn contains_pattern(fragment: &str) -> String {
    let mut pattern = String::with_capacity(fragment.len() + 2);
    pattern.push('%');
    for c in fragment.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A page of accounts, newest first, optionally only those whose address contains
/// `fragment`. Keyed on the id (the primary key): a page is a short walk down the key,
/// filtered as it goes.
pub fn page(
    conn: &mut AnyConnection,
    fragment: Option<&str>,
    keyset: Keyset<i64>,
    limit: usize,
) -> Result<Page<UserSummary, i64>, DbError> {
    let pattern = fragment.map(contains_pattern);
    keyset::read(
        keyset,
        limit,
        |u: &UserSummary| u.id,
        |keyset| {
            let mut query = users::table
                .select(UserSummary::as_select())
                .limit(limit as i64 + 1)
                .into_boxed();
            if let Some(pattern) = &pattern {
                query = query.filter(users::email.like(pattern.clone()).escape('\\'));
            }
            query = match keyset {
                Keyset::First => query.order(users::id.desc()),
                Keyset::Before(id) => query.filter(users::id.lt(id)).order(users::id.desc()),
                Keyset::After(id) => query.filter(users::id.gt(id)).order(users::id.asc()),
            };
            query.load(conn).map_err(DbError::from)
        },
    )
}

/// The ids of up to `limit` accounts whose address contains `fragment`.
pub fn ids_matching(
    conn: &mut AnyConnection,
    fragment: &str,
    limit: usize,
) -> Result<Vec<i64>, DbError> {
    Ok(users::table
        .filter(users::email.like(contains_pattern(fragment)).escape('\\'))
        .select(users::id)
        .limit(limit as i64)
        .load(conn)?)
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
