//! Response headers every page gets (SPEC §9), and the request log: a span per request
//! with a random request id (every log line of handlers and services carries it, and the
//! response returns it as `X-Request-Id`), never a query string, cookie or body (a reset
//! link's token travels in the query string).

use std::time::Instant;

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{self, HeaderValue},
    middleware::Next,
    web::Data,
};

use tracing::Instrument;

use super::AppState;

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
