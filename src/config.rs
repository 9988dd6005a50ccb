//! Typed settings read from the environment (and a `.env` file, if present).
//!
//! Every variable of SPEC §3 is parsed here, once, at start-up. A bad value stops the
//! process with one line naming the variable and the fix, so operators never chase a
//! half-configured server. Secrets are wrapped in [`Secret`] so `Debug` never prints them.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use url::Url;

/// A value that must never be printed: its `Debug` and `Display` show `[redacted]`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The database the server talks to, picked from the scheme of `DATABASE_URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`: an embedded database file.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, kept whole for libpq (it may hold a password).
    Postgres(Secret),
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Secret {}

impl DatabaseUrl {
    /// Parses `sqlite://PATH`, `sqlite:PATH` or `postgres(ql)://…`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(Secret::new(raw.to_owned())));
        }
        let path = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
            .ok_or_else(|| "must start with sqlite:// or postgres://".to_owned())?;
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://latchkey.db".to_owned());
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

/// argon2id cost parameters (SPEC §8 defaults: m=19456 KiB, t=2, p=1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// A per-client limit: at most `max` requests per `window` (SPEC §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u32,
    pub window: Duration,
}

impl RateLimit {
    /// The SPEC §9 default for every group: 20 requests per 10 minutes.
    pub const DEFAULT: RateLimit = RateLimit {
        max: 20,
        window: Duration::from_secs(600),
    };

    /// Sign-ups: 10 an hour (SPEC §3).
    pub const SIGNUP: RateLimit = RateLimit {
        max: 10,
        window: Duration::from_secs(3600),
    };

    /// Current-password checks on the account page: 10 per 10 minutes (SPEC §3).
    pub const ACCOUNT: RateLimit = RateLimit {
        max: 10,
        window: Duration::from_secs(600),
    };
}

/// The per-client limits, one per group of endpoints; `None` turns a group's limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// `POST /forgot` and `POST /auth/forgot`, counted together.
    pub forgot: Option<RateLimit>,
    /// `POST /login`.
    pub login: Option<RateLimit>,
    /// `POST /reset` and `POST /auth/reset`, counted together.
    pub reset: Option<RateLimit>,
    /// `POST /signup`: each one costs a strength check and a hash.
    pub signup: Option<RateLimit>,
    /// `POST /account/password`: each one checks the current password (a guess at it,
    /// for someone holding a stolen session).
    pub account: Option<RateLimit>,
}

/// Where outgoing mail goes.
#[derive(Clone, Debug)]
pub enum MailTransportConfig {
    /// A real SMTP server, as a lettre URL.
    Smtp(Secret),
    /// No `SMTP_URL`: mail is kept in memory and shown at `/dev/mail`.
    DevMailbox,
}

/// Every setting the server needs, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    pub listen_addr: SocketAddr,
    pub base_url: Url,
    pub mail: MailTransportConfig,
    pub mail_from: String,
    pub secret_key: Secret,
    /// The key being rotated out: still accepted for everything signed or hashed before the
    /// rotation (sessions, CSRF tokens, reset links, queued mail), never used for new values.
    pub secret_key_previous: Option<Secret>,
    pub reset_token_ttl: Duration,
    pub password_min_length: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub reset_cooldown: Duration,
    /// How many reset emails one address may receive in 24 hours.
    pub reset_daily_cap: u32,
    pub hash_params: HashParams,
    /// Threads hashing passwords at once (defaults to the number of cores).
    pub hash_threads: usize,
    /// Hash jobs allowed to wait for a thread before the server answers 503.
    pub hash_queue: usize,
    /// Connections in the database pool.
    pub db_pool_size: u32,
    /// How long a signed-in session lives, counted from sign-in (an absolute timeout:
    /// activity does not extend it, so a stolen cookie cannot be kept alive forever).
    pub session_ttl: Duration,
    /// The first retry delay of a failed email; it doubles with each attempt.
    pub mail_retry_base: Duration,
    /// SMTP connections the mail worker keeps open and sends over in parallel.
    pub smtp_connections: usize,
    pub rate_limits: RateLimits,
}

/// A configuration error: the variable, what is wrong, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn bad(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

/// Durations are capped at a hundred years, where time arithmetic stays exact.
const CENTURY_SECS: u64 = 100 * 365 * 24 * 3600;

/// The minimum length of `SECRET_KEY` (SPEC §3).
pub const SECRET_KEY_MIN_LEN: usize = 64;

