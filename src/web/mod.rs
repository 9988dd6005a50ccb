//! HTTP: handlers by flow, extractors, CSRF, security headers, session storage.
//! Handlers are thin: extract, parse into domain types, one service call, render or 303.

pub mod account;
pub mod admin;
pub mod api;
pub mod auth;
pub mod client;
pub mod csrf;
pub mod dev;
pub mod gate;
pub mod health;
pub mod key_rotation;
pub mod middleware;
pub mod recovery;
pub mod render;
pub mod reset_cookie;
pub mod session;
pub mod session_store;

use crate::{mail::DevMailbox, services::Services};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    /// Present only when `SMTP_URL` is unset.
    pub dev_mailbox: Option<DevMailbox>,
}

/// The largest request body accepted, JSON or form (SPEC §5).
pub const BODY_LIMIT: usize = 64 * 1024;
