//! `/admin` (the dashboard) and `/admin/events` (the audit log with its filters).

use std::net::IpAddr;

use actix_web::{
    HttpResponse,
    http::StatusCode,
    web::{Data, Query},
};
use askama::Template;
use chrono::{DateTime, Datelike, NaiveDate};
use serde::Deserialize;

use crate::{
    db::{events::EventKey, keyset::Keyset},
    error::PageError,
    services::{
        admin::{Dashboard, EventQuery, Window},
        audit::EventKind,
    },
};

use super::{
    super::{
        AppState,
        csrf::Csrf,
        gate::Admin,
        render::{Layout, page},
    },
    EventView, admin_layout, event_views, link,
};

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
struct DashboardPage {
    l: Layout,
    users: i64,
    requested: Window,
    completed: Window,
    refused: Window,
    mail_queued: i64,
    mail_sent: i64,
    mail_failed: i64,
    events: Vec<EventView>,
}

/// `GET /admin`
pub async fn dashboard(
    state: Data<AppState>,
    csrf: Csrf,
    Admin { admin }: Admin,
) -> Result<HttpResponse, PageError> {
    let Dashboard {
        users,
        requested,
        completed,
        refused,
        mail_queued,
        mail_sent,
        mail_failed,
        latest,
    } = state.services.dashboard().await?;
    page(
        StatusCode::OK,
        &DashboardPage {
            l: admin_layout(csrf.token(), &admin),
            users,
            requested,
            completed,
            refused,
            mail_queued,
            mail_sent,
            mail_failed,
            events: event_views(latest),
        },
    )
}

/// Query of `GET /admin/events`: the filters as typed, and the page key.
#[derive(Deserialize, Default)]
pub struct EventsQuery {
    kind: Option<String>,
    email: Option<String>,
    ip: Option<String>,
    from: Option<String>,
    to: Option<String>,
    user: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

/// What the filter form shows: the values as typed, and what was wrong with them.
#[derive(Default)]
pub struct FilterForm {
    pub kind: String,
    pub email: String,
    pub ip: String,
    pub from: String,
    pub to: String,
    pub user: String,
    pub kind_error: Option<String>,
    pub email_error: Option<String>,
    pub ip_error: Option<String>,
    pub from_error: Option<String>,
    pub to_error: Option<String>,
    pub user_error: Option<String>,
}

impl FilterForm {
    fn has_errors(&self) -> bool {
        [
            &self.kind_error,
            &self.email_error,
            &self.ip_error,
            &self.from_error,
            &self.to_error,
            &self.user_error,
        ]
        .iter()
        .any(|e| e.is_some())
    }

    /// The filters as query pairs, for the pagination links.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("kind", self.kind.clone()),
            ("email", self.email.clone()),
            ("ip", self.ip.clone()),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("user", self.user.clone()),
        ]
    }
}

#[derive(Template)]
#[template(path = "admin/events.html")]
struct EventsPage {
    l: Layout,
    f: FilterForm,
    kinds: Vec<&'static str>,
    events: Vec<EventView>,
    older: Option<String>,
    newer: Option<String>,
}

fn trimmed(v: &Option<String>) -> String {
    v.as_deref().unwrap_or_default().trim().to_owned()
}

/// Years a date or page key may name: the databases' ranges differ beyond these (Postgres
/// refuses years before 4713 BC; SQLite compares timestamps as text, where `+10000` sorts
/// before `2026`).
fn plausible(at: NaiveDate) -> bool {
    (1970..=9999).contains(&at.year())
}

fn parse_date(value: &str, error: &mut Option<String>) -> Option<NaiveDate> {
    if value.is_empty() {
        return None;
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|d| plausible(*d));
    if date.is_none() {
        *error = Some("Give a date as YYYY-MM-DD.".to_owned());
    }
    date
}

