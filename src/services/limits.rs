//! Per-client rate limits (SPEC §9): so many requests per window for each group of
//! endpoints, counted in the database so every instance behind a load balancer sees the
//! same count.
//!
//! The limiter is a sliding-window counter: hits are counted in fixed windows, and the
//! previous window's count is weighed in by how much of it still overlaps the sliding
//! window, so a burst cannot double the limit by straddling a window boundary. Refused
//! requests count too: a client that keeps hammering stays refused.

use std::time::Duration;

use crate::{
    config::RateLimit,
    db::{self, rate_limits},
};

use super::{
    ClientInfo, ServiceError, Services,
    audit::{Event, EventKind},
};

/// A group of endpoints sharing one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitGroup {
    /// `POST /forgot` and `POST /auth/forgot`.
    Forgot,
    /// `POST /login`.
    Login,
    /// `POST /reset` and `POST /auth/reset`.
    Reset,
    /// Openings of dead reset links, counted against the reset limit's numbers. Never
    /// refused (a cross-site page could then spend a victim's budget with hidden images);
    /// past the limit they are only no longer audited, so nobody can fill the trail.
    DeadLinks,
    /// `POST /signup`.
    SignUp,
    /// Current-password checks: `POST /account/password`.
    Account,
    /// Openings of live reset links, counted against the reset limit's numbers but apart
    /// from dead ones. Never refused either; past the limit they are not audited.
    LiveLinks,
}

impl LimitGroup {
    fn name(self) -> &'static str {
        match self {
            Self::Forgot => "forgot",
            Self::Login => "login",
            Self::Reset => "reset",
            Self::SignUp => "signup",
            Self::Account => "account",
            Self::DeadLinks => "dead-link",
            Self::LiveLinks => "live-link",
        }
    }
}

/// What the limiter says about one more hit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Allowed,
    Refused {
        /// When the client may try again (assuming it stops until then).
        retry_after: Duration,
        /// This is the first refusal since the client was last allowed: the one worth an
        /// audit event (a flood would otherwise write one event per request).
        first: bool,
    },
}

/// Judges a hit, given the hits in the current window (this one included), those of the
/// previous window, and how far into the current window we are (0.0–1.0).
pub fn judge(limit: RateLimit, current: i64, previous: i64, elapsed: f64) -> Verdict {
    let (max, cur, prev) = (f64::from(limit.max), current as f64, previous as f64);
    let weight = (1.0 - elapsed).clamp(0.0, 1.0);
    if prev * weight + cur <= max {
        return Verdict::Allowed;
    }
    let first = prev * weight + cur - 1.0 <= max;
    let window = limit.window.as_secs_f64();
    let left_in_window = window * (1.0 - elapsed);
    // Within this window the previous window's weight keeps falling: one more hit fits
    // once prev × weight + cur + 1 ≤ max.
    let wait = if prev > 0.0 && cur + 1.0 < max {
        let weight_needed = (max - cur - 1.0) / prev;
        window * (weight - weight_needed)
    } else {
        // Next window: this window's hits become the weighed-in previous ones.
        let fraction = if cur > 0.0 {
            (1.0 - (max - 1.0) / cur).clamp(0.0, 1.0)
        } else {
            0.0
        };
        left_in_window + window * fraction
    };
    Verdict::Refused {
        retry_after: Duration::from_secs(wait.ceil().max(1.0) as u64),
        first,
    }
}

/// A hit, ready to be counted: everything but the database work, so that a caller can
/// count it in the same blocking hop as its own statements.
pub struct PendingHit {
    limit: RateLimit,
    bucket: String,
    window_no: i64,
    elapsed: f64,
    expires_at: chrono::NaiveDateTime,
}

impl PendingHit {
    /// Counts the hit (blocking) and judges it.
    pub fn count(&self, conn: &mut db::AnyConnection) -> Result<Verdict, db::DbError> {
        let (current, previous) =
            rate_limits::hit(conn, &self.bucket, self.window_no, self.expires_at)?;
        Ok(judge(self.limit, current, previous, self.elapsed))
    }
}

impl Services {
    /// Counts one request of `client` against `group`'s limit; `ServiceError::Throttled`
    /// when the client is over it. The same statements run for every request of the group,
    /// whatever it asks for, so the limiter adds no timing tell.
    pub async fn throttle(
        &self,
        group: LimitGroup,
        client: &ClientInfo,
    ) -> Result<(), ServiceError> {
        match self.count_hit(group, client).await? {
            Verdict::Allowed => Ok(()),
            refused => Err(self.refusal(group, client, refused).await),
        }
    }

