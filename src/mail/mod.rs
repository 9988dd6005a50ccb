//! Email: messages rendered from askama templates, the transports that deliver them
//! (SMTP, or the in-memory dev mailbox), and the outbox worker.

pub mod message;
pub mod smtp;
pub mod transport;
pub mod worker;

pub use message::EmailMessage;
pub use transport::{DevMailbox, Transport};
