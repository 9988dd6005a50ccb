//! Reading and writing the browser session: who is signed in, and which reset link
//! this browser opened.

use actix_session::Session;

use crate::{
    crypto::random_token_string,
    error::PageError,
    services::accounts::Account,
    services::{ClientInfo, recovery::TokenHash},
};

use super::{AppState, render::Layout, session_store::keys};

/// Signs a user in: a new session id (against fixation), then the user's id, a public
/// id for the session list, and where the sign-in came from.
pub fn sign_in(session: &Session, user: &Account, client: &ClientInfo) -> Result<(), PageError> {
    session.renew();
    session.remove(keys::RESET);
    let insert = |k: &str, v: serde_json::Value| {
        session
            .insert(k, v)
            .map_err(|e| PageError::Internal(format!("session: {e}")))
    };
    insert(keys::USER_ID, user.id.into())?;
    insert(keys::PUBLIC_ID, random_token_string(12).into())?;
    insert(keys::CLIENT_IP, client.ip.clone().into())?;
    insert(keys::USER_AGENT, client.user_agent.clone().into())?;
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

/// Remembers the reset link this browser opened (as its hash), so the token leaves the
/// address bar.
pub fn remember_reset(session: &Session, hash: &TokenHash) -> Result<(), PageError> {
    session
        .insert(keys::RESET, hash.to_hex())
        .map_err(|e| PageError::Internal(format!("session: {e}")))
}

/// The reset link this browser opened, if any.
pub fn reset_hash(session: &Session) -> Option<TokenHash> {
    let hex = session.get::<String>(keys::RESET).ok().flatten()?;
    TokenHash::from_hex(&hex)
}

/// Forgets the reset link.
pub fn forget_reset(session: &Session) {
    session.remove(keys::RESET);
}

/// Accepts a `next` target only if it is a path on this site: it starts with one `/`,
/// and has no backslash or control character (browsers read `/\evil` as `//evil`).
pub fn safe_next(next: &str) -> Option<String> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= 512
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then(|| next.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_accepts_only_local_paths() {
        assert_eq!(safe_next("/account").as_deref(), Some("/account"));
        for bad in [
            "//evil.com",
            "https://evil.com",
            "/\\evil.com",
            "evil",
            "/\t/evil",
            "",
        ] {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }
}
