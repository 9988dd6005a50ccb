//! Email addresses, normalised and checked before any use (SPEC §7).
//!
//! An address is stored, compared and mailed in one canonical form: NFKC, lower-cased,
//! its domain in punycode (IDNA 2008 / UTS 46). Two addresses that look alike in the admin
//! pages are either the same account (`ａlice@example.com` is `alice@example.com`) or one of
//! them is refused (`alice@example.com` with a zero-width space). Only addresses a mail
//! system will deliver as typed are accepted: an ASCII dot-atom local part (no leading,
//! trailing or doubled dot, no quotes), nothing that reads as an RFC 2047 encoded word
//! (`=?`), and a real domain name (no IP, no single label, no address literal).

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use validator::ValidateEmail;

/// The longest address SMTP can carry (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// The longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_LEN: usize = 64;

/// The longest label of a domain name.
const MAX_LABEL_LEN: usize = 63;

/// A syntactically valid, normalised email address. It contains no whitespace or control
/// characters, so it can never inject a header; it is plain ASCII, so it goes into a
/// header and an SMTP envelope as it is.
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
    /// Normalises and validates an address typed by a person.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        // A cheap bound before normalising: nothing this long can shrink to a valid
        // address (NFKC and punycode change lengths, so the real check comes last).
        if trimmed.chars().count() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        // Checked before normalising too, as NFKC maps some of them away: an address
        // with an invisible character is refused, never silently cleaned.
        if trimmed.chars().any(refused_char) {
            return Err(EmailError::Invalid);
        }
        let normalised: String = trimmed.nfkc().collect::<String>().to_lowercase();
        if normalised.chars().any(refused_char) {
            return Err(EmailError::Invalid);
        }
        let (local, domain) = normalised.split_once('@').ok_or(EmailError::Invalid)?;
        if !valid_local_part(local) {
            return Err(EmailError::Invalid);
        }
        let domain = ascii_domain(domain).ok_or(EmailError::Invalid)?;
        let address = format!("{local}@{domain}");
        if address.len() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        // The HTML5 rule as a last net (every address accepted above satisfies it).
        if !address.validate_email() {
            return Err(EmailError::Invalid);
        }
        Ok(Self(address))
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

