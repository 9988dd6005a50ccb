//! The one place errors become HTTP: an HTML page for browsers, the JSON envelope
//! `{"error": {"code", "message"}}` for the API. An unexpected error is a 500 that shows
//! an error id, logged once with the cause, never shown to the user.

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use askama::Template;
use serde::Serialize;

use crate::{
    db::DbError,
    domain::{PasswordProblem, email::EmailError},
    services::ServiceError,
};

/// Seconds a client should wait when the hashing pool is saturated.
pub const BUSY_RETRY_AFTER_SECS: u64 = 2;
/// `Retry-After` when the database cannot be reached.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 30;

/// An error answered with an HTML page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("missing or invalid CSRF token")]
    Csrf,
    #[error("not found")]
    NotFound,
    /// A page that needs a signed-in user: answered with a 303 to the sign-in form, which
    /// comes back to `next` (a local path) afterwards.
    #[error("sign-in required")]
    SignInRequired { next: String },
    /// A signed-in user without the admin role asked for an admin page.
    #[error("admins only")]
    AdminsOnly,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("busy")]
    Busy,
    /// The database cannot be reached: 503, try again later.
    #[error("unavailable")]
    Unavailable,
    /// Over a rate limit; may retry after this long.
    #[error("too many requests")]
    Throttled(std::time::Duration),
    /// Anything unexpected: a 500 showing an error id; the cause, with its own causes,
    /// is logged once under that id.
    #[error("internal error")]
    Internal(#[source] Cause),
}

/// The cause of an unexpected failure, kept whole (its `source()` chain included) until
/// the one log line of the 500.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A cause with a word on where it happened ("session", "template"): the word is the
/// message, the error its source.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct InContext {
    what: &'static str,
    #[source]
    source: Cause,
}

impl PageError {
    /// An unexpected failure in `what`, keeping `cause` and its causes for the log.
    pub fn internal(what: &'static str, cause: impl Into<Cause>) -> Self {
        Self::Internal(Box::new(InContext {
            what,
            source: cause.into(),
        }))
    }
}

/// An error and every cause under it, on one line: "a: b: c", each level said once (a
/// level whose message already ends with its cause's is not repeated).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

impl From<ServiceError> for PageError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Busy => Self::Busy,
            ServiceError::Throttled { retry_after } => Self::Throttled(retry_after),
            ServiceError::Db(e) => e.into(),
            other => Self::Internal(Box::new(other)),
        }
    }
}

impl From<DbError> for PageError {
    fn from(e: DbError) -> Self {
        if e.is_unavailable() {
            tracing::error!(error = %e, "database unavailable");
            return Self::Unavailable;
        }
        Self::Internal(Box::new(e))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    error_id: Option<&'a str>,
}

fn error_id() -> String {
    crate::crypto::random_token_string(6)
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::SignInRequired { .. } => StatusCode::SEE_OTHER,
            Self::AdminsOnly => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Busy | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::SignInRequired { next } = self {
            // A plain path stays readable ("/login?next=/account"); anything else (a
            // query, odd characters) is encoded whole.
            let plain = next
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
            let next: String = if plain {
                next.clone()
            } else {
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect()
            };
            return HttpResponse::SeeOther()
                .insert_header(("Location", format!("/login?next={next}")))
                .finish();
        }
        let id = matches!(self, Self::Internal(_)).then(error_id);
        if let (Self::Internal(cause), Some(id)) = (self, &id) {
            tracing::error!(error_id = %id, cause = %chain(cause.as_ref()), "internal error");
        }
        let throttled;
        let (title, message) = match self {
            Self::BadRequest(m) => ("Bad request", m.as_str()),
            Self::Throttled(wait) => {
                throttled = throttled_message(*wait);
                ("Too many attempts", throttled.as_str())
            }
            Self::Csrf => (
                "Form expired",
                "This form could not be verified. Go back, reload the page and try again.",
            ),
            Self::NotFound | Self::SignInRequired { .. } => {
                ("Page not found", "There is nothing at this address.")
            }
            Self::AdminsOnly => (
                "Admins only",
                "This page is for administrators, and your account is not one. \
                 Ask an administrator if you need access.",
            ),
            Self::MethodNotAllowed => (
                "Method not allowed",
                "This page does not accept that kind of request.",
            ),
            Self::PayloadTooLarge => (
                "Too much data",
                "The form sent more data than allowed (64 KiB).",
            ),
            Self::Busy => (
                "Busy",
                "The server is busy right now. Please try again in a few seconds.",
            ),
            Self::Unavailable => (
                "Temporarily unavailable",
                "The service is temporarily unavailable. Nothing you sent was lost or half done; \
                 please try again in a minute.",
            ),
            Self::Internal(_) => (
                "Something went wrong",
                "Something went wrong on our side. Please try again.",
            ),
        };
        let body = ErrorPage {
            title,
            message,
            error_id: id.as_deref(),
        }
        .render()
        .unwrap_or_else(|_| message.to_owned());
        let mut res = HttpResponse::build(self.status_code());
        res.content_type("text/html; charset=utf-8");
        match self {
            Self::Busy => {
                res.insert_header(("Retry-After", BUSY_RETRY_AFTER_SECS.to_string()));
            }
            Self::Unavailable => {
                res.insert_header(("Retry-After", UNAVAILABLE_RETRY_AFTER_SECS.to_string()));
            }
            Self::Throttled(wait) => {
                res.insert_header(("Retry-After", wait.as_secs().max(1).to_string()));
            }
            _ => {}
        }
        res.body(body)
    }
}

