//! Faults with real processes: the release-shaped binary, a real database and an SMTP
//! server on loopback that the test holds and releases. What is checked is what SPEC §12
//! promises: no email lost to a stop or a crash, none sent twice by a clean stop, and
//! mail claimed by a dead process back within seconds.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use latchkey::{config::DatabaseUrl, crypto::Keys, db, jobs::LEASE, mail::EmailMessage};

use crate::both_backends;
use crate::helpers::*;
use crate::smtp::MailSink;

const SECRET: &str = "fault-test-secret-key-fault-test-secret-key-fault-test-secret-key";
const EMAILS: usize = 20;
/// The emails of the three-instance test.
const MANY: usize = 1000;

/// Every per-client limit off and no cooldown: for tests whose many requests all come
/// from 127.0.0.1 and whose subject is not the limits.
pub const LIMITS_OFF: [(&str, &str); 6] = [
    ("RATE_LIMIT_FORGOT", "off"),
    ("RATE_LIMIT_LOGIN", "off"),
    ("RATE_LIMIT_RESET", "off"),
    ("RATE_LIMIT_SIGNUP", "off"),
    ("RATE_LIMIT_ACCOUNT", "off"),
    ("RESET_COOLDOWN_SECS", "0"),
];

/// One `latchkey` process on a shared database and SMTP server.
pub struct Instance {
    child: Child,
    pub address: String,
}

impl Instance {
    pub fn start(database_url: &str, sink: &MailSink) -> Instance {
        Self::start_with(database_url, sink, &[])
    }

    /// With more variables (`SMTP_CONNECTIONS` is 1 unless given).
    pub fn start_with(database_url: &str, sink: &MailSink, extra: &[(&str, &str)]) -> Instance {
        Self::start_for(database_url, sink.port, extra)
    }

    /// Sending to an SMTP server on `smtp_port`, up or not.
    pub fn start_for(database_url: &str, smtp_port: u16, extra: &[(&str, &str)]) -> Instance {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .env_clear()
            .current_dir(std::env::temp_dir())
            .env("DATABASE_URL", database_url)
            .env("SECRET_KEY", SECRET)
            .env("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"))
            .env("SMTP_CONNECTIONS", "1")
            .envs(extra.iter().copied())
            .env("MAIL_FROM", "Latchkey <no-reply@latchkey.test>")
            .env("LISTEN_ADDR", &listen)
            .env("BASE_URL", format!("http://{listen}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start latchkey");
        Instance {
            child,
            address: format!("http://{listen}"),
        }
    }