/// Parses the filters; problems are written into the form, beside their field.
fn parse_filters(query: &EventsQuery) -> (FilterForm, EventQuery) {
    let mut f = FilterForm {
        kind: trimmed(&query.kind),
        email: trimmed(&query.email).to_lowercase(),
        ip: trimmed(&query.ip),
        from: trimmed(&query.from),
        to: trimmed(&query.to),
        user: trimmed(&query.user),
        ..FilterForm::default()
    };
    let mut parsed = EventQuery::default();
    if !f.kind.is_empty() {
        parsed.kind = EventKind::parse(&f.kind);
        if parsed.kind.is_none() {
            f.kind_error = Some("Pick a kind from the list.".to_owned());
        }
    }
    if f.email.chars().count() > 254 {
        f.email_error = Some("At most 254 characters.".to_owned());
    } else if f.email.chars().any(char::is_control) {
        f.email_error = Some("An address has no control characters.".to_owned());
    } else if !f.email.is_empty() {
        parsed.email = Some(f.email.clone());
    }
    if !f.ip.is_empty() {
        match f.ip.parse::<IpAddr>() {
            // Stored in canonical form (an IPv4-mapped address as plain IPv4).
            Ok(ip) => parsed.ip = Some(ip.to_canonical().to_string()),
            Err(_) => {
                f.ip_error = Some("Give one IP address, like 192.0.2.1 or 2001:db8::1.".into())
            }
        }
    }
    parsed.from = parse_date(&f.from, &mut f.from_error);
    parsed.to = parse_date(&f.to, &mut f.to_error);
    if let (Some(from), Some(to)) = (parsed.from, parsed.to)
        && to < from
    {
        f.to_error = Some("The last day comes before the first.".to_owned());
    }
    if !f.user.is_empty() {
        match f.user.parse::<i64>() {
            Ok(id) => parsed.user = Some(id),
            Err(_) => f.user_error = Some("An account id is a number.".to_owned()),
        }
    }
    (f, parsed)
}

/// Page keys are `<microseconds since the epoch>.<id>`: the last row's place in the log.
fn parse_key(raw: &str) -> Result<EventKey, PageError> {
    let bad = || PageError::BadRequest("This page link is not valid.".into());
    let (micros, id) = raw.split_once('.').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let id: i64 = id.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros)
        .map(|at| at.naive_utc())
        .filter(|at| plausible(at.date()))
        .ok_or_else(bad)?;
    Ok((at, id))
}

fn format_key((at, id): EventKey) -> String {
    format!("{}.{id}", at.and_utc().timestamp_micros())
}

fn event_keyset(query: &EventsQuery) -> Result<Keyset<EventKey>, PageError> {
    let present = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(match (present(&query.before), present(&query.after)) {
        (Some(key), _) => Keyset::Before(parse_key(&key)?),
        (None, Some(key)) => Keyset::After(parse_key(&key)?),
        (None, None) => Keyset::First,
    })
}

/// `GET /admin/events`
pub async fn list(
    state: Data<AppState>,
    csrf: Csrf,
    query: Query<EventsQuery>,
    Admin { admin }: Admin,
) -> Result<HttpResponse, PageError> {
    let keyset = event_keyset(&query)?;
    let (f, parsed) = parse_filters(&query);
    let kinds = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    let l = admin_layout(csrf.token(), &admin);
    if f.has_errors() {
        let body = EventsPage {
            l,
            f,
            kinds,
            events: Vec::new(),
            older: None,
            newer: None,
        };
        return page(StatusCode::UNPROCESSABLE_ENTITY, &body);
    }
    let found = state.services.admin_events(parsed, keyset).await?;
    let to = |key: &str, at: EventKey| {
        let mut pairs = f.pairs();
        pairs.push((key, format_key(at)));
        link("/admin/events", &pairs)
    };
    let older = found.older.map(|k| to("before", k));
    let newer = found.newer.map(|k| to("after", k));
    page(
        StatusCode::OK,
        &EventsPage {
            l,
            f,
            kinds,
            events: event_views(found.rows),
            older,
            newer,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_key_round_trips() {
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456)
            .map(|d| d.naive_utc())
            .unwrap_or_default();
        let key = (at, 42);
        assert_eq!(parse_key(&format_key(key)).ok(), Some(key));
        assert!(parse_key("nonsense").is_err());
        assert!(parse_key("1.x").is_err());
        assert!(
            parse_key("-300000000000000000.1").is_err(),
            "before Postgres's range"
        );
        assert!(
            parse_key("300000000000000000.1").is_err(),
            "after year 9999"
        );
    }

    #[test]
    fn bad_filters_are_reported_beside_their_field() {
        let query = EventsQuery {
            kind: Some("nope".into()),
            ip: Some("999.1.1.1".into()),
            from: Some("2026-13-01".into()),
            ..EventsQuery::default()
        };
        let (f, _) = parse_filters(&query);
        assert!(f.kind_error.is_some() && f.ip_error.is_some() && f.from_error.is_some());
        let odd = EventsQuery {
            email: Some("a\u{0}b".into()),
            from: Some("-5000-01-01".into()),
            to: Some("+10000-01-01".into()),
            ..EventsQuery::default()
        };
        let (f, _) = parse_filters(&odd);
        assert!(f.email_error.is_some() && f.from_error.is_some() && f.to_error.is_some());
        let good = EventsQuery {
            kind: Some("reset_done".into()),
            ip: Some("::ffff:192.0.2.1".into()),
            email: Some(" Alice ".into()),
            ..EventsQuery::default()
        };
        let (f, parsed) = parse_filters(&good);
        assert!(!f.has_errors());
        assert_eq!(parsed.ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(parsed.email.as_deref(), Some("alice"));
    }
}
