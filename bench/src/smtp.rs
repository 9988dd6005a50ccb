//! The SMTP servers the mail benchmarks deliver to, each recording when it accepted a
//! message and for whom:
//!
//! - **aiosmtpd** (`scripts/smtp_sink.py`, a separate Python process, installed by
//!   `scripts/bench-mail`): an SMTP server that is not ours, slow enough (~600 messages/s
//!   from one client here) that its rate is steady, and the one the outside review used;
//! - **in-process**: a minimal tokio server in the benchmark itself, for when the SMTP
//!   server must not be the bottleneck (it swings between 3 000 and 23 000 messages/s from
//!   run to run on this machine, so it makes a poor baseline).

use std::{
    collections::HashMap,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One accepted message.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub at: Instant,
    pub to: String,
}

/// An SMTP server on loopback and what it has accepted so far.
pub struct SmtpSink {
    pub port: u16,
    pub name: &'static str,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    /// The in-process server's last message to each recipient, as sent.
    last: Arc<Mutex<HashMap<String, String>>>,
    /// The aiosmtpd process (killed on drop).
    _child: Option<tokio::process::Child>,
}

impl SmtpSink {
    /// aiosmtpd, run by `python` (the benchmark's virtual environment) from `script`.
    pub async fn aiosmtpd(python: &Path, script: &Path) -> anyhow::Result<Self> {
        let port = super::free_port()?;
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {} {}", python.display(), script.display()))?;
        let stdout = child.stdout.take().context("aiosmtpd's output")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("aiosmtpd did not start within 20 s")??;
        if first.as_deref() != Some("ready") {
            bail!("aiosmtpd did not start: {first:?}");
        }
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let at = Instant::now();
                record.lock().unwrap().push(Accepted { at, to: line });
            }
        });
        Ok(Self {
            port,
            name: "aiosmtpd 1.4.6 (Python, separate process)",
            accepted,
            last: Arc::default(),
            _child: Some(child),
        })
    }

    /// aiosmtpd run by `python` when given (the script `scripts/bench-mail` passes its
    /// virtual environment's), else the server in this process.
    pub async fn start(python: Option<&Path>) -> anyhow::Result<Self> {
        match python {
            Some(python) => Self::aiosmtpd(python, Path::new("scripts/smtp_sink.py")).await,
            None => Self::in_process().await,
        }
    }

    /// A minimal SMTP server in this process.
    pub async fn in_process() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let last = Arc::new(Mutex::new(HashMap::new()));
        let (record, keep) = (Arc::clone(&accepted), Arc::clone(&last));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (record, keep) = (Arc::clone(&record), Arc::clone(&keep));
                tokio::spawn(async move {
                    let _ = serve(socket, record, keep).await;
                });
            }
        });
        Ok(Self {
            port,
            name: "in-process tokio sink",
            accepted,
            last,
            _child: None,
        })
    }

    pub fn count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// Everything accepted so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }

    /// When a message to `to` was first accepted, if one was.
    pub fn accepted_for(&self, to: &str) -> Option<Instant> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.to == to)
            .map(|a| a.at)
    }

    /// The last message the in-process server accepted for `to` (raw, as sent).
    pub fn last_message_to(&self, to: &str) -> Option<String> {
        self.last.lock().unwrap().get(to).cloned()
    }

    /// Messages per second between the `from`-th accepted message and the last one so far.
    pub fn rate_since(&self, from: usize) -> f64 {
        let accepted = self.accepted.lock().unwrap();
        let (first, last) = (accepted[from].at, accepted[accepted.len() - 1].at);
        (accepted.len() - from - 1) as f64 / (last - first).as_secs_f64()
    }
}

/// One SMTP session of the in-process server.
async fn serve(
    socket: tokio::net::TcpStream,
    record: Arc<Mutex<Vec<Accepted>>>,
    keep: Arc<Mutex<HashMap<String, String>>>,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut line = String::new();
    let mut to = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.trim_end().to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            write.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to = line.trim_end()[8..]
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut message = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                message.push_str(&line);
            }
            keep.lock().unwrap().insert(to.clone(), message);
            let at = Instant::now();
            record.lock().unwrap().push(Accepted {
                at,
                to: std::mem::take(&mut to),
            });
            write.write_all(b"250 queued\r\n").await?;
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 OK\r\n").await?;
        }
    }
}
