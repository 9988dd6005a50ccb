//! SMTP connections of our own, kept open and reused, with `TCP_NODELAY`.
//!
//! lettre's pooled transport writes a message's body and its closing `.` in two writes
//! and then waits for the reply: with Nagle's algorithm on (lettre never turns it off),
//! the second write waits for the server's delayed ACK, about 40 ms, so one connection
//! delivered ~20 emails a second however fast the server was. Here the socket is made by
//! us, with `TCP_NODELAY`, and handed to lettre's connection, which still speaks SMTP,
//! STARTTLS and AUTH. Up to `SMTP_CONNECTIONS` idle connections are kept for reuse.
//!
//! The `SMTP_URL` forms are lettre's: `smtp://host:port` (plain), `?tls=required` or
//! `?tls=opportunistic` (STARTTLS), `smtps://` (TLS from the first byte: lettre opens
//! that socket itself, so without `TCP_NODELAY`), `user:pass@` for AUTH, and a path
//! naming the EHLO host.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lettre::transport::smtp::{
    authentication::{Credentials, Mechanism},
    client::{AsyncSmtpConnection, TlsParameters},
    extension::ClientId,
};

/// How long one SMTP command or connection attempt may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// An idle connection older than this is checked with NOOP before reuse (servers close
/// idle connections after a while).
const FRESH: Duration = Duration::from_secs(10);

/// Why a delivery failed, for the outbox's `last_error` (never the body, no addresses).
#[derive(Debug, Clone)]
pub struct SendError {
    /// The server refused for good (a 5xx reply): retrying will not help.
    pub permanent: bool,
    /// The server answered (rather than the connection failing).
    pub replied: bool,
    pub text: String,
}

impl SendError {
    /// A failure before any reply: transient, retried with backoff.
    pub fn local(text: impl Into<String>) -> Self {
        Self {
            permanent: false,
            replied: false,
            text: text.into(),
        }
    }

    fn from_smtp(e: &lettre::transport::smtp::Error) -> Self {
        Self {
            permanent: e.is_permanent(),
            replied: e.status().is_some(),
            text: describe(e),
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

/// How the connection is secured.
#[derive(Clone)]
enum Security {
    Plain,
    StartTls {
        params: TlsParameters,
        required: bool,
    },
    Wrapper(TlsParameters),
}

/// Where mail goes, from `SMTP_URL`.
#[derive(Clone)]
pub struct SmtpServer {
    host: String,
    port: u16,
    security: Security,
    hello: ClientId,
    credentials: Option<Credentials>,
}

impl SmtpServer {
    /// Reads an `SMTP_URL` (the forms lettre's `from_url` takes).
    pub fn from_url(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|e| e.to_string())?;
        let host = url.host_str().ok_or("no host")?.to_owned();
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let params = || TlsParameters::new(host.clone()).map_err(|e| e.to_string());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some(mode @ ("required" | "opportunistic"))) => (
                Security::StartTls {
                    params: params()?,
                    required: mode == "required",
                },
                587,
            ),
            ("smtps", _) => (Security::Wrapper(params()?), 465),
            (scheme, tls) => {
                return Err(format!(
                    "unknown scheme '{scheme}' or tls parameter '{}'",
                    tls.unwrap_or_default()
                ));
            }
        };
        let hello = match url.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        let decode = |s: &str| -> Result<String, String> {
            percent_decode(s).ok_or_else(|| "credentials are not UTF-8".to_owned())
        };
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(decode(url.username())?, decode(password)?)),
            None => None,
        };
        Ok(Self {
            port: url.port().unwrap_or(default_port),
            host,
            security,
            hello,
            credentials,
        })
    }

    /// Opens a connection: greeting, EHLO, STARTTLS and AUTH as configured.
    pub async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let mut conn = match &self.security {
            Security::Wrapper(params) => AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(COMMAND_TIMEOUT),
                &self.hello,
                Some(params.clone()),
                None,
            )
            .await
            .map_err(|e| SendError::from_smtp(&e))?,
            Security::Plain | Security::StartTls { .. } => {
                let tcp = tokio::time::timeout(
                    COMMAND_TIMEOUT,
                    tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
                )
                .await
                .map_err(|_| SendError::local("SMTP connection timed out"))?
                .map_err(|e| SendError::local(format!("SMTP connection failed: {e}")))?;
                tcp.set_nodelay(true)
                    .map_err(|e| SendError::local(format!("SMTP connection failed: {e}")))?;
                let mut conn = tokio::time::timeout(
                    COMMAND_TIMEOUT,
                    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello),
                )
                .await
                .map_err(|_| SendError::local("SMTP greeting timed out"))?
                .map_err(|e| SendError::from_smtp(&e))?;
                if let Security::StartTls { params, required } = &self.security
                    && (*required || conn.can_starttls())
                {
                    conn.starttls(params.clone(), &self.hello)
                        .await
                        .map_err(|e| SendError::from_smtp(&e))?;
                }
                conn
            }
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| SendError::from_smtp(&e))?;
        }
        Ok(conn)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// Idle connections to one server, reused by the sends that follow.
