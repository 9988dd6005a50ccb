//! Delivery: lettre's async SMTP transport, or the in-memory dev mailbox.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    message::{Mailbox, MultiPart},
};

use super::EmailMessage;

/// How many messages the dev mailbox keeps.
const DEV_MAILBOX_CAPACITY: usize = 100;

/// A message kept by the dev mailbox.
#[derive(Debug, Clone)]
pub struct DevMail {
    pub to: String,
    pub sent_at: chrono::NaiveDateTime,
    pub message: EmailMessage,
}

/// The dev mailbox: in memory, newest first, only when `SMTP_URL` is unset.
#[derive(Clone, Default)]
pub struct DevMailbox(Arc<Mutex<VecDeque<DevMail>>>);

impl DevMailbox {
    fn push(&self, mail: DevMail) {
        if let Ok(mut q) = self.0.lock() {
            q.push_front(mail);
            q.truncate(DEV_MAILBOX_CAPACITY);
        }
    }

    /// Every kept message, newest first.
    pub fn list(&self) -> Vec<DevMail> {
        self.0
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Why a delivery failed, for the outbox's `last_error` (never the body, no addresses).
#[derive(Debug, Clone)]
pub struct SendError {
    /// The server refused for good (a 5xx reply): retrying will not help.
    pub permanent: bool,
    pub text: String,
}

impl SendError {
    fn local(text: String) -> Self {
        Self {
            permanent: false,
            text,
        }
    }
}

/// Where mail goes.
#[derive(Clone)]
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Dev(DevMailbox),
}

impl Transport {
    /// An SMTP transport from a lettre URL (`smtp://`, `?tls=required`, `smtps://`).
    pub fn smtp(url: &str) -> Result<Self, lettre::transport::smtp::Error> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
            .timeout(Some(std::time::Duration::from_secs(15)))
            .build();
        Ok(Self::Smtp(transport))
    }

    /// Delivers one message under `message_id` (`<…@…>`, the same for every attempt, so
    /// a receiver can tell a retry from a new email).
    pub async fn send(
        &self,
        from: &Mailbox,
        to: &str,
        message: &EmailMessage,
        message_id: &str,
    ) -> Result<(), SendError> {
        match self {
            Self::Dev(mailbox) => {
                mailbox.push(DevMail {
                    to: to.to_owned(),
                    sent_at: crate::db::now(),
                    message: message.clone(),
                });
                Ok(())
            }
            Self::Smtp(transport) => {
                let to: Mailbox = to
                    .parse()
                    .map_err(|e| SendError::local(format!("bad recipient: {e}")))?;
                // lettre adds `Date` itself.
                let email = lettre::Message::builder()
                    .from(from.clone())
                    .to(to)
                    .message_id(Some(message_id.to_owned()))
                    .subject(&message.subject)
                    .multipart(MultiPart::alternative_plain_html(
                        message.text.clone(),
                        message.html.clone(),
                    ))
                    .map_err(|e| SendError::local(format!("could not build message: {e}")))?;
                transport
                    .send(email)
                    .await
                    .map(|_| ())
                    .map_err(|e| SendError {
                        permanent: e.is_permanent(),
                        text: describe(&e),
                    })
            }
        }
    }
}

/// An SMTP failure in words fit for logs and the outbox: the reply code and the server's
/// text with every address blanked out (a rejection usually quotes the recipient).
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let kind = if e.is_transient() {
        "temporary failure"
    } else if e.is_permanent() {
        "permanent failure"
    } else if e.is_timeout() {
        "timeout"
    } else {
        "error"
    };
    let code = e.status().map(|c| format!(" {c}")).unwrap_or_default();
    format!("SMTP {kind}{code}: {}", redact_addresses(&e.to_string()))
}

/// Replaces every word holding an `@` with `[address]`.
pub fn redact_addresses(text: &str) -> String {
    text.split(' ')
        .map(|w| if w.contains('@') { "[address]" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_never_reach_an_error_message() {
        let t = redact_addresses("550 5.1.1 <bob@example.com>: Recipient address rejected");
        assert_eq!(t, "550 5.1.1 [address] Recipient address rejected");
    }
}
