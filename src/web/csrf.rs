//! CSRF protection for forms: a signed double-submit token.
//!
//! The browser holds a random value in an HttpOnly cookie; every form carries
//! HMAC(key, value) in a hidden `csrf_token` field. A cross-site page can neither read the
//! cookie nor compute the HMAC, and SameSite=Lax keeps the cookie off cross-site POSTs.
//! Over https the cookie is `__Host-` prefixed, so a sibling subdomain or a network attacker
//! cannot plant one; over plain http (development) they could, which is one more reason
//! production must use https. Keeping this out of the session means anonymous page views
//! write nothing to the database.
//!
//! Handlers never check the token themselves: a form is read through [`CsrfForm`], which
//! checks it before the fields are even parsed, so a handler cannot forget, and an empty,
//! fieldless or mistyped body is the same 403 "form expired" page as a forged one. The
//! cookie is replaced at sign-in ([`Csrf::rotate`]), so a value planted before cannot be
//! used after.

use actix_web::{
    Error, FromRequest, HttpMessage, HttpRequest,
    body::MessageBody,
    cookie::{Cookie, SameSite},
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::header::{CONTENT_LENGTH, CONTENT_TYPE},
    middleware::Next,
    web::{BytesMut, Data},
};
use futures_util::{StreamExt, future::LocalBoxFuture};
use serde::de::DeserializeOwned;

use crate::{crypto::random_token_string, error::PageError, web::BODY_LIMIT};

use super::AppState;

/// The form field that carries the token.
const FIELD: &str = "csrf_token";

/// Marks a request whose response must carry a new CSRF cookie (a sign-in).
#[derive(Clone, Copy)]
struct Rotate;

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
    let rotate = res.request().extensions().contains::<Rotate>();
    if rotate || (cookie.fresh && is_html) {
        let value = if rotate {
            random_token_string(32)
        } else {
            cookie.value
        };
        let c = Cookie::build(name, value)
            .path("/")
            .http_only(true)
            .secure(https)
            .same_site(SameSite::Lax)
            .finish();
        res.response_mut().add_cookie(&c)?;
    }
    Ok(res)
}

/// Extractor: the CSRF token for this browser's forms (for pages that render one).
pub struct Csrf {
    token: String,
    cookie: CsrfCookie,
    state: Data<AppState>,
    req: HttpRequest,
}

impl Csrf {
    /// The value for the hidden `csrf_token` field.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Gives the browser a new cookie with this response (at sign-in): tokens made for
    /// the old one stop working.
    pub fn rotate(&self) {
        self.req.extensions_mut().insert(Rotate);
    }

    /// Checks a submitted form's token; 403 when it is missing or wrong.
    fn verify(&self, submitted: &str) -> Result<(), PageError> {
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
                req: req.clone(),
            }),
            _ => Err(PageError::internal("csrf", "the CSRF middleware is not installed").into()),
        };
        std::future::ready(result)
    }
}

/// Extractor: a form POST whose CSRF token was checked before its fields were parsed.
/// Refuses with 403 when the body has no `csrf_token` field (an empty body, another
/// content type, a field missing) or a wrong one, with 400 when it has two (no reading of
/// a duplicated field is trusted), then with 400 when the fields do not parse into `T`.
pub struct CsrfForm<T>(pub Csrf, pub T);

impl<T: DeserializeOwned + 'static> FromRequest for CsrfForm<T> {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let csrf = Csrf::from_request(req, payload).into_inner();
        let is_form = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|t| {
                    t.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        let declared_too_large = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n > BODY_LIMIT);
        let mut payload = payload.take();
        Box::pin(async move {
            let csrf = csrf?;
            if declared_too_large {
                return Err(PageError::PayloadTooLarge.into());
            }
            let mut body = BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk
                    .map_err(|_| PageError::BadRequest("The form could not be read.".into()))?;
                if body.len() + chunk.len() > BODY_LIMIT {
                    return Err(PageError::PayloadTooLarge.into());
                }
                body.extend_from_slice(&chunk);
            }
            let mut tokens = if is_form {
                url::form_urlencoded::parse(&body)
                    .filter(|(k, _)| k == FIELD)
                    .map(|(_, v)| v.into_owned())
                    .collect()
            } else {
                Vec::new()
            };
            let Some(token) = tokens.pop() else {
                tracing::info!("form refused: no CSRF token");
                return Err(PageError::Csrf.into());
            };
            if !tokens.is_empty() {
                return Err(PageError::BadRequest(
                    "The form carried its security token twice. Reload the page and try again."
                        .into(),
                )
                .into());
            }
            csrf.verify(&token)?;
            let form = serde_urlencoded::from_bytes::<T>(&body)
                .map_err(|_| PageError::BadRequest("The form data could not be read.".into()))?;
            Ok(CsrfForm(csrf, form))
        })
    }
}