/// Characters no address may hold: controls, spaces, the punctuation of address lists,
/// and the invisible ones (format characters, default-ignorables, bidi controls, variation
/// selectors), which would let two different addresses look the same.
fn refused_char(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(c, '<' | '>' | ',' | ';' | '"' | '\\')
        || matches!(u32::from(c),
            0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5
            | 0x180B..=0x180F | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F
            | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFFB
            | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

/// An ASCII dot-atom (RFC 5322 §3.2.3) of at most 64 characters, without `=?`: a local
/// part every mail system delivers as written, that no decoder can rewrite.
fn valid_local_part(local: &str) -> bool {
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    !local.is_empty()
        && local.len() <= MAX_LOCAL_LEN
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(atext))
        && !local.contains("=?")
}

/// The domain in its ASCII (punycode) form, if it is a real host name: at least two
/// labels of letters, digits and inner hyphens, the last not all digits (so no IP
/// address), and no address literal.
fn ascii_domain(domain: &str) -> Option<String> {
    if domain.starts_with('[') {
        // Address literals are legal but no real user has one; they only make mischief.
        return None;
    }
    let ascii = idna::domain_to_ascii_strict(domain).ok()?;
    let labels: Vec<&str> = ascii.split('.').collect();
    let ldh = |label: &&str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let tld = labels.last()?;
    (labels.len() >= 2 && labels.iter().all(ldh) && !tld.bytes().all(|b| b.is_ascii_digit()))
        .then_some(ascii)
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
    fn internationalised_domains_become_punycode_and_addresses_are_redacted_in_logs() {
        let e = EmailAddress::parse("Zoe@Exämple.de").unwrap();
        assert_eq!(e.as_str(), "zoe@xn--exmple-cua.de");
        assert_eq!(e.redacted(), "z…@xn--exmple-cua.de");
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

    #[test]
    fn addresses_a_mail_system_would_not_deliver_as_typed_are_refused() {
        for bad in [
            "dot.@example.com",
            ".dot@example.com",
            "a..b@example.com",
            "=?utf-8?q?x?=@example.com",
            "x=?utf-8?b?eA==?=y@example.com",
            "\"alice smith\"@example.com",
            "alice@127.0.0.1",
            "alice@localhost",
            "alice@[::1]",
            "alice@-example.com",
            "alice@example-.com",
            "alice@example..com",
            "alice@example.com.",
            "alice@example.123",
            &format!("{}@example.com", "a".repeat(65)),
            &format!("alice@{}.com", "a".repeat(64)),
        ] {
            assert_eq!(
                EmailAddress::parse(bad),
                Err(EmailError::Invalid),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn invisible_characters_are_refused_and_look_alikes_normalised() {
        for bad in [
            "alice@example.com\u{200b}",
            "al\u{200d}ice@example.com",
            "alice@exam\u{00ad}ple.com",
            "alice@exa\u{202e}mple.com",
            "alice@example.com\u{feff}",
            "alice\u{fe0f}@example.com",
            "alice@exa\u{2060}mple.com",
        ] {
            assert_eq!(
                EmailAddress::parse(bad),
                Err(EmailError::Invalid),
                "{bad:?}"
            );
        }
        for alike in [
            "alice@\u{ff45}xample.com",
            "\u{ff41}lice@example.com",
            "ALICE@example.COM",
        ] {
            assert_eq!(
                EmailAddress::parse(alike).map(|e| e.0),
                Ok("alice@example.com".to_owned()),
                "{alike:?}"
            );
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        /// Valid addresses as people type them: dot-atoms in any case, a few domains, one
        /// of them internationalised.
        fn typed_address() -> impl Strategy<Value = String> {
            let atom = "[A-Za-z0-9!#$%&'*+/^_`{|}~-]{1,12}";
            let local = prop::collection::vec(atom, 1..4).prop_map(|atoms| atoms.join("."));
            let domain = prop::sample::select(vec![
                "example.com",
                "Mail.Example.ORG",
                "bücher.example",
                "xn--bcher-kva.example",
                "a-b.c-d.example",
            ]);
            (local, domain).prop_map(|(l, d)| format!("{l}@{d}"))
        }

        /// Characters that make an address look like another one.
        fn invisible() -> impl Strategy<Value = char> {
            prop::sample::select(vec![
                '\u{00ad}',
                '\u{034f}',
                '\u{200b}',
                '\u{200c}',
                '\u{200d}',
                '\u{200e}',
                '\u{202e}',
                '\u{2060}',
                '\u{2066}',
                '\u{feff}',
                '\u{fe0f}',
                '\u{e0041}',
            ])
        }

        proptest! {
            #[test]
            fn parsing_never_panics_and_what_it_accepts_is_canonical(raw in any::<String>()) {
                if let Ok(e) = EmailAddress::parse(&raw) {
                    let s = e.as_str();
                    prop_assert!(s.is_ascii() && s.len() <= MAX_EMAIL_LEN);
                    prop_assert!(!s.chars().any(|c| c.is_control() || c.is_whitespace()));
                    prop_assert_eq!(s.matches('@').count(), 1);
                    prop_assert!(!s.contains("..") && !s.contains("=?") && !s.contains(".@"));
                    prop_assert!(!s.starts_with('.'));
                    prop_assert_eq!(EmailAddress::parse(s), Ok(e.clone()));
                }
            }

            #[test]
            fn typed_addresses_are_accepted_in_one_canonical_form(raw in typed_address()) {
                prop_assume!(!raw.contains("=?"));
                let e = EmailAddress::parse(&raw).unwrap();
                prop_assert_eq!(e.as_str(), e.as_str().to_ascii_lowercase());
                prop_assert_eq!(EmailAddress::parse(&raw.to_uppercase()).ok(), Some(e.clone()));
                prop_assert_eq!(EmailAddress::parse(&format!("  {raw}\t")), Ok(e.clone()));
                prop_assert_eq!(EmailAddress::parse(e.as_str()), Ok(e));
            }

            #[test]
            fn an_invisible_character_anywhere_is_refused(
                raw in typed_address(),
                c in invisible(),
                at in any::<prop::sample::Index>(),
            ) {
                let mut chars: Vec<char> = raw.chars().collect();
                chars.insert(at.index(chars.len() + 1), c);
                let tampered: String = chars.into_iter().collect();
                prop_assert!(EmailAddress::parse(&tampered).is_err(), "{:?}", tampered);
            }
        }
    }
}
