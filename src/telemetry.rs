//! Logging. What is never logged: passwords, tokens, cookies, query strings and full
//! email addresses (see `EmailAddress::redacted`). `RUST_LOG` tunes the level.
//!
//! Lines are handed to a dedicated writer thread: a write to standard error can block
//! (a full pipe, a slow journal), and it must never block an async worker. When the
//! writer falls behind by more than its buffer, lines are dropped rather than waited for.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber. Keep the guard until the process ends: dropping it
/// flushes the lines still buffered. (A second call installs nothing.)
pub fn init() -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let _ = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer)
        .try_init();
    guard
}
