//! The command line: `serve` (the default), `migrate`, `user create`, `user promote`.

use clap::{Parser, Subcommand};

use crate::{
    config::Settings,
    domain::{EmailAddress, NewPassword},
    services::accounts::SignUpProblem,
    startup::{Application, build_parts},
};

/// Latchkey: a self-hostable account service with account recovery by email.
/// Configuration comes from the environment (and a `.env` file); see the README.
#[derive(Parser, Debug)]
#[command(name = "latchkey", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account. Without --password-stdin it gets no usable password: its owner
    /// sets one through "Forgot your password?".
    Create {
        #[arg(long)]
        email: String,
        /// Make the account an admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Make an existing account an admin.
    Promote {
        /// The account's email address.
        email: String,
    },
}

/// Runs a parsed command; returns the process exit code.
pub async fn run(cli: Cli, settings: Settings) -> u8 {
    match execute(cli, settings).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("latchkey: {e:#}");
            1
        }
    }
}

async fn execute(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            build_parts(settings).await?;
            println!("Migrations applied.");
            Ok(())
        }
        Command::User(UserCommand::Create {
            email,
            admin,
            password_stdin,
        }) => {
            let email = EmailAddress::parse(&email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
            let parts = build_parts(settings).await?;
            let services = parts.services;
            let (password, usable) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                let line = line.trim_end_matches(['\r', '\n']).to_owned();
                (line, true)
            } else {
                // 96 random bytes are 128 characters: the longest password allowed, so any
                // PASSWORD_MIN_LENGTH accepts it.
                (crate::crypto::random_token_string(96), false)
            };
            let password = NewPassword::parse(&password, None, services.policy())
                .map_err(|p| anyhow::anyhow!("password: {p}"))?;
            match services
                .sign_up(email.clone(), password, admin, None)
                .await?
            {
                Ok(user) => {
                    let role = if admin { "admin" } else { "user" };
                    println!(
                        "Created {role} account #{} for {}.",
                        user.id,
                        email.as_str()
                    );
                    if !usable {
                        println!("It has no usable password yet: its owner sets one at /forgot.");
                    }
                    Ok(())
                }
                Err(SignUpProblem::EmailTaken) => {
                    anyhow::bail!("an account with that email already exists")
                }
                Err(SignUpProblem::Password(p)) => anyhow::bail!("password: {p}"),
            }
        }
        Command::User(UserCommand::Promote { email }) => {
            let email = EmailAddress::parse(&email).map_err(|e| anyhow::anyhow!("email: {e}"))?;
            let parts = build_parts(settings).await?;
            if parts.services.promote(email.clone()).await? {
                println!("{} is now an admin.", email.as_str());
                Ok(())
            } else {
                anyhow::bail!("no account with that email")
            }
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let dev = settings.dev_mailbox();
    let base = settings.base_url.clone();
    let addr = settings.listen_addr;
    let app = Application::build(settings).await?;
    if dev {
        tracing::warn!(
            "SMTP_URL is not set: emails go to the dev mailbox, not to their recipients"
        );
        println!(
            "Latchkey is listening on http://{addr} ({base}); no SMTP_URL, so emails appear at {base}dev/mail"
        );
    } else {
        println!("Latchkey is listening on http://{addr} ({base})");
    }
    app.run_until_stopped().await?;
    Ok(())
}
