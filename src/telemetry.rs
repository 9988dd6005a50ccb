//! Logging. What is never logged: passwords, tokens, cookies, query strings and full
//! email addresses (see `EmailAddress::redacted`). `RUST_LOG` tunes the level.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber (idempotent: a second call does nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}
