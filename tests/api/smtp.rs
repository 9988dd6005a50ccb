//! A real SMTP server on loopback that accepts every message and keeps it, so tests see
//! mail exactly as it travelled over the wire (headers, MIME parts, encodings).

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::{Mutex, Notify},
};

/// One message as received.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub envelope_from: String,
    pub envelope_to: Vec<String>,
    pub raw: String,
}

/// A parsed message.
#[derive(Debug, Clone)]
pub struct Email {
    pub envelope_from: String,
    pub envelope_to: Vec<String>,
    pub raw: String,
    pub subject: String,
    pub to: String,
    pub from: String,
    pub content_type: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
    pub date: String,
}

impl Email {
    fn parse(mail: &ReceivedMail) -> Email {
        let parsed = mailparse::parse_mail(mail.raw.as_bytes()).expect("the message is valid MIME");
        let header = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.get_key().eq_ignore_ascii_case(name))
                .map(|h| h.get_value())
                .unwrap_or_default()
        };
        let mut text = String::new();
        let mut html = String::new();
        fn walk(part: &mailparse::ParsedMail, text: &mut String, html: &mut String) {
            if part.subparts.is_empty() {
                let body = part.get_body().unwrap_or_default();
                match part.ctype.mimetype.as_str() {
                    "text/plain" => text.push_str(&body),
                    "text/html" => html.push_str(&body),
                    _ => {}
                }
            }
            for sub in &part.subparts {
                walk(sub, text, html);
            }
        }
        walk(&parsed, &mut text, &mut html);
        Email {
            envelope_from: mail.envelope_from.clone(),
            envelope_to: mail.envelope_to.clone(),
            raw: mail.raw.clone(),
            subject: header("Subject"),
            to: header("To"),
            from: header("From"),
            content_type: parsed.ctype.mimetype.clone(),
            text,
            html,
            message_id: header("Message-ID"),
            date: header("Date"),
        }
    }

    /// The first link in the text part that starts with `prefix`.
    pub fn link_starting_with(&self, prefix: &str) -> Option<String> {
        self.text
            .split_whitespace()
            .find(|w| w.starts_with(prefix))
            .map(str::to_owned)
    }
}

/// The running sink.
#[derive(Clone)]
pub struct MailSink {
    pub port: u16,
    received: Arc<Mutex<Vec<ReceivedMail>>>,
    arrived: Arc<Notify>,
    /// How many upcoming messages to refuse with a temporary failure (451).
    refuse: Arc<std::sync::atomic::AtomicUsize>,
    /// Messages refused that way, as they came in.
    refused: Arc<Mutex<Vec<ReceivedMail>>>,
    /// Recipients refused for good (550 at `RCPT TO`), as for a mailbox that does not exist.
    unknown: Arc<std::sync::Mutex<Vec<String>>>,
    /// `RCPT TO` commands answered so far (the sender's attempts).
    rcpt_count: Arc<std::sync::atomic::AtomicUsize>,
    /// While set, a received message is kept but not acknowledged (a slow server).
    held: Arc<std::sync::atomic::AtomicBool>,
    released: Arc<Notify>,
}

impl MailSink {
    /// Starts listening on an ephemeral loopback port.
    pub async fn start() -> MailSink {
        Self::start_on(0).await
    }

