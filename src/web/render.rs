//! Rendering askama pages into responses.

use actix_web::{HttpResponse, http::StatusCode};
use askama::Template;

use crate::error::PageError;

/// The fields every page's layout needs.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The CSRF form value for this browser (forms and the sign-out button).
    pub csrf_token: String,
    /// Whether someone is signed in (for the navigation).
    pub signed_in: bool,
    pub is_admin: bool,
}

/// Renders a page with a status.
pub fn page<T: Template>(status: StatusCode, template: &T) -> Result<HttpResponse, PageError> {
    let body = template
        .render()
        .map_err(|e| PageError::internal("template", e))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// A 303 See Other to a local path.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", location))
        .finish()
}
