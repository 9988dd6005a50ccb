//! Use cases: accounts, recovery, passwords, the audit trail and rate limits. No HTTP
//! types in here; handlers call these and turn their results into pages or JSON.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod limits;
pub mod passwords;
pub mod recovery;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::{
    config::Settings,
    crypto::Keys,
    db::{DbError, DbPool},
    domain::PasswordPolicy,
};

pub use passwords::Hasher;

/// Errors shared by the services that are not the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// The password hashing pool is saturated; the caller should retry shortly.
    #[error("password hashing is saturated")]
    Busy,
    /// The client is over a rate limit; it may try again after `retry_after`.
    #[error("too many requests")]
    Throttled { retry_after: std::time::Duration },
    #[error("email template failed")]
    Template(#[from] askama::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<passwords::HashError> for ServiceError {
    fn from(e: passwords::HashError) -> Self {
        match e {
            passwords::HashError::Busy => Self::Busy,
            passwords::HashError::Internal(m) => Self::Internal(m),
        }
    }
}

/// Who made a request: the client address (after `TRUSTED_PROXIES`) and the user agent,
/// for emails and session lists. Never a cookie or a token.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

/// Everything the use cases need, shared by handlers and workers.
#[derive(Clone)]
pub struct Services {
    pub pool: DbPool,
    pub keys: Keys,
    pub hasher: Hasher,
    pub settings: Arc<Settings>,
    /// Wakes the worker's delivery loop when there is mail to send.
    pub mail_wake: Arc<Notify>,
    /// Wakes the worker's request loop when there are reset requests to handle.
    pub requests_wake: Arc<Notify>,
}

impl Services {
    /// The password policy in force.
    pub fn policy(&self) -> PasswordPolicy {
        PasswordPolicy {
            min_chars: self.settings.password_min_length,
        }
    }

    /// An absolute URL under `BASE_URL`: the only source of links in emails.
    pub fn url(&self, path: &str) -> String {
        self.settings
            .base_url
            .join(path.trim_start_matches('/'))
            .map(|u| u.to_string())
            .unwrap_or_else(|_| self.settings.base_url.to_string())
    }
}
