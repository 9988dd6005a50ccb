//! actix-session storage over the `sessions` table, on either backend.
//!
//! The cookie carries a random session id; the table stores only its keyed hash, so a
//! copy of the database signs nobody in. The signed-in user's id, a public id (for
//! "sign out other sessions") and the client's address and browser are copied from the
//! state into columns, so a password change can end every other session with one query.
//! Anonymous page views never reach this store: actix-session writes nothing for an empty
//! session, and CSRF protection and opened reset links use their own cookies.
//!
//! Two promises live here. A session's lifetime is absolute from sign-in: nothing extends
//! it. And a reset, password change or disable ends every session made before it, even a
//! sign-in still in flight: a session is written only while the account is at the
//! credential generation its password was checked against, and loaded only while it
//! still is.

use std::collections::HashMap;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration as CookieDuration;

use crate::{
    crypto::{Keys, random_token_string},
    db::{self, DbPool, sessions, users},
};

/// Session state keys this application uses.
pub mod keys {
    /// The signed-in user's id.
    pub const USER_ID: &str = "uid";
    /// A random public id of a signed-in session, shown in the session list.
    pub const PUBLIC_ID: &str = "sid";
    pub const CLIENT_IP: &str = "ip";
    pub const USER_AGENT: &str = "ua";
    /// The account's credential generation the sign-in was checked against. Moved into
    /// its own column when the session is written, never kept in the state.
    pub const GENERATION: &str = "gen";
}

/// The session cookie's name: `__Host-` prefixed over https (the browser then refuses it
/// from subdomains and over http).
pub fn session_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-latchkey_session"
    } else {
        "latchkey_session"
    }
}

/// The store.
#[derive(Clone)]
pub struct DbSessionStore {
    pool: DbPool,
    keys: Keys,
}

impl DbSessionStore {
    pub fn new(pool: DbPool, keys: Keys) -> Self {
        Self { pool, keys }
    }

    /// The columns of a state, and the generation it was signed in for (taken out of it).
    fn data(
        state: &mut HashMap<String, String>,
    ) -> Result<(sessions::SessionData, Option<i64>), anyhow::Error> {
        let generation = state
            .remove(keys::GENERATION)
            .and_then(|v| serde_json::from_str::<i64>(&v).ok());
        let json_str = |k: &str| {
            state
                .get(k)
                .and_then(|v| serde_json::from_str::<String>(v).ok())
        };
        let user_id = state
            .get(keys::USER_ID)
            .and_then(|v| serde_json::from_str::<i64>(v).ok());
        let data = sessions::SessionData {
            user_id,
            public_id: json_str(keys::PUBLIC_ID),
            state: serde_json::to_string(state)?,
            client_ip: json_str(keys::CLIENT_IP),
            user_agent: json_str(keys::USER_AGENT),
        };
        Ok((data, generation))
    }
}

fn expiry(ttl: &CookieDuration) -> chrono::NaiveDateTime {
    db::now_plus(std::time::Duration::from_secs(
        ttl.whole_seconds().max(0) as u64
    ))
}

fn new_key() -> Result<SessionKey, anyhow::Error> {
    SessionKey::try_from(random_token_string(32)).map_err(anyhow::Error::from)
}

impl SessionStore for DbSessionStore {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        let hashes = self.keys.session_hashes(session_key.as_ref());
        let row = db::run(&self.pool, move |c| {
            let row = sessions::find_live(c, &hashes)?;
            // Stored under the previous SECRET_KEY: move it to the current one, so the
            // old key can be retired without signing this session out.
            if let Some(row) = &row
                && row.key_hash != hashes[0]
            {
                sessions::rekey(c, &row.key_hash, &hashes[0])?;
            }
            Ok(row)
        })
        .await
        .map_err(|e| LoadError::Other(e.into()))?;
        match row {
            None => Ok(None),
            Some(row) => serde_json::from_str(&row.state)
                .map(Some)
                .map_err(|e| LoadError::Deserialization(e.into())),
        }
    }

    async fn save(
        &self,
        mut state: HashMap<String, String>,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, SaveError> {
        let (data, generation) = Self::data(&mut state).map_err(SaveError::Serialization)?;
        let key = new_key().map_err(SaveError::Other)?;
        let hash = self.keys.session_hash(key.as_ref());
        let expires_at = expiry(ttl);
        let stored = db::run(&self.pool, move |c| match data.user_id {
            None => sessions::insert(c, &hash, &data, expires_at, None).map(|()| true),
            Some(user_id) => db::write_transaction(c, |c| {
                let current = users::session_generation(c, user_id)?;
                if generation.is_none() || current != generation {
                    return Ok(false);
                }
                sessions::insert(c, &hash, &data, expires_at, generation)?;
                Ok(true)
            }),
        })
        .await
        .map_err(|e| SaveError::Other(e.into()))?;
        if !stored {
            // The key goes out but names no row: the browser is simply not signed in.
            tracing::info!("sign-in overtaken by a reset, password change or disable");
        }
        Ok(key)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        mut state: HashMap<String, String>,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        let (data, _) = Self::data(&mut state).map_err(UpdateError::Serialization)?;
        let hash = self.keys.session_hash(session_key.as_ref());
        let updated = db::run(&self.pool, move |c| sessions::update(c, &hash, &data))
            .await
            .map_err(|e| UpdateError::Other(e.into()))?;
        if updated {
            return Ok(session_key);
        }
        // The session was ended while this request ran (e.g. a password change elsewhere):
        // start a fresh one, but never carry the sign-in over, or it would come back to life.
        state.remove(keys::USER_ID);
        state.remove(keys::PUBLIC_ID);
        self.save(state, ttl).await.map_err(|e| match e {
            SaveError::Serialization(e) => UpdateError::Serialization(e),
            SaveError::Other(e) => UpdateError::Other(e),
        })
    }

    /// Never extends anything: a session lives a fixed time from sign-in (the middleware
    /// only calls this under a per-request TTL policy, which this application does not use).
    async fn update_ttl(
        &self,
        _session_key: &SessionKey,
        _ttl: &CookieDuration,
    ) -> Result<(), anyhow::Error> {
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        let hash = self.keys.session_hash(session_key.as_ref());
        db::run(&self.pool, move |c| sessions::delete(c, &hash)).await?;
        Ok(())
    }
}
