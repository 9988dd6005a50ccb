//! Response headers every page gets (SPEC §9), and the request log: a span per request
//! with a random request id (every log line of handlers and services carries it, and the
//! response returns it as `X-Request-Id`), never a query string, cookie or body (a reset
//! link's token travels in the query string).

use std::time::Instant;

use actix_web::{
    Error, ResponseError,
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header::{self, HeaderValue},
    middleware::Next,
    web::Data,
};

use tracing::Instrument;

use super::{AppState, session_store::session_cookie_name};
use crate::error::PageError;

const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'";

/// Middleware: security headers, `Cache-Control: no-store` on pages and API answers, HSTS
/// over https, and one log line per request.
pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let https = req
        .app_data::<Data<AppState>>()
        .is_some_and(|s| s.services.settings.is_https());
    let method = req.method().clone();
    let path: String = req.path().chars().take(200).collect();
    let request_id = crate::crypto::random_token_string(9);
    let span = tracing::info_span!("request", id = %request_id, method = %method, path = %path);
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status();
    let headers = res.headers_mut();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL)
        && (content_type.starts_with("text/html")
            || content_type.starts_with("application/json")
            || status.is_redirection())
    {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(header::HeaderName::from_static("x-request-id"), value);
    }
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "answered"
        );
    });
    Ok(res)
}

/// Middleware around the session middleware. When a session cannot be loaded or saved,
/// actix-session answers an empty 500 before any handler runs, so a signed-in page would
/// show nothing at all while the database is down. While the database is known to be
/// unreachable, a request with a session cookie gets the 503 page ("temporarily
/// unavailable", with `Retry-After`) without trying; a failure found on the way becomes the
/// 503 page too, or the 500 page with an error id when the database is up (the failed
/// request cannot be answered with a response of its own, so it goes back as an error).
pub async fn session_failures<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    let Some(state) = req.app_data::<Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let pool = &state.services.pool;
    let cookie = session_cookie_name(state.services.settings.is_https());
    if pool.is_down() && req.cookie(cookie).is_some() {
        let page = PageError::Unavailable.error_response();
        return Ok(req.into_response(page).map_into_right_body());
    }
    match next.call(req).await {
        Ok(res) => Ok(res.map_into_left_body()),
        Err(_) if pool.is_down() => Err(PageError::Unavailable.into()),
        Err(e) => Err(PageError::internal("session", e.to_string()).into()),
    }
}
