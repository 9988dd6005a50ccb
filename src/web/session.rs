//! Reading and writing the browser session: who is signed in.

use actix_session::Session;

use crate::{
    crypto::random_token_string, error::PageError, services::ClientInfo,
    services::accounts::Account,
};

use super::{AppState, csrf::Csrf, render::Layout, session_store::keys};

/// Signs a user in: a new session id (against fixation), then the user's id, a public
/// id for the session list, where the sign-in came from, and the credential generation
/// the password was checked against (the store writes the session only if the account is
/// still at it). The CSRF cookie is replaced too, like the session id.
pub fn sign_in(
    session: &Session,
    csrf: &Csrf,
    user: &Account,
    client: &ClientInfo,
) -> Result<(), PageError> {
    session.renew();
    csrf.rotate();
    let insert = |k: &str, v: serde_json::Value| {
        session
            .insert(k, v)
            .map_err(|e| PageError::internal("session", e))
    };
    insert(keys::USER_ID, user.id.into())?;
    insert(keys::PUBLIC_ID, random_token_string(12).into())?;
    insert(keys::CLIENT_IP, client.ip.clone().into())?;
    insert(keys::USER_AGENT, client.user_agent.clone().into())?;
    insert(keys::GENERATION, user.credential_generation.into())?;
    Ok(())
}

/// Ends the session entirely.
pub fn sign_out(session: &Session) {
    session.purge();
}

/// The public id of this session, if signed in.
pub fn public_id(session: &Session) -> Option<String> {
    session.get::<String>(keys::PUBLIC_ID).ok().flatten()
}

/// The signed-in account, if the session names one that still exists and may sign in.
/// A session whose account is gone or disabled is ended.
pub async fn current_user(
    state: &AppState,
    session: &Session,
) -> Result<Option<Account>, PageError> {
    let Some(id) = session.get::<i64>(keys::USER_ID).ok().flatten() else {
        return Ok(None);
    };
    let user = state.services.active_user(id).await?;
    if user.is_none() {
        session.purge();
    }
    Ok(user)
}

/// The layout fields for a page.
pub fn layout(csrf_token: &str, user: Option<&Account>) -> Layout {
    Layout {
        csrf_token: csrf_token.to_owned(),
        signed_in: user.is_some(),
        is_admin: user.is_some_and(|u| u.is_admin),
    }
}

/// Accepts a `next` target only if it is a path on this site: it starts with one `/`,
/// and has no backslash, control character or space (browsers read `/\evil` as `//evil`
/// and drop tabs and newlines). The same holds after percent-decoding, once or several
/// times, so no layer that decodes it (a proxy, a framework, the browser) can turn it
/// into another origin: `/%2F/evil` and `/%252F/evil` are refused too. (A decoded `%20`
/// may be a space: harmless inside a path.)
pub fn safe_next(next: &str) -> Option<String> {
    if next.len() > 512 || next.chars().any(char::is_whitespace) {
        return None;
    }
    let mut layer = next.to_owned();
    for _ in 0..4 {
        if !is_local_path(&layer) {
            return None;
        }
        let decoded = percent_decode(&layer);
        if decoded == layer {
            return Some(next.to_owned());
        }
        layer = decoded;
    }
    // Still changing after four decodings: nobody legitimate nests that deep.
    None
}

fn is_local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.contains('\\')
        && !p.chars().any(char::is_control)
}

/// One round of `%XX` decoding; other bytes pass through.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_accepts_only_local_paths() {
        assert_eq!(safe_next("/account").as_deref(), Some("/account"));
        assert_eq!(
            safe_next("/account?tab=a%20b").as_deref(),
            Some("/account?tab=a%20b")
        );
        for bad in [
            "//evil.com",
            "https://evil.com",
            "/\\evil.com",
            "evil",
            "/\t/evil",
            "",
            "/%2F/evil.com",
            "/%2f%2fevil.com",
            "%2F%2Fevil.com",
            "/%5Cevil.com",
            "/%252F/evil.com",
            "/%25252F/evil.com",
            "/%09/evil.com",
            "/%0d%0aSet-Cookie:x",
        ] {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }
}
