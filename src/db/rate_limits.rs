//! Queries on `rate_limits`: hit counters per client and limit group, shared by every
//! instance on the database.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{AnyConnection, DbError, schema::rate_limits};

/// Counts one hit in `bucket`'s window `window_no`; returns the hits in that window so
/// far (this one included) and in the window before it.
///
/// Usually one statement, `UPDATE … RETURNING` (the previous window's count was copied
/// into the row when it was made; hits still landing in the previous window after that,
/// in flight at the boundary or from an instance whose clock lags, are not weighed in:
/// a few hits of slack at a boundary, for one statement instead of two). The first hit of a window reads the previous count and
/// inserts the row; `ON CONFLICT` does not compile on diesel's `MultiConnection`, so when
/// another instance inserted it first, the unique violation sends us back to the update.
/// Every statement autocommits: no transaction holds a lock across round trips.
pub fn hit(
    conn: &mut AnyConnection,
    bucket: &str,
    window_no: i64,
    expires_at: NaiveDateTime,
) -> Result<(i64, i64), DbError> {
    if let Some(counts) = increment(conn, bucket, window_no)? {
        return Ok(counts);
    }
    let previous = rate_limits::table
        .find((bucket, window_no - 1))
        .select(rate_limits::hits)
        .first::<i64>(conn)
        .optional()?
        .unwrap_or(0);
    let inserted = diesel::insert_into(rate_limits::table)
        .values((
            rate_limits::bucket.eq(bucket),
            rate_limits::window_no.eq(window_no),
            rate_limits::hits.eq(1_i64),
            rate_limits::prev_hits.eq(previous),
            rate_limits::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map_err(DbError::from);
    match inserted {
        Ok(_) => Ok((1, previous)),
        Err(e) if e.is_unique_violation() => increment(conn, bucket, window_no)?
            .ok_or_else(|| DbError::Other("rate-limit row vanished".into())),
        Err(e) => Err(e),
    }
}

fn increment(
    conn: &mut AnyConnection,
    bucket: &str,
    window_no: i64,
) -> Result<Option<(i64, i64)>, DbError> {
    Ok(diesel::update(rate_limits::table.find((bucket, window_no)))
        .set(rate_limits::hits.eq(rate_limits::hits + 1))
        .returning((rate_limits::hits, rate_limits::prev_hits))
        .get_result::<(i64, i64)>(conn)
        .optional()?)
}

/// Deletes counters no limit can still read; returns how many.
pub fn purge_expired(conn: &mut AnyConnection) -> Result<usize, DbError> {
    Ok(
        diesel::delete(rate_limits::table.filter(rate_limits::expires_at.lt(super::now())))
            .execute(conn)?,
    )
}
