//! Delivery: lettre's async SMTP transport, or the in-memory dev mailbox.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use lettre::message::{Mailbox, MultiPart};

use super::{
    EmailMessage,
    smtp::{SmtpPool, SmtpServer},
};

pub use super::smtp::SendError;

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

/// Where mail goes.
#[derive(Clone)]
pub enum Transport {
    Smtp(SmtpPool),
    Dev(DevMailbox),
}

impl Transport {
    /// An SMTP transport from a lettre-style URL (`smtp://`, `?tls=required`, `smtps://`)
    /// keeping up to `connections` connections open.
    pub fn smtp(url: &str, connections: usize) -> Result<Self, String> {
        Ok(Self::Smtp(SmtpPool::new(
            SmtpServer::from_url(url)?,
            connections,
        )))
    }

    /// Closes idle SMTP connections politely (at shutdown).
    pub async fn shutdown(&self) {
        if let Self::Smtp(pool) = self {
            pool.shutdown().await;
        }
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
            Self::Smtp(pool) => {
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
                pool.send(email.envelope(), &email.formatted()).await
            }
        }
    }
}
