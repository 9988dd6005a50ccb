//! The admin area (SPEC §10): pages for admins only, with the same layout as the rest and
//! no JavaScript. Every route checks the role first; every action is a CSRF-checked POST
//! that ends in a 303 back to its page with a notice.

pub mod events;
pub mod outbox;
pub mod users;

use actix_session::Session;
use actix_web::HttpRequest;
use chrono::NaiveDateTime;

use crate::{
    db::keyset::Keyset,
    error::PageError,
    services::{accounts::Account, admin::EventEntry},
    words::browser_name,
};

use super::{AppState, render::Layout, session};

/// The signed-in admin, or the answer for anyone else: signed out → 303 to the sign-in
/// form, coming back to `page` afterwards; signed in without the role → 403.
pub async fn admin_only(
    state: &AppState,
    session: &Session,
    page: &str,
) -> Result<Account, PageError> {
    match session::current_user(state, session).await? {
        None => {
            // A very long address (search terms) would be refused as `next`; come back
            // to the page without its query then.
            let next = if page.len() <= 500 {
                page
            } else {
                page.split('?').next().unwrap_or("/admin")
            };
            Err(PageError::SignInRequired {
                next: next.to_owned(),
            })
        }
        Some(user) if !user.is_admin => Err(PageError::AdminsOnly),
        Some(user) => Ok(user),
    }
}

/// The path and query of a GET request, to come back to after signing in.
pub fn this_page(req: &HttpRequest) -> String {
    req.uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| req.path().to_owned())
}

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
