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

/// The keys derived from one secret.
#[derive(Clone)]
struct KeySet {
    token: [u8; 32],
    session: [u8; 32],
    csrf: [u8; 32],
    outbox: [u8; 32],
    cookie: actix_web::cookie::Key,
}

impl KeySet {
    fn derive(secret: &str) -> Self {
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

    fn csrf_token(&self, cookie_value: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac(&self.csrf, &[cookie_value.as_bytes()]))
    }

    fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(24);
        let cipher = XChaCha20Poly1305::new((&self.outbox).into());
        cipher.decrypt(XNonce::from_slice(nonce), ciphertext).ok()
    }
}

/// The keys of one running instance: those of `SECRET_KEY`, which make every new value,
/// and those of `SECRET_KEY_PREVIOUS` while a rotation is under way, which are only ever
/// used to recognise values made before it (sessions, CSRF tokens, reset links, mail).
#[derive(Clone)]
pub struct Keys {
    current: KeySet,
    previous: Option<KeySet>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

impl Keys {
    /// Derives every key from the operator's secret (and the one being rotated out).
    pub fn derive(secret: &str, previous: Option<&str>) -> Self {
        Self {
            current: KeySet::derive(secret),
            previous: previous.map(KeySet::derive),
        }
    }

    fn all(&self) -> impl Iterator<Item = &KeySet> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }

    /// The keyed hash under which a new reset token is stored: a database leak gives an
    /// attacker nothing to put in a link.
    pub fn token_hash(&self, token: &str) -> Vec<u8> {
        hmac(&self.current.token, &[token.as_bytes()]).to_vec()
    }

    /// Every hash a token may be stored under: the current key's first.
    pub fn token_hashes(&self, token: &str) -> Vec<Vec<u8>> {
        self.all()
            .map(|k| hmac(&k.token, &[token.as_bytes()]).to_vec())
            .collect()
    }

    /// The keyed hash under which a new session id is stored.
    pub fn session_hash(&self, session_key: &str) -> Vec<u8> {
        hmac(&self.current.session, &[session_key.as_bytes()]).to_vec()
    }

    /// Every hash a session id may be stored under: the current key's first.
    pub fn session_hashes(&self, session_key: &str) -> Vec<Vec<u8>> {
        self.all()
            .map(|k| hmac(&k.session, &[session_key.as_bytes()]).to_vec())
            .collect()
    }

    /// The CSRF form value that goes with a CSRF cookie value.
    pub fn csrf_token(&self, cookie_value: &str) -> String {
        self.current.csrf_token(cookie_value)
    }

    /// Checks a submitted CSRF form value in constant time (against each key in turn: a
    /// form loaded before a rotation still submits).
    pub fn csrf_matches(&self, cookie_value: &str, submitted: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.all().any(|k| {
            let expected = k.csrf_token(cookie_value);
            expected.as_bytes().ct_eq(submitted.as_bytes()).into()
        })
    }

    /// The key that encrypts session cookies.
    pub fn cookie_key(&self) -> actix_web::cookie::Key {
        self.current.cookie.clone()
    }

    /// The previous cookie key, while a rotation is under way.
    pub fn previous_cookie_key(&self) -> Option<actix_web::cookie::Key> {
        self.previous.as_ref().map(|k| k.cookie.clone())
    }

    /// Encrypts an outbox body: queued mail holds live links, which must not be readable
    /// from a copy of the database. Output is nonce ‖ ciphertext.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&self.current.outbox).into());
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

    /// Decrypts what [`Keys::seal`] produced, under the current or the previous key;
    /// `None` if it was tampered with or sealed under another key.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        self.all().find_map(|k| k.open(sealed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_secret() {
        let a = Keys::derive(&"a".repeat(64), None);
        let b = Keys::derive(&"b".repeat(64), None);
        assert_ne!(a.token_hash("t"), a.session_hash("t"));
        assert_ne!(a.token_hash("t"), b.token_hash("t"));
        assert_eq!(a.token_hash("t"), a.token_hash("t"));
    }

    #[test]
    fn csrf_tokens_only_match_their_cookie() {
        let k = Keys::derive(&"a".repeat(64), None);
        let t = k.csrf_token("cookie-1");
        assert!(k.csrf_matches("cookie-1", &t));
        assert!(!k.csrf_matches("cookie-2", &t));
        assert!(!k.csrf_matches("cookie-1", ""));
    }

    #[test]
    fn sealed_bodies_open_only_with_the_same_key() {
        let a = Keys::derive(&"a".repeat(64), None);
        let b = Keys::derive(&"b".repeat(64), None);
        let sealed = a.seal(b"hello");
        assert_eq!(a.open(&sealed).as_deref(), Some(&b"hello"[..]));
        assert!(b.open(&sealed).is_none());
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
    }

    #[test]
    fn the_previous_key_still_recognises_what_it_made_but_makes_nothing_new() {
        let (old_secret, new_secret) = ("o".repeat(64), "n".repeat(64));
        let old = Keys::derive(&old_secret, None);
        let rotated = Keys::derive(&new_secret, Some(&old_secret));
        let sealed = old.seal(b"queued mail");
        assert_eq!(rotated.open(&sealed).as_deref(), Some(&b"queued mail"[..]));
        assert!(rotated.csrf_matches("cookie", &old.csrf_token("cookie")));
        assert!(rotated.token_hashes("t").contains(&old.token_hash("t")));
        assert!(rotated.session_hashes("s").contains(&old.session_hash("s")));
        assert_ne!(rotated.token_hash("t"), old.token_hash("t"));
        assert_ne!(rotated.csrf_token("cookie"), old.csrf_token("cookie"));
        let after = Keys::derive(&new_secret, None);
        assert!(after.open(&sealed).is_none());
        assert!(!after.csrf_matches("cookie", &old.csrf_token("cookie")));
    }

    #[test]
    fn random_tokens_are_43_chars_for_32_bytes() {
        let t = random_token_string(32);
        assert_eq!(t.len(), 43);
        assert_ne!(t, random_token_string(32));
    }
}