impl Settings {
    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any lookup function; tests pass a map instead of the environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());

        let database_url = DatabaseUrl::parse(
            &var("DATABASE_URL").unwrap_or_else(|| "sqlite://latchkey.db".to_owned()),
        )
        .map_err(|e| bad("DATABASE_URL", e))?;

        let listen_raw = var("LISTEN_ADDR").unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen_addr: SocketAddr = listen_raw.trim().parse().map_err(|_| {
            bad(
                "LISTEN_ADDR",
                format!("'{listen_raw}' is not HOST:PORT with an IP address, e.g. 127.0.0.1:8080"),
            )
        })?;

        let base_raw = var("BASE_URL").unwrap_or_else(|| format!("http://{listen_addr}"));
        let base_url = parse_base_url(&base_raw)?;

        let mail = match var("SMTP_URL") {
            Some(url) => {
                crate::mail::smtp::SmtpServer::from_url(url.trim()).map_err(|e| {
                    bad(
                        "SMTP_URL",
                        format!("not a valid SMTP URL ({e}); use smtp://user:pass@host:port"),
                    )
                })?;
                MailTransportConfig::Smtp(Secret::new(url.trim().to_owned()))
            }
            None => MailTransportConfig::DevMailbox,
        };

        let mail_from = var("MAIL_FROM").unwrap_or_else(|| "Latchkey <no-reply@localhost>".into());
        mail_from.parse::<lettre::message::Mailbox>().map_err(|_| {
            bad(
                "MAIL_FROM",
                "not a valid mailbox; use 'Name <address@example.com>'",
            )
        })?;

        // The dev conveniences (dev mailbox, generated key) are for a developer's own machine:
        // refused when the server listens publicly *or* is published under a public origin
        // (a loopback listener behind a reverse proxy is still public).
        let loopback = listen_addr.ip().is_loopback() && is_local_origin(&base_url);
        if !loopback && matches!(mail, MailTransportConfig::DevMailbox) {
            return Err(bad(
                "SMTP_URL",
                "required when LISTEN_ADDR or BASE_URL is not a loopback address (the dev mailbox \
                 would show every reset link to anyone); set SMTP_URL=smtp://user:pass@host:port",
            ));
        }

        let secret_key = match var("SECRET_KEY") {
            Some(key) => {
                if key.chars().count() < SECRET_KEY_MIN_LEN {
                    return Err(bad(
                        "SECRET_KEY",
                        format!(
                            "must be at least {SECRET_KEY_MIN_LEN} characters; generate one with \
                             `openssl rand -base64 48`"
                        ),
                    ));
                }
                Secret::new(key)
            }
            None if !loopback => {
                return Err(bad(
                    "SECRET_KEY",
                    "required when LISTEN_ADDR or BASE_URL is not a loopback address; generate \
                     one with `openssl rand -base64 48`",
                ));
            }
            None => dev_secret_key(&database_url)?,
        };

        let secret_key_previous = match var("SECRET_KEY_PREVIOUS") {
            Some(key) if key.chars().count() < SECRET_KEY_MIN_LEN => {
                return Err(bad(
                    "SECRET_KEY_PREVIOUS",
                    format!(
                        "must be the old SECRET_KEY (at least {SECRET_KEY_MIN_LEN} characters)"
                    ),
                ));
            }
            Some(key) if key == secret_key.expose() => {
                return Err(bad(
                    "SECRET_KEY_PREVIOUS",
                    "is the same as SECRET_KEY; set it to the key being replaced",
                ));
            }
            other => other.map(Secret::new),
        };

        // Any value ≥ 1 is accepted (SPEC §3); beyond a century it makes no difference.
        let reset_token_ttl =
            Duration::from_secs(positive(&var, "RESET_TOKEN_TTL_SECS", 3600)?.min(CENTURY_SECS));
        let password_min_length = positive(&var, "PASSWORD_MIN_LENGTH", 15)?;
        if !(8..=128).contains(&password_min_length) {
            return Err(bad(
                "PASSWORD_MIN_LENGTH",
                "must be between 8 and 128 (NIST SP 800-63B-4 asks for at least 8; 15 is the default)",
            ));
        }
        let password_min_length = password_min_length as usize;

        let trusted_proxies = match var("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpNet>().map_err(|_| {
                        bad(
                            "TRUSTED_PROXIES",
                            format!("'{s}' is not a CIDR; use e.g. 127.0.0.1/32,::1/128"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };

        let reset_cooldown = Duration::from_secs(non_negative(&var, "RESET_COOLDOWN_SECS", 60)?);
        let reset_daily_cap = positive(&var, "RESET_DAILY_CAP", 5)? as u32;

        let defaults = HashParams::default();
        let hash_params = HashParams {
            memory_kib: positive(&var, "ARGON2_MEMORY_KIB", defaults.memory_kib.into())? as u32,
            iterations: positive(&var, "ARGON2_ITERATIONS", defaults.iterations.into())? as u32,
            parallelism: positive(&var, "ARGON2_PARALLELISM", defaults.parallelism.into())? as u32,
        };
        argon2::Params::new(
            hash_params.memory_kib,
            hash_params.iterations,
            hash_params.parallelism,
            Some(32),
        )
        .map_err(|e| {
            bad(
                "ARGON2_MEMORY_KIB",
                format!("argon2 rejects these parameters: {e}"),
            )
        })?;

        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hash_threads = positive(&var, "HASH_THREADS", cores as u64)? as usize;
        let hash_queue = non_negative(&var, "HASH_QUEUE", 64)? as usize;
        let db_pool_size = positive(&var, "DATABASE_POOL_SIZE", 10)? as u32;
        let session_ttl = Duration::from_secs(
            positive(&var, "SESSION_TTL_SECS", 14 * 24 * 3600)?.min(CENTURY_SECS),
        );
        let smtp_connections = positive(&var, "SMTP_CONNECTIONS", 4)?.min(64) as usize;
        let mail_retry_base =
            Duration::from_secs(positive(&var, "MAIL_RETRY_BASE_SECS", 5)?.min(3600));
        let rate_limits = RateLimits {
            forgot: rate_limit(&var, "RATE_LIMIT_FORGOT", RateLimit::DEFAULT)?,
            login: rate_limit(&var, "RATE_LIMIT_LOGIN", RateLimit::DEFAULT)?,
            reset: rate_limit(&var, "RATE_LIMIT_RESET", RateLimit::DEFAULT)?,
            signup: rate_limit(&var, "RATE_LIMIT_SIGNUP", RateLimit::SIGNUP)?,
            account: rate_limit(&var, "RATE_LIMIT_ACCOUNT", RateLimit::ACCOUNT)?,
        };

        Ok(Self {
            database_url,
            listen_addr,
            base_url,
            mail,
            mail_from,
            secret_key,
            secret_key_previous,
            reset_token_ttl,
            password_min_length,
            trusted_proxies,
            reset_cooldown,
            reset_daily_cap,
            hash_params,
            hash_threads,
            hash_queue,
            db_pool_size,
            session_ttl,
            mail_retry_base,
            smtp_connections,
            rate_limits,
        })
    }

    /// True when pages are served over https (cookies get `Secure`, responses get HSTS).
    pub fn is_https(&self) -> bool {
        self.base_url.scheme() == "https"
    }

    /// Whether the in-memory dev mailbox is in use.
    pub fn dev_mailbox(&self) -> bool {
        matches!(self.mail, MailTransportConfig::DevMailbox)
    }
}

