//! CSRF protection for forms: a signed double-submit token.
//!
//! The browser holds a random value in an HttpOnly cookie; every form carries
//! HMAC(key, value) in a hidden `csrf_token` field. A cross-site page can neither read the
//! cookie nor compute the HMAC, and SameSite=Lax keeps the cookie off cross-site POSTs.
//! Over https the cookie is `__Host-` prefixed, so a sibling subdomain or a network attacker
//! cannot plant one; over plain http (development) they could, which is one more reason
//! production must use https. Keeping this out of the session means anonymous page views
//! write nothing to the database.

use actix_web::{
    Error, FromRequest, HttpMessage, HttpRequest,
    body::MessageBody,
    cookie::{Cookie, SameSite},
    dev::{Payload, ServiceRequest, ServiceResponse},
    middleware::Next,
    web::Data,
};

use crate::{crypto::random_token_string, error::PageError};

use super::AppState;

/// The cookie's name: `__Host-` prefixed when served over https (the browser then refuses
/// it from subdomains and over http).
pub fn cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-latchkey_csrf"
    } else {
        "latchkey_csrf"
    }
}

#[derive(Clone)]
struct CsrfCookie {
    value: String,
    /// The request came without a cookie: no submitted form can be valid.
    fresh: bool,
}

fn well_formed(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Middleware: makes sure every browser has a CSRF cookie, setting one on the first HTML
/// response that lacks it.
pub async fn ensure_cookie(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let https = req
        .app_data::<Data<AppState>>()
        .is_some_and(|s| s.services.settings.is_https());
    let name = cookie_name(https);
    let existing = req
        .cookie(name)
        .map(|c| c.value().to_owned())
        .filter(|v| well_formed(v));
    let cookie = match existing {
        Some(value) => CsrfCookie {
            value,
            fresh: false,
        },
        None => CsrfCookie {
            value: random_token_string(32),
            fresh: true,
        },
    };
    req.extensions_mut().insert(cookie.clone());
    let mut res = next.call(req).await?;
    let is_html = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if cookie.fresh && is_html {
        let c = Cookie::build(name, cookie.value)
            .path("/")
            .http_only(true)
            .secure(https)
            .same_site(SameSite::Lax)
            .finish();
        res.response_mut().add_cookie(&c)?;
    }
    Ok(res)
}

/// Extractor: the CSRF token for this browser's forms, and its check.
pub struct Csrf {
    token: String,
    cookie: CsrfCookie,
    state: Data<AppState>,
}

impl Csrf {
    /// The value for the hidden `csrf_token` field.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Checks a submitted form's token; 403 when it is missing or wrong.
    pub fn verify(&self, submitted: &str) -> Result<(), PageError> {
        if self.cookie.fresh
            || !self
                .state
                .services
                .keys
                .csrf_matches(&self.cookie.value, submitted)
        {
            tracing::info!("form refused: missing or invalid CSRF token");
            return Err(PageError::Csrf);
        }
        Ok(())
    }
}

impl FromRequest for Csrf {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<Data<AppState>>().cloned();
        let cookie = req.extensions().get::<CsrfCookie>().cloned();
        let result = match (state, cookie) {
            (Some(state), Some(cookie)) => Ok(Csrf {
                token: state.services.keys.csrf_token(&cookie.value),
                cookie,
                state,
            }),
            _ => Err(PageError::Internal("CSRF middleware is not installed".into()).into()),
        };
        std::future::ready(result)
    }
}
