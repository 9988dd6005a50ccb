//! Email addresses, normalised (trimmed, lower-cased) and checked before any use.

use std::fmt;

use validator::ValidateEmail;

/// The longest address SMTP can carry (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// A syntactically valid, normalised email address. It contains no whitespace or control
/// characters, so it can never inject a header.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

/// Why an address was refused, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Enter your email address.")]
    Empty,
    #[error("That email address is too long.")]
    TooLong,
    #[error("Enter a valid email address, like name@example.com.")]
    Invalid,
}

impl EmailAddress {
    /// Trims, lower-cases and validates an address typed by a person.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        // CR, LF and every other control or space character are refused outright:
        // the address ends up in a mail header.
        if trimmed
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>' || c == ',')
        {
            return Err(EmailError::Invalid);
        }
        let normalised = trimmed.to_lowercase();
        if !normalised.validate_email() {
            return Err(EmailError::Invalid);
        }
        let (_, domain) = normalised.split_once('@').ok_or(EmailError::Invalid)?;
        if domain.starts_with('[') {
            // Address literals are legal but no real user has one; they only make mischief.
            return Err(EmailError::Invalid);
        }
        Ok(Self(normalised))
    }

    /// The address as stored and as mail is addressed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A form safe for logs: first letter of the local part and the domain
    /// (`j…@example.com`). Full addresses are never logged.
    pub fn redacted(&self) -> String {
        let mut parts = self.0.splitn(2, '@');
        let local = parts.next().unwrap_or_default();
        let domain = parts.next().unwrap_or_default();
        let first: String = local.chars().take(1).collect();
        format!("{first}…@{domain}")
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.redacted())
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        let e = EmailAddress::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "alice@example.com");
    }

    #[test]
    fn header_injection_is_refused() {
        for bad in [
            "a@b.com\r\nBcc: x@y.com",
            "a@b.com\nBcc:x@y.com",
            "a\r@b.com",
            "a b@c.com",
            "Eve <eve@x.com>",
            "a@b.com,c@d.com",
        ] {
            assert_eq!(
                EmailAddress::parse(bad),
                Err(EmailError::Invalid),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn empty_overlong_and_malformed_addresses_are_refused() {
        assert_eq!(EmailAddress::parse("   "), Err(EmailError::Empty));
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(EmailAddress::parse(&long), Err(EmailError::TooLong));
        for bad in ["plain", "@example.com", "a@", "a@@b.com", "a@[127.0.0.1]"] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn internationalised_domains_are_accepted_and_addresses_redacted_in_logs() {
        let e = EmailAddress::parse("Zoe@Exämple.de").unwrap();
        assert_eq!(e.as_str(), "zoe@exämple.de");
        assert_eq!(e.redacted(), "z…@exämple.de");
        assert!(!format!("{e:?}").contains("zoe@"));
    }

    #[test]
    fn non_ascii_local_parts_are_refused_like_html5_does() {
        // validator follows the HTML5 rule; SMTPUTF8 mailboxes are rare and risky.
        assert_eq!(
            EmailAddress::parse("zoë@example.de"),
            Err(EmailError::Invalid)
        );
    }
}