fn parse_base_url(raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|_| {
        bad(
            "BASE_URL",
            format!("'{raw}' is not an absolute URL; use e.g. https://accounts.example.com"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("BASE_URL", "must be an http:// or https:// origin"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("BASE_URL", "must not have a query or fragment"));
    }
    if url.path() != "/" {
        // Pages, redirects and cookies all live at the root of the origin.
        return Err(bad(
            "BASE_URL",
            "must be an origin without a path, e.g. https://accounts.example.com",
        ));
    }
    Ok(url)
}

fn is_local_origin(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Reads a limit written `MAX/SECONDS` (`20/600`: 20 requests per 10 minutes), or `off`.
fn rate_limit(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: RateLimit,
) -> Result<Option<RateLimit>, ConfigError> {
    let Some(raw) = var(name) else {
        return Ok(Some(default));
    };
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let parsed = raw.split_once('/').and_then(|(max, secs)| {
        let max = max.trim().parse::<u32>().ok().filter(|m| *m >= 1)?;
        let secs = secs.trim().parse::<u64>().ok().filter(|s| *s >= 1)?;
        Some(RateLimit {
            max,
            // A week is the longest window: counters live two windows.
            window: Duration::from_secs(secs.min(7 * 86_400)),
        })
    });
    parsed.map(Some).ok_or_else(|| {
        bad(
            name,
            format!(
                "'{raw}' is not MAX/SECONDS (e.g. 20/600 for 20 requests per 10 minutes) or 'off'"
            ),
        )
    })
}

fn positive(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
) -> Result<u64, ConfigError> {
    let value = non_negative(var, name, default)?;
    if value == 0 {
        return Err(bad(name, "must be a whole number of at least 1"));
    }
    Ok(value)
}

fn non_negative(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
) -> Result<u64, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse::<u64>().map_err(|_| {
            bad(
                name,
                format!("'{raw}' is not a whole number; default is {default}"),
            )
        }),
    }
}

/// In development the secret key is generated once and kept in a file next to the
/// database, so sessions and reset links survive a restart.
fn dev_secret_key(db: &DatabaseUrl) -> Result<Secret, ConfigError> {
    let path = match db {
        DatabaseUrl::Sqlite(path) => {
            let mut p = path.clone().into_os_string();
            p.push(".secret");
            PathBuf::from(p)
        }
        DatabaseUrl::Postgres(_) => PathBuf::from("latchkey.secret"),
    };
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if existing.len() >= SECRET_KEY_MIN_LEN {
            return Ok(Secret::new(existing));
        }
    }
    let key = crate::crypto::random_token_string(48);
    write_private_file(&path, &key).map_err(|e| {
        bad(
            "SECRET_KEY",
            format!(
                "not set, and the generated key could not be saved to {}: {e}; set SECRET_KEY",
                path.display()
            ),
        )
    })?;
    tracing::warn!(
        file = %path.display(),
        "SECRET_KEY is not set: generated a development key and saved it next to the database; \
         set SECRET_KEY in production"
    );
    Ok(Secret::new(key))
}

