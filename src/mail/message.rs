//! The emails Latchkey sends, each a subject plus text and HTML bodies from
//! `templates/email/<name>.{txt,html}`.

use askama::Template;

use crate::{
    crypto::Keys,
    words::{browser_name, lifetime_in_words},
};
use serde::{Deserialize, Serialize};

/// A rendered message, as sealed into the outbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EmailMessage {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl EmailMessage {
    /// The message as stored in the outbox: JSON, sealed under the outbox key, because a
    /// queued reset email holds a live link.
    pub fn seal(&self, keys: &Keys) -> Vec<u8> {
        // Serialising a struct of strings cannot fail.
        keys.seal(&serde_json::to_vec(self).unwrap_or_default())
    }

    /// Back from [`EmailMessage::seal`]; `None` if sealed under another key or corrupted.
    pub fn open(keys: &Keys, sealed: &[u8]) -> Option<Self> {
        serde_json::from_slice(&keys.open(sealed)?).ok()
    }
}

/// Where and how a request came in, in coarse words for the reader of an email.
#[derive(Debug, Clone)]
pub struct RequestOrigin {
    pub ip: String,
    pub browser: String,
    /// An admin asked for it: the email says so instead of naming the admin's address.
    pub by_admin: bool,
}

impl RequestOrigin {
    /// From a client address and a User-Agent header.
    pub fn new(ip: &str, user_agent: &str) -> Self {
        Self {
            ip: ip.to_owned(),
            browser: browser_name(user_agent),
            by_admin: false,
        }
    }

    /// A request an admin made for the account's owner.
    pub fn admin() -> Self {
        Self {
            ip: String::new(),
            browser: String::new(),
            by_admin: true,
        }
    }
}

#[derive(Template)]
#[template(path = "email/reset.txt")]
struct ResetText<'a> {
    link: &'a str,
    lifetime: &'a str,
    origin: &'a RequestOrigin,
    forgot_url: &'a str,
}

#[derive(Template)]
#[template(path = "email/reset.html")]
struct ResetHtml<'a> {
    link: &'a str,
    lifetime: &'a str,
    origin: &'a RequestOrigin,
    forgot_url: &'a str,
}

#[derive(Template)]
#[template(path = "email/password_changed.txt")]
struct ChangedText<'a> {
    when: &'a str,
    origin: &'a RequestOrigin,
    forgot_url: &'a str,
}

#[derive(Template)]
#[template(path = "email/password_changed.html")]
struct ChangedHtml<'a> {
    when: &'a str,
    origin: &'a RequestOrigin,
    forgot_url: &'a str,
}

/// The reset email: the link, its lifetime in words, where the request came from, and
/// what to do if it was not you.
pub fn reset_email(
    link: &str,
    lifetime: std::time::Duration,
    origin: &RequestOrigin,
    forgot_url: &str,
) -> Result<EmailMessage, askama::Error> {
    let lifetime = lifetime_in_words(lifetime);
    Ok(EmailMessage {
        subject: "Reset your Latchkey password".to_owned(),
        text: ResetText {
            link,
            lifetime: &lifetime,
            origin,
            forgot_url,
        }
        .render()?,
        html: ResetHtml {
            link,
            lifetime: &lifetime,
            origin,
            forgot_url,
        }
        .render()?,
    })
}

/// The notice sent after every password change. It never holds a live reset link.
pub fn password_changed_email(
    when: chrono::NaiveDateTime,
    origin: &RequestOrigin,
    forgot_url: &str,
) -> Result<EmailMessage, askama::Error> {
    let when = when.format("%Y-%m-%d %H:%M UTC").to_string();
    Ok(EmailMessage {
        subject: "Your Latchkey password was changed".to_owned(),
        text: ChangedText {
            when: &when,
            origin,
            forgot_url,
        }
        .render()?,
        html: ChangedHtml {
            when: &when,
            origin,
            forgot_url,
        }
        .render()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sealed_message_opens_only_with_its_key() {
        let a = Keys::derive(&"a".repeat(64), None);
        let b = Keys::derive(&"b".repeat(64), None);
        let m = EmailMessage {
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
        };
        let sealed = m.seal(&a);
        assert_eq!(EmailMessage::open(&a, &sealed), Some(m));
        assert_eq!(EmailMessage::open(&b, &sealed), None);
    }

    #[test]
    fn the_reset_email_has_both_parts_and_the_link() {
        let origin = RequestOrigin {
            ip: "192.0.2.1".into(),
            browser: "Firefox".into(),
            by_admin: false,
        };
        let m = reset_email(
            "https://x.test/reset?token=abc",
            Duration::from_secs(3600),
            &origin,
            "https://x.test/forgot",
        )
        .unwrap();
        assert!(m.text.contains("https://x.test/reset?token=abc"));
        assert!(m.html.contains("https://x.test/reset?token=abc"));
        assert!(m.text.contains("1 hour") && m.text.contains("192.0.2.1"));
    }
}
