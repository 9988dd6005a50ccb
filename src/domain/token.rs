//! Reset tokens: 32 bytes from the OS CSPRNG, base64url in the link.

use std::fmt;

use crate::crypto::random_token_string;

/// Length of an encoded token: 32 bytes as unpadded base64url.
pub const TOKEN_LEN: usize = 43;

/// A reset token as it travels in a link. It is never logged (`Debug` is redacted) and
/// never stored: only its keyed hash is.
#[derive(Clone, PartialEq, Eq)]
pub struct ResetToken(String);

impl ResetToken {
    /// A fresh token.
    pub fn generate() -> Self {
        Self(random_token_string(32))
    }

    /// Accepts only strings that could have been generated, so junk never reaches a query.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let well_formed = raw.len() == TOKEN_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| Self(raw.to_owned()))
    }

    /// The token text, for building the link and hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ResetToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResetToken([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_junk_does_not() {
        let t = ResetToken::generate();
        assert_eq!(ResetToken::parse(t.expose()), Some(t.clone()));
        assert!(ResetToken::parse("").is_none());
        assert!(ResetToken::parse(&"a".repeat(44)).is_none());
        assert!(ResetToken::parse(&format!("{}=", &t.expose()[..42])).is_none());
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}