    /// Starts listening on this loopback port (0: any).
    pub async fn start_on(port: u16) -> MailSink {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind SMTP sink");
        let port = listener.local_addr().unwrap().port();
        let sink = MailSink {
            port,
            received: Arc::default(),
            arrived: Arc::new(Notify::new()),
            refuse: Arc::default(),
            refused: Arc::default(),
            unknown: Arc::default(),
            rcpt_count: Arc::default(),
            held: Arc::default(),
            released: Arc::new(Notify::new()),
        };
        let accepting = sink.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let session = accepting.clone();
                tokio::spawn(async move {
                    let _ = session.serve(socket).await;
                });
            }
        });
        sink
    }

    async fn serve(&self, socket: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
        let (mut from, mut to) = (String::new(), Vec::new());
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_owned();
            let upper = command.to_ascii_uppercase();
            if upper.starts_with("EHLO") {
                write
                    .write_all(b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                    .await?;
            } else if upper.starts_with("HELO") {
                write.write_all(b"250 sink.test\r\n").await?;
            } else if upper.starts_with("MAIL FROM:") {
                from = command[10..].trim().to_owned();
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            } else if upper.starts_with("RCPT TO:") {
                self.rcpt_count
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let rcpt = command[8..].trim().trim_matches(['<', '>']).to_owned();
                if self.unknown.lock().unwrap().contains(&rcpt) {
                    let reply = format!("550 5.1.1 <{rcpt}>: mailbox unavailable\r\n");
                    write.write_all(reply.as_bytes()).await?;
                    continue;
                }
                to.push(rcpt);
                write.write_all(b"250 OK\r\n").await?;
            } else if upper == "DATA" {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut raw = String::new();
                loop {
                    let mut data = String::new();
                    if lines.read_line(&mut data).await? == 0 {
                        return Ok(());
                    }
                    if data == ".\r\n" || data == ".\n" {
                        break;
                    }
                    let data = data
                        .strip_prefix('.')
                        .filter(|d| d.starts_with('.'))
                        .unwrap_or(&data);
                    raw.push_str(data);
                }
                let refuse = self
                    .refuse
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    )
                    .is_ok();
                if refuse {
                    // Real servers quote the recipient, which must not reach logs.
                    let reply = format!("451 4.3.0 <{}>: try again later\r\n", to.join(","));
                    self.refused.lock().await.push(ReceivedMail {
                        envelope_from: from.clone(),
                        envelope_to: std::mem::take(&mut to),
                        raw,
                    });
                    write.write_all(reply.as_bytes()).await?;
                    continue;
                }
                self.received.lock().await.push(ReceivedMail {
                    envelope_from: from.clone(),
                    envelope_to: std::mem::take(&mut to),
                    raw,
                });
                self.arrived.notify_waiters();
                while self.held.load(std::sync::atomic::Ordering::SeqCst) {
                    let released = self.released.notified();
                    if !self.held.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    released.await;
                }
                write.write_all(b"250 OK queued\r\n").await?;
            } else if upper == "QUIT" {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else if upper == "RSET" || upper == "NOOP" {
                write.write_all(b"250 OK\r\n").await?;
            } else {
                write.write_all(b"502 not implemented\r\n").await?;
            }
        }
    }

    /// Refuses the next `n` messages with a temporary failure, as a greylisting server does.
    pub fn refuse_next(&self, n: usize) {
        self.refuse.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every message refused by [`MailSink::refuse_next`], parsed.
    pub async fn refused_emails(&self) -> Vec<Email> {
        self.refused.lock().await.iter().map(Email::parse).collect()
    }

    /// Refuses `address` for good from now on: `550` at `RCPT TO`.
    pub fn reject_recipient(&self, address: &str) {
        self.unknown.lock().unwrap().push(address.to_owned());
    }

    /// How many recipients the sender has named so far (one per delivery attempt).
    pub fn recipients_named(&self) -> usize {
        self.rcpt_count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps received messages unacknowledged until [`MailSink::release`]: the sender sees
    /// a server that never finishes.
    pub fn hold(&self) {
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Acknowledges held messages and stops holding.
    pub fn release(&self) {
        self.held.store(false, std::sync::atomic::Ordering::SeqCst);
        self.released.notify_waiters();
    }

    /// Every message so far, parsed.
    pub async fn emails(&self) -> Vec<Email> {
        self.received
            .lock()
            .await
            .iter()
            .map(Email::parse)
            .collect()
    }

    /// Waits until at least `n` messages arrived (10 s at most), then returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Email> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.arrived.notified();
            let emails = self.emails().await;
            if emails.len() >= n {
                return emails;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.emails().await;
                panic!(
                    "expected {n} emails within 10 s, got {}: {:?}",
                    got.len(),
                    got.iter().map(|e| &e.subject).collect::<Vec<_>>()
                );
            }
        }
    }

    /// Asserts that the count stays at `n` for a while (the worker polls every second).
    pub async fn assert_stays_at(&self, n: usize) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let emails = self.emails().await;
        assert_eq!(
            emails.len(),
            n,
            "unexpected mail: {:?}",
            emails
                .iter()
                .map(|e| (&e.envelope_to, &e.subject))
                .collect::<Vec<_>>()
        );
    }
}