fn write_private_file(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut with_key = map.clone();
        with_key
            .entry("SECRET_KEY".into())
            .or_insert_with(|| "k".repeat(64));
        Settings::from_lookup(move |k| with_key.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.base_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(s.reset_token_ttl, Duration::from_secs(3600));
        assert_eq!(s.password_min_length, 15);
        assert_eq!(s.reset_cooldown, Duration::from_secs(60));
        assert!(s.dev_mailbox());
        assert_eq!(s.database_url, DatabaseUrl::Sqlite("latchkey.db".into()));
        let twenty_per_ten_minutes = Some(RateLimit {
            max: 20,
            window: Duration::from_secs(600),
        });
        assert_eq!(s.rate_limits.forgot, twenty_per_ten_minutes);
        assert_eq!(s.rate_limits.login, twenty_per_ten_minutes);
        assert_eq!(s.rate_limits.reset, twenty_per_ten_minutes);
        assert_eq!(s.rate_limits.signup, Some(RateLimit::SIGNUP));
        assert_eq!(s.rate_limits.account, Some(RateLimit::ACCOUNT));
        assert!(s.secret_key_previous.is_none());
    }

    #[test]
    fn rate_limits_read_max_per_seconds_or_off() {
        let s = settings(&[("RATE_LIMIT_LOGIN", "5/60"), ("RATE_LIMIT_RESET", "off")]).unwrap();
        assert_eq!(
            s.rate_limits.login,
            Some(RateLimit {
                max: 5,
                window: Duration::from_secs(60)
            })
        );
        assert_eq!(s.rate_limits.reset, None);
        assert_eq!(s.rate_limits.forgot, Some(RateLimit::DEFAULT));
    }

    #[test]
    fn a_public_listen_address_requires_smtp_and_a_secret_key() {
        let err = settings(&[("LISTEN_ADDR", "0.0.0.0:80")]).unwrap_err();
        assert_eq!(err.var, "SMTP_URL");
        let err = Settings::from_lookup(|k| match k {
            "LISTEN_ADDR" => Some("0.0.0.0:80".into()),
            "SMTP_URL" => Some("smtp://localhost:25".into()),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(err.var, "SECRET_KEY");
    }

    #[test]
    fn a_public_base_url_requires_smtp_even_on_a_loopback_listener() {
        let err = settings(&[("BASE_URL", "https://accounts.example.com")]).unwrap_err();
        assert_eq!(err.var, "SMTP_URL");
        assert!(settings(&[("BASE_URL", "http://localhost:8080")]).is_ok());
    }

    #[test]
    fn huge_lifetimes_are_accepted_and_capped() {
        let s = settings(&[("RESET_TOKEN_TTL_SECS", "10000000000000")]).unwrap();
        assert_eq!(s.reset_token_ttl, Duration::from_secs(CENTURY_SECS));
        assert!(crate::db::now_plus(Duration::from_secs(u64::MAX)) > crate::db::now());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("RESET_TOKEN_TTL_SECS", "0"),
            ("RESET_TOKEN_TTL_SECS", "soon"),
            ("PASSWORD_MIN_LENGTH", "7"),
            ("TRUSTED_PROXIES", "not-a-cidr"),
            ("BASE_URL", "example.com"),
            ("BASE_URL", "http://localhost:8080/auth"),
            ("DATABASE_URL", "mysql://x"),
            ("SECRET_KEY", "short"),
            ("LISTEN_ADDR", "localhost"),
            ("RATE_LIMIT_FORGOT", "20"),
            ("RATE_LIMIT_FORGOT", "0/600"),
            ("RATE_LIMIT_LOGIN", "20/0"),
            ("RATE_LIMIT_RESET", "lots/minute"),
            ("SECRET_KEY_PREVIOUS", "short"),
            (
                "SECRET_KEY_PREVIOUS",
                "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
            ),
        ] {
            let err = settings(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{value}");
        }
    }

    #[test]
    fn secrets_are_never_printed() {
        let s = settings(&[("SECRET_KEY", &"s".repeat(70))]).unwrap();
        assert!(!format!("{s:?}").contains("ssssssss"));
    }
}
