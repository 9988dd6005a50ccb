//! Mail delivery rate against the SMTP server's own (SPEC §12: at least half of it).
//!
//! An SMTP server on loopback (aiosmtpd in a process of its own with `--python`, else a
//! minimal one in this process; see `support/smtp.rs`) is first timed taking `--n` messages
//! from one sequential client over one connection: the rate the server itself takes. Then
//! `--n` reset emails are queued in a fresh PostgreSQL database
//! (sealed under the server's key, as the app queues them) and the release binary is
//! started on it with `SMTP_CONNECTIONS` connections; its delivery rate is measured from
//! the first message the server accepts to the last. Both in the same run, so the ratio
//! holds on a shared, noisy machine. Exit code 0 when the ratio is at least `--min-ratio`
//! (default 0.5).
//!
//! Run it with `scripts/bench-mail`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use latchkey_bench as support;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use latchkey::{
    config::DatabaseUrl,
    crypto::Keys,
    db,
    mail::message::{RequestOrigin, reset_email},
};
use lettre::transport::smtp::{client::AsyncSmtpConnection, extension::ClientId};

use support::{
    Rng, Server, TempDatabase, arg, flag, free_port, http_client, smtp::SmtpSink, wait_ready,
};

const SECRET: &str = "mail-rate-benchmark-secret-key-that-is-long-enough-0123456789abcdef";

/// Waits until the SMTP server has accepted `n` messages in all.
async fn wait_for_count(sink: &SmtpSink, n: usize, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while sink.count() < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} messages accepted in {within:?}",
                sink.count()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    support::exit_code(run().await)
}

async fn run() -> anyhow::Result<bool> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--n", 2000);
    let connections: usize = arg(&args, "--connections", 4);
    let min_ratio: f64 = arg(&args, "--min-ratio", 0.5);
    let server_path: PathBuf = arg(&args, "--server", PathBuf::from("target/release/latchkey"))
        .canonicalize()
        .context("the server binary (--server)")?;
    let admin_url = arg(
        &args,
        "--database-url",
        std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
    );
    let keys = Keys::derive(SECRET, None);
    let message = reset_email(
        "https://latchkey.example/reset?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        Duration::from_secs(3600),
        &RequestOrigin::new("192.0.2.1", "Mozilla/5.0 Firefox/140.0"),
        "https://latchkey.example/forgot",
    )?;

    // 1. The server's own rate: one sequential client, one connection.
    let python = flag(&args, "--python").map(PathBuf::from);
    let sink = SmtpSink::start(python.as_deref()).await?;
    let port = sink.port;
    let email = lettre::Message::builder()
        .from("Latchkey <no-reply@latchkey.example>".parse()?)
        .to("someone@example.com".parse()?)
        .subject(&message.subject)
        .multipart(lettre::message::MultiPart::alternative_plain_html(
            message.text.clone(),
            message.html.clone(),
        ))?;
    let raw = email.formatted();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let mut conn =
        AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &ClientId::default()).await?;
    for _ in 0..n {
        conn.send(email.envelope(), &raw).await?;
    }
    conn.quit().await?;
    // The acceptances are recorded as the server reports them (aiosmtpd: a line on its
    // output), so wait until all of them are in.
    wait_for_count(&sink, n, Duration::from_secs(30)).await?;
    let server_rate = sink.rate_since(0);

    // 2. The app's worker: `n` reset emails queued, then the release binary started.
    let mut rng = Rng::seeded();
    let database = TempDatabase::postgres(&admin_url, "latchkey_mail_rate", &mut rng)?;
    let url = DatabaseUrl::parse(&database.url).map_err(anyhow::Error::msg)?;
    let pool = db::build_pool(&url, 2)?;
    db::run_migrations(&pool)?;
    let sealed = message.seal(&keys);
    db::run(&pool, move |c| {
        db::write_transaction(c, |c| {
            for i in 0..n {
                let address = format!("user{i}@example.com");
                let user = db::users::insert(c, &address, "$argon2id$unused", false)?;
                let expires = db::now_plus(Duration::from_secs(3600));
                db::outbox::insert(c, user.id, "reset", &address, &sealed, Some(expires))?;
            }
            Ok(())
        })
    })
    .await?;
    drop(pool);
    let before = sink.count();
    let listen = format!("127.0.0.1:{}", free_port()?);
    let env = [
        ("DATABASE_URL", database.url.clone()),
        ("SECRET_KEY", SECRET.to_owned()),
        ("SMTP_URL", format!("smtp://127.0.0.1:{port}")),
        ("SMTP_CONNECTIONS", connections.to_string()),
        (
            "MAIL_FROM",
            "Latchkey <no-reply@latchkey.example>".to_owned(),
        ),
        ("BASE_URL", format!("http://{listen}")),
        ("LISTEN_ADDR", listen.clone()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let mut server = Server::spawn(&server_path, &env)?;
    wait_ready(&http_client()?, &format!("http://{listen}"), &mut server).await?;
    wait_for_count(&sink, before + n, Duration::from_secs(120)).await?;
    let worker_rate = sink.rate_since(before);
    drop(server);
    let ratio = worker_rate / server_rate;
    let report = format!(
        "# Mail delivery rate\n\n\
         SMTP server: {}.\n\n\
         | | emails/s |\n|---|---:|\n\
         | SMTP server, one sequential client, one connection | {server_rate:.0} |\n\
         | Latchkey worker, SMTP_CONNECTIONS={connections}, PostgreSQL | {worker_rate:.0} |\n\n\
         {n} reset emails each. Ratio: {ratio:.2} (target ≥ {min_ratio}).\n",
        sink.name
    );
    print!("{report}");
    std::fs::write("target/mail-rate.md", &report).context("write target/mail-rate.md")?;
    Ok(ratio >= min_ratio)
}
