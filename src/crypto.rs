//! Keys derived from `SECRET_KEY`, and the few primitives built on them.
//!
//! One operator secret feeds several independent keys (HMAC-SHA256 over a label), so a
//! key used for one purpose can never be replayed for another: reset-token hashes,
//! session-id hashes, CSRF tokens, the cookie key and the outbox encryption key.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rand::fill(&mut buf);
    buf
}

/// `n` random bytes, base64url without padding: for tokens, ids and generated keys.
pub fn random_token_string(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The keys of one running instance.
#[derive(Clone)]
pub struct Keys {
    token: [u8; 32],
    session: [u8; 32],
    csrf: [u8; 32],
    outbox: [u8; 32],
    cookie: actix_web::cookie::Key,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

impl Keys {
    /// Derives every key from the operator's secret.
    pub fn derive(secret: &str) -> Self {
        let s = secret.as_bytes();
        let mut cookie_master = [0u8; 64];
        cookie_master[..32].copy_from_slice(&hmac(s, &[b"latchkey cookie 1"]));
        cookie_master[32..].copy_from_slice(&hmac(s, &[b"latchkey cookie 2"]));
        Self {
            token: hmac(s, &[b"latchkey reset-token"]),
            session: hmac(s, &[b"latchkey session-id"]),
            csrf: hmac(s, &[b"latchkey csrf"]),
            outbox: hmac(s, &[b"latchkey outbox"]),
            cookie: actix_web::cookie::Key::from(&cookie_master),
        }
    }

    /// The keyed hash under which a reset token is stored: a database leak gives an
    /// attacker nothing to put in a link.
    pub fn token_hash(&self, token: &str) -> Vec<u8> {
        hmac(&self.token, &[token.as_bytes()]).to_vec()
    }

    /// The keyed hash under which a session id is stored.
    pub fn session_hash(&self, session_key: &str) -> Vec<u8> {
        hmac(&self.session, &[session_key.as_bytes()]).to_vec()
    }

    /// The CSRF form value that goes with a CSRF cookie value.
    pub fn csrf_token(&self, cookie_value: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac(&self.csrf, &[cookie_value.as_bytes()]))
    }

    /// Checks a submitted CSRF form value in constant time.
    pub fn csrf_matches(&self, cookie_value: &str, submitted: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.csrf_token(cookie_value);
        expected.as_bytes().ct_eq(submitted.as_bytes()).into()
    }

    /// The key that encrypts session cookies.
    pub fn cookie_key(&self) -> actix_web::cookie::Key {
        self.cookie.clone()
    }

    /// Encrypts an outbox body: queued mail holds live links, which must not be readable
    /// from a copy of the database. Output is nonce ‖ ciphertext.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&self.outbox).into());
        let nonce_bytes = random_bytes::<24>();
        let nonce = XNonce::from_slice(&nonce_bytes);
        // Encryption of an in-memory buffer only fails on absurd lengths.
        let ciphertext = cipher
            .encrypt(nonce, plaintext)
            .unwrap_or_else(|_| unreachable!("in-memory encryption cannot fail"));
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts what [`Keys::seal`] produced; `None` if it was tampered with or sealed
    /// under another key.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(24);
        let cipher = XChaCha20Poly1305::new((&self.outbox).into());
        cipher.decrypt(XNonce::from_slice(nonce), ciphertext).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_secret() {
        let a = Keys::derive(&"a".repeat(64));
        let b = Keys::derive(&"b".repeat(64));
        assert_ne!(a.token_hash("t"), a.session_hash("t"));
        assert_ne!(a.token_hash("t"), b.token_hash("t"));
        assert_eq!(a.token_hash("t"), a.token_hash("t"));
    }

    #[test]
    fn csrf_tokens_only_match_their_cookie() {
        let k = Keys::derive(&"a".repeat(64));
        let t = k.csrf_token("cookie-1");
        assert!(k.csrf_matches("cookie-1", &t));
        assert!(!k.csrf_matches("cookie-2", &t));
        assert!(!k.csrf_matches("cookie-1", ""));
    }

    #[test]
    fn sealed_bodies_open_only_with_the_same_key() {
        let a = Keys::derive(&"a".repeat(64));
        let b = Keys::derive(&"b".repeat(64));
        let sealed = a.seal(b"hello");
        assert_eq!(a.open(&sealed).as_deref(), Some(&b"hello"[..]));
        assert!(b.open(&sealed).is_none());
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
    }

    #[test]
    fn random_tokens_are_43_chars_for_32_bytes() {
        let t = random_token_string(32);
        assert_eq!(t.len(), 43);
        assert_ne!(t, random_token_string(32));
    }
}
