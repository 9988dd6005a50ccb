//! Rotating `SECRET_KEY` without signing everyone out: session cookies encrypted under
//! `SECRET_KEY_PREVIOUS` are re-encrypted under the current key before actix-session
//! reads them, and the browser is handed the re-encrypted cookie.
//!
//! actix-session knows one cookie key only, so this middleware sits in front of it. The
//! other keyed values (session-row hashes, CSRF tokens, reset-token hashes, queued mail)
//! fall back to the previous key where they are checked; see `crate::crypto::Keys`.

use actix_web::{
    Error,
    body::MessageBody,
    cookie::{Cookie, CookieJar, Key, SameSite, time::Duration as CookieDuration},
    dev::{ServiceRequest, ServiceResponse},
    http::header::{COOKIE, HeaderMap, HeaderValue},
    middleware::Next,
    web::Data,
};

use super::{AppState, session_store::session_cookie_name};

/// Middleware: while a previous key is configured, re-encrypts a session cookie made
/// under it. Does nothing (not even parse cookies) when no rotation is under way.
pub async fn reseal_session_cookie(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let rotation = req.app_data::<Data<AppState>>().and_then(|state| {
        let keys = &state.services.keys;
        let settings = &state.services.settings;
        keys.previous_cookie_key().map(|previous| {
            (
                keys.cookie_key(),
                previous,
                settings.is_https(),
                settings.session_ttl,
            )
        })
    });
    let Some((current, previous, https, ttl)) = rotation else {
        return next.call(req).await;
    };
    let name = session_cookie_name(https);
    let resealed = reseal(req.headers(), name, &current, &previous);
    if let Some(value) = &resealed {
        replace_cookie(req.headers_mut(), name, value);
    }
    let mut res = next.call(req).await?;
    if let Some(value) = resealed {
        // Unless the session itself set or removed its cookie, give the browser the
        // re-encrypted one, so the old key can be retired.
        let already_set = res.response().cookies().any(|c| c.name() == name);
        if !already_set {
            let cookie = Cookie::build(name, value)
                .path("/")
                .http_only(true)
                .secure(https)
                .same_site(SameSite::Lax)
                .max_age(CookieDuration::seconds(ttl.as_secs() as i64))
                .finish();
            res.response_mut().add_cookie(&cookie)?;
        }
    }
    Ok(res)
}

/// The session cookie re-encrypted under `current`, when the request carries one that
/// only `previous` can open.
fn reseal(headers: &HeaderMap, name: &str, current: &Key, previous: &Key) -> Option<String> {
    let raw = cookies(headers).find(|(n, _)| n == name)?.1;
    let mut jar = CookieJar::new();
    jar.add_original(Cookie::new(name.to_owned(), raw));
    if jar.private(current).get(name).is_some() {
        return None;
    }
    let plain = jar.private(previous).get(name)?;
    let mut fresh = CookieJar::new();
    fresh
        .private_mut(current)
        .add(Cookie::new(name.to_owned(), plain.value().to_owned()));
    fresh.get(name).map(|c| c.value().to_owned())
}

/// Every cookie of the request's `Cookie` headers as `(name, value)`, percent-decoded as
/// actix-web decodes them.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (String, String)> + '_ {
    headers
        .get_all(COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| Cookie::parse_encoded(pair.trim().to_owned()).ok())
        .map(|c| (c.name().to_owned(), c.value().to_owned()))
}

/// Rewrites the `Cookie` header with `name` set to `value`, keeping the other cookies.
fn replace_cookie(headers: &mut HeaderMap, name: &str, value: &str) {
    let joined = cookies(headers)
        .map(|(n, v)| {
            let v = if n == name { value.to_owned() } else { v };
            Cookie::new(n, v).encoded().to_string()
        })
        .collect::<Vec<_>>()
        .join("; ");
    if let Ok(header) = HeaderValue::from_str(&joined) {
        headers.insert(COOKIE, header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(key: &Key, name: &str, value: &str) -> String {
        let mut jar = CookieJar::new();
        jar.private_mut(key)
            .add(Cookie::new(name.to_owned(), value.to_owned()));
        jar.get(name).unwrap().value().to_owned()
    }

    #[test]
    fn only_cookies_of_the_previous_key_are_resealed_and_others_are_kept() {
        let (old, new) = (Key::generate(), Key::generate());
        let mut headers = HeaderMap::new();
        // Values travel percent-encoded, as actix-web sets them.
        let session = Cookie::new("s", sealed(&old, "s", "session-id"));
        let cookie = format!("other=1; {}; csrf=x", session.encoded());
        headers.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
        let value = reseal(&headers, "s", &new, &old).expect("resealed");
        replace_cookie(&mut headers, "s", &value);
        let mut jar = CookieJar::new();
        for (n, v) in cookies(&headers) {
            jar.add_original(Cookie::new(n, v));
        }
        assert_eq!(jar.private(&new).get("s").unwrap().value(), "session-id");
        assert_eq!(jar.get("other").unwrap().value(), "1");
        assert_eq!(jar.get("csrf").unwrap().value(), "x");
        // Already under the current key, or under neither: left alone.
        assert_eq!(reseal(&headers, "s", &new, &old), None);
        assert_eq!(
            reseal(&headers, "s", &Key::generate(), &Key::generate()),
            None
        );
    }
}
