//! Seed data, written through the crate's own storage functions so that both backends
//! get exactly what the server itself would write.
//!
//! One account is made by the CLI, so its password hash is a real one at the server's
//! parameters; every other account copies that hash (hashing thousands of passwords would
//! take minutes). Accounts `reg1…` receive the registered forgot requests; the others each
//! hold one live reset token, minted as the worker mints them: a random 43-character token,
//! stored under the server's keyed hash (the benchmark knows `SECRET_KEY`: it set it).
//! A reset revokes all of its account's other tokens, so no two reset tokens share an
//! account.

use std::{path::Path, time::Duration};

use anyhow::Context;
use chrono::NaiveDateTime;
use latchkey::{
    crypto::{Keys, random_token_string},
    db::{self, DbPool, reset_tokens, users},
};

use crate::{
    load::LoadConfig,
    support::{LOGIN_EMAIL, create_login_account},
};

/// Accounts `reg1@bench.test` … that the registered forgot requests cycle through.
pub const FORGOT_ACCOUNTS: usize = 2000;
/// Live links opened round-robin by the link scenario (opening does not consume them).
const LINK_TOKENS: usize = 1000;
/// Resets per second each reset scenario is given tokens for, at the least; more when
/// the machine hashes faster (see [`Plan::new`]).
const MIN_RESETS_PER_SECOND: f64 = 250.0;
/// Tokens to spare beyond the expected number of resets.
const SPARE_TOKENS: usize = 500;
/// Accounts written per transaction.
const BATCH: usize = 1000;
/// Seeded tokens outlive any run.
const TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

/// How many single-use tokens each reset scenario gets.
pub struct Plan {
    resets: usize,
}

impl Plan {
    /// Enough for the scenario's warm-up and measurement at 1.5 × the machine's argon2
    /// rate (no reset can be faster than its hash), but never fewer than 250 a second.
    pub fn new(config: &LoadConfig, hashes_per_second: f64) -> Self {
        let seconds = (config.warmup + config.measure).as_secs_f64();
        let per_second = (1.5 * hashes_per_second).max(MIN_RESETS_PER_SECOND);
        Self {
            resets: (per_second * seconds).ceil() as usize + SPARE_TOKENS,
        }
    }
}

/// The tokens the scenarios use, by scenario.
pub struct Seeded {
    /// How many `reg<i>@bench.test` accounts there are.
    pub forgot_accounts: usize,
    pub link_tokens: Vec<String>,
    pub api_tokens: Vec<String>,
    pub form_tokens: Vec<String>,
    pub storm_tokens: Vec<String>,
}

/// One account to create, with the keyed hash of its token if it gets one.
struct Account {
    email: String,
    token_hash: Option<Vec<u8>>,
}

/// Creates the accounts and tokens. `env` is the server's environment (the CLI needs it).
pub async fn seed(
    pool: &DbPool,
    server: &Path,
    env: &[(&'static str, String)],
    keys: &Keys,
    plan: &Plan,
) -> anyhow::Result<Seeded> {
    create_login_account(server, env)?;
    let password_hash = db::run(pool, |c| users::find_by_email(c, LOGIN_EMAIL))
        .await?
        .context("the account created by the CLI is missing")?
        .password_hash;
    let mut accounts: Vec<Account> = (1..=FORGOT_ACCOUNTS)
        .map(|i| Account {
            email: format!("reg{i}@bench.test"),
            token_hash: None,
        })
        .collect();
    let seeded = Seeded {
        forgot_accounts: FORGOT_ACCOUNTS,
        link_tokens: with_tokens(&mut accounts, "link", LINK_TOKENS, keys),
        api_tokens: with_tokens(&mut accounts, "apireset", plan.resets, keys),
        form_tokens: with_tokens(&mut accounts, "formreset", plan.resets, keys),
        storm_tokens: with_tokens(&mut accounts, "storm", plan.resets, keys),
    };
    eprintln!(
        "  seeding {} accounts, {} of them with a live reset link",
        accounts.len() + 1,
        accounts.len() - FORGOT_ACCOUNTS
    );
    let expires_at = db::now_plus(TOKEN_LIFETIME);
    let mut accounts = accounts.into_iter();
    loop {
        let batch: Vec<Account> = accounts.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            return Ok(seeded);
        }
        insert(pool, &password_hash, batch, expires_at).await?;
    }
}

/// Adds `n` accounts `<role><i>@bench.test`, each with a fresh token; returns the tokens.
fn with_tokens(accounts: &mut Vec<Account>, role: &str, n: usize, keys: &Keys) -> Vec<String> {
    (1..=n)
        .map(|i| {
            let token = random_token_string(32);
            accounts.push(Account {
                email: format!("{role}{i}@bench.test"),
                token_hash: Some(keys.token_hash(&token)),
            });
            token
        })
        .collect()
}

/// Writes one batch of accounts (and their tokens) in one write transaction.
async fn insert(
    pool: &DbPool,
    password_hash: &str,
    batch: Vec<Account>,
    expires_at: NaiveDateTime,
) -> anyhow::Result<()> {
    let password_hash = password_hash.to_owned();
    db::run(pool, move |c| {
        db::write_transaction(c, |c| {
            for account in &batch {
                let user = users::insert(c, &account.email, &password_hash, false)?;
                if let Some(token_hash) = &account.token_hash {
                    reset_tokens::insert(c, user.id, token_hash, &account.email, expires_at)?;
                }
            }
            Ok(())
        })
    })
    .await?;
    Ok(())
}