    /// The error for a refused hit, after logging it and auditing the first refusal of a
    /// flood (the flood after it would otherwise write one event per request).
    pub async fn refusal(
        &self,
        group: LimitGroup,
        client: &ClientInfo,
        verdict: Verdict,
    ) -> ServiceError {
        let Verdict::Refused { retry_after, first } = verdict else {
            return ServiceError::Internal("an allowed hit was refused".into());
        };
        tracing::info!(group = group.name(), "client throttled");
        if first {
            let event = Event::new(EventKind::Throttled)
                .detail(format!(
                    "too many {} requests from this address",
                    group.name()
                ))
                .client(client);
            if let Err(e) = self.record(event).await {
                return e;
            }
        }
        ServiceError::Throttled { retry_after }
    }

    /// Counts one hit of `client` against `group`'s limit and says whether it is still
    /// within it, refusing nothing: for work worth bounding but not worth refusing.
    pub async fn within_budget(
        &self,
        group: LimitGroup,
        client: &ClientInfo,
    ) -> Result<bool, ServiceError> {
        Ok(self.count_hit(group, client).await? == Verdict::Allowed)
    }

    async fn count_hit(
        &self,
        group: LimitGroup,
        client: &ClientInfo,
    ) -> Result<Verdict, ServiceError> {
        match self.pending_hit(group, client) {
            None => Ok(Verdict::Allowed),
            Some(hit) => Ok(db::run(&self.pool, move |c| hit.count(c)).await?),
        }
    }

    /// The hit a request of `client` makes on `group`'s limit; `None` when the group's
    /// limit is off.
    pub fn pending_hit(&self, group: LimitGroup, client: &ClientInfo) -> Option<PendingHit> {
        let limits = &self.settings.rate_limits;
        let limit = match group {
            LimitGroup::Forgot => limits.forgot,
            LimitGroup::Login => limits.login,
            LimitGroup::Reset | LimitGroup::DeadLinks | LimitGroup::LiveLinks => limits.reset,
            LimitGroup::SignUp => limits.signup,
            LimitGroup::Account => limits.account,
        }?;
        let window_us = i64::try_from(limit.window.as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        let now_us = db::now().and_utc().timestamp_micros();
        Some(PendingHit {
            limit,
            bucket: format!("{}:{}", group.name(), client_bucket(&client.ip)),
            window_no: now_us.div_euclid(window_us),
            elapsed: now_us.rem_euclid(window_us) as f64 / window_us as f64,
            // The counter is read during its own window and the next one, then purged.
            expires_at: db::now_plus(limit.window.saturating_mul(2)),
        })
    }
}

/// Who a limit counts: one IPv4 address, or one IPv6 /64 (one household or server gets a
/// whole /64, so counting single IPv6 addresses would be no limit at all).
pub(crate) fn client_bucket(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{prefix}/64")
        }
        _ => ip.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        max: 20,
        window: Duration::from_secs(600),
    };

    fn refused_after(v: Verdict) -> Option<u64> {
        match v {
            Verdict::Allowed => None,
            Verdict::Refused { retry_after, .. } => Some(retry_after.as_secs()),
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_ipv4_by_address() {
        assert_eq!(client_bucket("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            client_bucket("2001:db8:1:2:bbbb::9"),
            client_bucket("2001:db8:1:2:aaaa::1")
        );
        assert_eq!(client_bucket("198.51.100.7"), "198.51.100.7");
        assert_eq!(client_bucket("unknown"), "unknown");
    }

    #[test]
    fn a_fresh_client_gets_exactly_the_limit() {
        for hit in 1..=20 {
            assert_eq!(judge(LIMIT, hit, 0, 0.5), Verdict::Allowed, "hit {hit}");
        }
        assert!(matches!(
            judge(LIMIT, 21, 0, 0.5),
            Verdict::Refused { first: true, .. }
        ));
        assert!(matches!(
            judge(LIMIT, 22, 0, 0.5),
            Verdict::Refused { first: false, .. }
        ));
    }

    #[test]
    fn the_previous_window_counts_by_its_overlap() {
        // 20 hits last window, 10% into this one: 18 still count, so 2 more fit.
        assert_eq!(judge(LIMIT, 2, 20, 0.1), Verdict::Allowed);
        assert_eq!(refused_after(judge(LIMIT, 3, 20, 0.1)), Some(60));
        // Half-way through, half of them count.
        assert_eq!(judge(LIMIT, 10, 20, 0.5), Verdict::Allowed);
    }

    #[test]
    fn retry_after_points_at_the_moment_one_more_hit_fits() {
        // A burst of 21 in this window, at its start: wait for the window to end, then
        // for enough of the burst's weight to fade ((1 - 19/21) of a window).
        let wait = refused_after(judge(LIMIT, 21, 0, 0.0)).unwrap();
        assert_eq!(wait, 600 + (600.0 * (1.0 - 19.0 / 21.0_f64)).ceil() as u64);
        // At the very end of a window, only the fading of the burst is left to wait for.
        assert_eq!(refused_after(judge(LIMIT, 21, 0, 0.999_999)), Some(58));
        // Never beyond two windows, however hard the client hammers.
        assert!(refused_after(judge(LIMIT, 1000, 1000, 0.0)).unwrap() <= 1200);
    }
}
