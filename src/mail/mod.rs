//! Email: messages rendered from askama templates, the transports that deliver them
//! (SMTP, or the in-memory dev mailbox). The outbox worker that drives them is in `jobs`.

pub mod message;
pub mod smtp;
pub mod transport;

pub use message::EmailMessage;
pub use transport::{DevMailbox, Transport};