/// The sentence shown to a throttled client, with the wait in words.
fn throttled_message(wait: std::time::Duration) -> String {
    format!(
        "There have been too many attempts from your network. Please wait {} and try again.",
        crate::words::lifetime_in_words(wait)
    )
}

/// An error answered with the JSON envelope.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {code}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for the `Retry-After` header (503 and 429).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl ApiError {
    /// An address under `/auth` with no endpoint.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "There is no such endpoint.",
        )
    }

    /// An endpoint asked with a method other than POST.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Use POST with a JSON body.",
        )
    }

    /// A reset token that is unknown, used, expired, or not for the given address.
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_token",
            "This reset link is invalid, has expired or has already been used. Ask for a new one.",
        )
    }
}

impl From<EmailError> for ApiError {
    fn from(e: EmailError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
            e.to_string(),
        )
    }
}

impl From<PasswordProblem> for ApiError {
    fn from(problem: PasswordProblem) -> Self {
        let code = match problem {
            PasswordProblem::TooShort { .. } => "password_too_short",
            PasswordProblem::TooLong => "password_too_long",
            PasswordProblem::Mismatch => "password_mismatch",
            PasswordProblem::Weak { .. } => "password_too_weak",
        };
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, problem.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Busy => Self {
                retry_after: Some(BUSY_RETRY_AFTER_SECS),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "The server is busy right now. Please try again in a few seconds.",
                )
            },
            ServiceError::Throttled { retry_after } => Self {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    throttled_message(retry_after),
                )
            },
            ServiceError::Db(e) if e.is_unavailable() => {
                tracing::error!(error = %e, "database unavailable");
                Self {
                    retry_after: Some(UNAVAILABLE_RETRY_AFTER_SECS),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "The service is temporarily unavailable. Please try again in a minute.",
                    )
                }
            }
            other => {
                let id = error_id();
                tracing::error!(error_id = %id, cause = %chain(&other), "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    format!("Something went wrong on our side (error id {id})."),
                )
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header(("Retry-After", secs.to_string()));
        }
        res.json(Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
            },
        })
    }
}

/// Maps a JSON body that could not be read to the envelope: 413 when too large, 415 for
/// another content type, 400 when it is not JSON, 422 when it is JSON of the wrong shape.
pub fn json_error(err: &actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "The request body is larger than 64 KiB.",
        ),
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as application/json.",
        ),
        E::Deserialize(e) if e.is_data() => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("The request body does not have the expected fields: {}", e),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "The request body is not valid JSON.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_500_keeps_every_cause_for_its_log_line() {
        let db = DbError::Query(diesel::result::Error::NotFound);
        let service = ServiceError::Db(db);
        let page = PageError::internal("account page", service);
        // The page error says only "internal error"; the chain under it says the rest,
        // each level once (DbError's own message already ends with diesel's).
        let PageError::Internal(cause) = &page else {
            panic!("not internal")
        };
        assert_eq!(
            chain(cause.as_ref()),
            "account page: database query failed: Record not found"
        );
        assert_eq!(page.to_string(), "internal error");
    }

    #[test]
    fn a_cause_from_text_is_kept_as_it_is() {
        let page = PageError::internal("csrf", "the CSRF middleware is not installed");
        let PageError::Internal(cause) = &page else {
            panic!("not internal")
        };
        assert_eq!(
            chain(cause.as_ref()),
            "csrf: the CSRF middleware is not installed"
        );
    }
}
