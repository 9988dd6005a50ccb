//! The `latchkey` binary: parse the command line, load settings, run.

use std::process::ExitCode;

use clap::Parser;
use latchkey::{cli::Cli, config::Settings, telemetry};

fn main() -> ExitCode {
    // `.env` first, so a RUST_LOG set there reaches the logger.
    let _ = dotenvy::dotenv();
    let _log_writer = telemetry::init();
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("latchkey: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let code = actix_web::rt::System::new().block_on(latchkey::cli::run(cli, settings));
    ExitCode::from(code)
}