#[derive(Clone)]
pub struct SmtpPool {
    server: Arc<SmtpServer>,
    idle: Arc<Mutex<Vec<(AsyncSmtpConnection, Instant)>>>,
    max_idle: usize,
}

impl SmtpPool {
    pub fn new(server: SmtpServer, max_idle: usize) -> Self {
        Self {
            server: Arc::new(server),
            idle: Arc::default(),
            max_idle: max_idle.max(1),
        }
    }

    fn take_idle(&self) -> Option<(AsyncSmtpConnection, Instant)> {
        self.idle.lock().ok()?.pop()
    }

    fn give_back(&self, conn: AsyncSmtpConnection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push((conn, Instant::now()));
        }
    }

    /// Sends one message (`envelope`, `raw` RFC 5322 bytes). A reused connection that
    /// turns out to be closed (a network error before any reply) is replaced by a fresh
    /// one at once, so a server's idle timeout never costs a retry with backoff.
    pub async fn send(
        &self,
        envelope: &lettre::address::Envelope,
        raw: &[u8],
    ) -> Result<(), SendError> {
        if let Some((mut conn, since)) = self.take_idle() {
            let alive = since.elapsed() < FRESH || conn.test_connected().await;
            if alive {
                match self.send_on(&mut conn, envelope, raw).await {
                    Ok(()) => {
                        self.give_back(conn);
                        return Ok(());
                    }
                    // A reply from the server: it is what it is, on any connection.
                    Err(e) if e.replied => return Err(e),
                    Err(_) => {} // the connection broke: try a fresh one below
                }
            }
        }
        let mut conn = self.server.connect().await?;
        self.send_on(&mut conn, envelope, raw).await?;
        self.give_back(conn);
        Ok(())
    }

    async fn send_on(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &lettre::address::Envelope,
        raw: &[u8],
    ) -> Result<(), SendError> {
        tokio::time::timeout(COMMAND_TIMEOUT * 4, conn.send(envelope, raw))
            .await
            .map_err(|_| SendError::local("SMTP timeout: the server did not answer in time"))?
            .map(|_| ())
            .map_err(|e| SendError::from_smtp(&e))
    }

    /// Says goodbye on every idle connection.
    pub async fn shutdown(&self) {
        let idle: Vec<_> = self
            .idle
            .lock()
            .map(|mut idle| idle.drain(..).collect())
            .unwrap_or_default();
        for (mut conn, _) in idle {
            let _ = conn.quit().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_never_reach_an_error_message() {
        let t = redact_addresses("550 5.1.1 <bob@example.com>: Recipient address rejected");
        assert_eq!(t, "550 5.1.1 [address] Recipient address rejected");
    }

    #[test]
    fn urls_read_like_lettres() {
        let s = SmtpServer::from_url("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 2525));
        assert!(matches!(s.security, Security::Plain) && s.credentials.is_none());
        let s = SmtpServer::from_url("smtp://u%40x:p%20w@mail.example.com?tls=required").unwrap();
        assert_eq!(s.port, 587);
        assert!(matches!(
            s.security,
            Security::StartTls { required: true, .. }
        ));
        assert!(s.credentials.is_some());
        let s = SmtpServer::from_url("smtps://mail.example.com/client.example").unwrap();
        assert_eq!(s.port, 465);
        assert!(matches!(s.hello, ClientId::Domain(ref d) if d == "client.example"));
        assert!(SmtpServer::from_url("http://mail.example.com").is_err());
        assert!(SmtpServer::from_url("smtp://mail.example.com?tls=sometimes").is_err());
        assert_eq!(percent_decode("p%20w%40").as_deref(), Some("p w@"));
    }
}