    pub async fn ready(&self) {
        let client = new_client();
        for _ in 0..200 {
            if let Ok(res) = client.get(format!("{}/readyz", self.address)).send().await
                && res.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the instance did not become ready");
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    pub async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < within,
                "the process did not exit in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `EMAILS` reset emails queued straight in the outbox, sealed as the app seals them.
async fn queue_emails(pool: &db::DbPool) {
    queue_n_emails(pool, EMAILS).await;
}

async fn queue_n_emails(pool: &db::DbPool, n: usize) {
    let keys = Keys::derive(SECRET, None);
    let sealed = EmailMessage {
        subject: "Reset your Latchkey password".into(),
        text: "a link".into(),
        html: "<p>a link</p>".into(),
    }
    .seal(&keys);
    db::run(pool, move |c| {
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
    .await
    .unwrap();
}

/// How many distinct recipients got mail, and how many messages arrived in all.
async fn delivered(sink: &MailSink) -> (usize, usize) {
    let emails = sink.emails().await;
    let mut to: Vec<_> = emails.iter().map(|e| e.envelope_to.clone()).collect();
    to.sort();
    to.dedup();
    (to.len(), emails.len())
}

async fn wait_until_all_delivered(sink: &MailSink, within: Duration) -> Duration {
    let started = Instant::now();
    while delivered(sink).await.0 < EMAILS {
        assert!(
            started.elapsed() < within,
            "only {:?} of {EMAILS} delivered after {within:?}",
            delivered(sink).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// A stop (SIGTERM) while a send is in flight: the send finishes, the process exits 0,
/// the mail it had claimed but not sent goes back to the queue, and the next instance
/// sends all of it at once: nothing lost, nothing twice.
async fn a_clean_stop_mid_send_loses_and_repeats_nothing(backend: Backend) {
    let sink = MailSink::start().await;
    let (_db, url) = TestDb::create(backend);
    let mut first = Instance::start(&url, &sink);
    first.ready().await;
    let pool = db::build_pool(&DatabaseUrl::parse(&url).unwrap(), 2).unwrap();
    sink.hold();
    queue_emails(&pool).await;
    sink.wait_for(1).await;
    first.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    sink.release();
    assert_eq!(first.exit_code(Duration::from_secs(15)).await, Some(0));
    assert_eq!(
        delivered(&sink).await,
        (1, 1),
        "the send in flight finished"
    );

    let second = Instance::start(&url, &sink);
    second.ready().await;
    let took = wait_until_all_delivered(&sink, Duration::from_secs(10)).await;
    assert!(
        took < Duration::from_secs(5),
        "the handed-back mail took {took:?}"
    );
    assert_eq!(
        delivered(&sink).await,
        (EMAILS, EMAILS),
        "no email sent twice"
    );
}

/// A crash (`kill -9`) while a send is in flight: the mail the dead process had claimed
/// comes back when its short lease runs out, and the next instance sends it. At most
/// the message in flight is sent twice.
async fn a_crash_mid_send_loses_nothing_and_repeats_at_most_the_send_in_flight(backend: Backend) {
    let sink = MailSink::start().await;
    let (_db, url) = TestDb::create(backend);
    let first = Instance::start(&url, &sink);
    first.ready().await;
    let pool = db::build_pool(&DatabaseUrl::parse(&url).unwrap(), 2).unwrap();
    sink.hold();
    queue_emails(&pool).await;
    sink.wait_for(1).await;
    first.signal("-KILL");
    drop(first);
    sink.release();

    let second = Instance::start(&url, &sink);
    second.ready().await;
    wait_until_all_delivered(&sink, LEASE + Duration::from_secs(10)).await;
    let (recipients, messages) = delivered(&sink).await;
    assert_eq!(recipients, EMAILS);
    assert!(
        messages <= EMAILS + 1,
        "{messages} messages for {EMAILS} emails"
    );
    let stuck = db::run(&pool, |c| db::outbox::recent(c, 50)).await.unwrap();
    assert!(
        stuck.iter().all(|r| r.status == "sent"),
        "{:?}",
        stuck.iter().map(|r| &r.status).collect::<Vec<_>>()
    );
}

/// The SMTP server is down while emails are queued: the requests are answered as usual,
/// and when it comes back every email is delivered, once.
async fn an_smtp_outage_loses_and_repeats_nothing(backend: Backend) {
    let smtp_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_db, url) = TestDb::create(backend);
    let instance = Instance::start_for(
        &url,
        smtp_port,
        &[("MAIL_RETRY_BASE_SECS", "1"), ("SMTP_CONNECTIONS", "4")],
    );
    instance.ready().await;
    let pool = db::build_pool(&DatabaseUrl::parse(&url).unwrap(), 2).unwrap();
    queue_emails(&pool).await;
    // Every first attempt fails (connection refused) and is scheduled again.
    let started = Instant::now();
    loop {
        let rows = db::run(&pool, |c| db::outbox::recent(c, 50)).await.unwrap();
        if rows.len() == EMAILS && rows.iter().all(|r| r.attempts >= 1) {
            assert!(
                rows.iter().all(|r| r.status == "queued"),
                "nothing given up"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no attempts were made"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sink = MailSink::start_on(smtp_port).await;
    wait_until_all_delivered(&sink, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        delivered(&sink).await,
        (EMAILS, EMAILS),
        "no email sent twice"
    );
}

/// Three instances on one PostgreSQL share 1 000 queued emails: each is delivered
/// exactly once, and all of them go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_deliver_a_thousand_emails_exactly_once() {
    let sink = MailSink::start().await;
    let (_db, url) = TestDb::create(Backend::Postgres);
    let instances: Vec<Instance> = (0..3)
        .map(|_| Instance::start_with(&url, &sink, &[("SMTP_CONNECTIONS", "4")]))
        .collect();
    for instance in &instances {
        instance.ready().await;
    }
    let pool = db::build_pool(&DatabaseUrl::parse(&url).unwrap(), 2).unwrap();
    queue_n_emails(&pool, MANY).await;
    let started = Instant::now();
    loop {
        let (recipients, messages) = delivered(&sink).await;
        assert_eq!(recipients, messages, "an email was sent twice");
        if recipients == MANY {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{recipients} of {MANY} delivered in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every row says sent, once.
    let statuses = db::run(&pool, |c| {
        use diesel::prelude::*;
        use latchkey::db::schema::outbox;
        Ok(outbox::table
            .select((outbox::status, outbox::attempts))
            .load::<(String, i64)>(c)?)
    })
    .await
    .unwrap();
    assert_eq!(statuses.len(), MANY);
    assert!(
        statuses.iter().all(|(s, a)| s == "sent" && *a == 1),
        "{statuses:?}"
    );
}

/// A stop (SIGTERM) while a request is being answered: the request gets its answer, and
/// the process exits 0 soon after.
async fn a_stop_lets_requests_in_flight_finish(backend: Backend) {
    let sink = MailSink::start().await;
    let (_db, url) = TestDb::create(backend);
    // A costlier hash (~0.2 s): the sign-up below is still being answered when the
    // signal comes.
    let mut instance = Instance::start_with(&url, &sink, &[("ARGON2_ITERATIONS", "30")]);
    instance.ready().await;
    let client = new_client();
    let page = client
        .get(format!("{}/signup", instance.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = page
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's CSRF token")
        .to_owned();
    let request = client
        .post(format!("{}/signup", instance.address))
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", "tess@example.com"),
            ("password", GOOD_PASSWORD),
            ("password_confirm", GOOD_PASSWORD),
        ])
        .send();
    let (answer, ()) = tokio::join!(request, async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        instance.signal("-TERM");
    });
    assert_eq!(answer.unwrap().status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(instance.exit_code(Duration::from_secs(15)).await, Some(0));
    let pool = db::build_pool(&DatabaseUrl::parse(&url).unwrap(), 1).unwrap();
    let account = db::run(&pool, |c| db::users::find_by_email(c, "tess@example.com"))
        .await
        .unwrap();
    assert!(account.is_some(), "the sign-up in flight was completed");
}

both_backends!(
    an_smtp_outage_loses_and_repeats_nothing,
    a_stop_lets_requests_in_flight_finish,
    a_clean_stop_mid_send_loses_and_repeats_nothing,
    a_crash_mid_send_loses_nothing_and_repeats_at_most_the_send_in_flight,
);
