//! The reset link a browser opened, kept between opening it and submitting the new
//! password in a cookie of its own, encrypted and authenticated under the cookie key.
//!
//! Not in the session: every opening of a link (a mail scanner, a script, a page that
//! embeds it) would otherwise write a session row, and a signed-in session's state would
//! change, which is what used to extend it. The cookie holds the token's keyed hash, never
//! the token, and lives no longer than a link does.

use actix_web::{
    Error, FromRequest, HttpRequest, HttpResponse,
    cookie::{Cookie, CookieJar, SameSite, time::Duration as CookieDuration},
    dev::Payload,
    web::Data,
};

use crate::{error::PageError, services::recovery::TokenHash};

use super::AppState;

/// The cookie's name: `__Host-` prefixed over https, like the session's.
pub fn cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-latchkey_reset"
    } else {
        "latchkey_reset"
    }
}

/// Extractor: the link this browser opened, if it carries a cookie this server sealed
/// (under the current key or the one being rotated out).
pub struct OpenedLink {
    hash: Option<TokenHash>,
    state: Data<AppState>,
}

impl OpenedLink {
    /// The opened link's hash.
    pub fn hash(&self) -> Option<&TokenHash> {
        self.hash.as_ref()
    }

    fn https(&self) -> bool {
        self.state.services.settings.is_https()
    }

    /// Puts the cookie for a just-opened link on the response.
    pub fn remember(&self, res: &mut HttpResponse, hash: &TokenHash) -> Result<(), PageError> {
        let ttl = self.state.services.settings.reset_token_ttl;
        let cookie = Cookie::build(cookie_name(self.https()), hash.to_hex())
            .path("/")
            .http_only(true)
            .secure(self.https())
            .same_site(SameSite::Lax)
            .max_age(CookieDuration::seconds(
                i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            ))
            .finish();
        let mut jar = CookieJar::new();
        jar.private_mut(&self.state.services.keys.cookie_key())
            .add(cookie);
        for sealed in jar.delta() {
            res.add_cookie(sealed).map_err(cookie_error)?;
        }
        Ok(())
    }

    /// Removes the cookie (the link was used or is dead), if the browser had one.
    pub fn forget(&self, res: &mut HttpResponse) -> Result<(), PageError> {
        if self.hash.is_some() {
            let mut gone = Cookie::build(cookie_name(self.https()), "")
                .path("/")
                .http_only(true)
                .secure(self.https())
                .same_site(SameSite::Lax)
                .finish();
            gone.make_removal();
            res.add_cookie(&gone).map_err(cookie_error)?;
        }
        Ok(())
    }
}

fn cookie_error(e: actix_web::error::HttpError) -> PageError {
    PageError::internal("reset cookie", e)
}

impl FromRequest for OpenedLink {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<Data<AppState>>().cloned() else {
            return std::future::ready(Err(actix_web::error::ErrorInternalServerError(
                "application state is missing",
            )));
        };
        let name = cookie_name(state.services.settings.is_https());
        let hash = req.cookie(name).and_then(|cookie| {
            let keys = &state.services.keys;
            let jar = CookieJar::new();
            std::iter::once(keys.cookie_key())
                .chain(keys.previous_cookie_key())
                .find_map(|key| jar.private(&key).decrypt(cookie.clone()))
                .and_then(|plain| TokenHash::from_hex(plain.value()))
        });
        std::future::ready(Ok(Self { hash, state }))
    }
}
