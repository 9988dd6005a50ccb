//! The admin area (SPEC §10): pages for admins only, with the same layout as the rest and
//! no JavaScript. Every page takes the `Admin` extractor and every action an `AdminForm`
//! (`web::gate`), so no handler can skip the role or the CSRF check; every action is a
//! POST that ends in a 303 back to its page with a notice.

pub mod events;
pub mod outbox;
pub mod users;

use chrono::NaiveDateTime;

use crate::{
    db::keyset::Keyset,
    error::PageError,
    services::{accounts::Account, admin::EventEntry},
    words::browser_name,
};

use super::{render::Layout, session};

/// The layout for an admin page.
pub fn admin_layout(csrf_token: &str, admin: &Account) -> Layout {
    session::layout(csrf_token, Some(admin))
}

/// A time as the admin pages show it (UTC, to the second).
pub fn when(at: NaiveDateTime) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An optional time, or a dash.
pub fn when_or_never(at: Option<NaiveDateTime>) -> String {
    at.map(when).unwrap_or_else(|| "never".to_owned())
}

/// Parses a numeric id from the path; anything else is a page that does not exist.
pub fn path_id(raw: &str) -> Result<i64, PageError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(PageError::NotFound)
}

/// Parses an optional numeric page key from the query.
pub fn query_id(raw: Option<&str>) -> Result<Option<i64>, PageError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| PageError::BadRequest("This page link is not valid.".into())),
    }
}

/// Reads `before` / `after` into a keyset over ids.
pub fn id_keyset(before: Option<&str>, after: Option<&str>) -> Result<Keyset<i64>, PageError> {
    Ok(match (query_id(before)?, query_id(after)?) {
        (Some(id), _) => Keyset::Before(id),
        (None, Some(id)) => Keyset::After(id),
        (None, None) => Keyset::First,
    })
}

/// Builds a local link with a query string from the non-empty pairs.
pub fn link(path: &str, pairs: &[(&str, String)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(k, v);
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// One row of an event table.
pub struct EventView {
    pub at: String,
    pub kind: String,
    pub user_id: Option<i64>,
    pub email: String,
    pub actor: String,
    pub ip: String,
    pub browser: String,
    pub detail: String,
}

impl From<EventEntry> for EventView {
    fn from(entry: EventEntry) -> Self {
        let e = entry.event;
        Self {
            at: when(e.created_at),
            kind: e.kind,
            user_id: e.user_id,
            email: e.email.unwrap_or_default(),
            actor: entry.actor_email.unwrap_or_default(),
            ip: e.client_ip.unwrap_or_default(),
            browser: e
                .user_agent
                .as_deref()
                .map(browser_name)
                .unwrap_or_default(),
            detail: e.detail.unwrap_or_default(),
        }
    }
}

/// Converts a page of events for a template.
pub fn event_views(entries: Vec<EventEntry>) -> Vec<EventView> {
    entries.into_iter().map(EventView::from).collect()
}
