//! The outbox: no lost emails, no email sent twice.

use std::collections::HashSet;

use reqwest::StatusCode;

use crate::both_backends;
use crate::helpers::*;

async fn a_refused_delivery_is_retried_until_it_goes_through(backend: Backend) {
    let app = spawn_app_with(backend, &[("MAIL_RETRY_BASE_SECS", "1")]).await;
    app.create_account("liz@example.com", GOOD_PASSWORD).await;
    app.mail.refuse_next(2);
    assert_eq!(app.forgot("liz@example.com").await.status(), StatusCode::OK);
    let link = app.reset_link_in_email(1).await;
    let row = app.outbox_row("reset", "sent").await;
    assert_eq!(row.attempts, 3, "two refusals, then the delivery");
    let res = app.open_link(&link).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the retried link works"
    );
}

async fn every_email_has_a_message_id_and_a_date_and_a_retry_keeps_its_id(backend: Backend) {
    let app = spawn_app_with(backend, &[("MAIL_RETRY_BASE_SECS", "1")]).await;
    app.create_account("ida@example.com", GOOD_PASSWORD).await;
    app.create_account("jon@example.com", GOOD_PASSWORD).await;
    app.mail.refuse_next(1);
    app.forgot("ida@example.com").await;
    let first = app.mail.wait_for(1).await.remove(0);
    let refused = app.mail.refused_emails().await;
    assert_eq!(refused.len(), 1, "the first attempt was refused");
    let id = &first.message_id;
    assert!(
        id.starts_with('<') && id.ends_with('>') && id.contains('@') && id.len() > 20,
        "{id:?}"
    );
    assert_eq!(&refused[0].message_id, id, "a retry reuses the Message-ID");
    assert!(
        chrono::DateTime::parse_from_rfc2822(&first.date).is_ok(),
        "{:?}",
        first.date
    );
    app.forgot("jon@example.com").await;
    let second = app.mail.wait_for(2).await.remove(1);
    assert_ne!(&second.message_id, id, "every email has its own");
    assert!(!second.message_id.contains("jon"), "{}", second.message_id);
}

async fn a_recipient_refused_for_good_is_failed_after_at_most_one_more_attempt(backend: Backend) {
    let app = spawn_app_with(backend, &[("MAIL_RETRY_BASE_SECS", "1")]).await;
    app.create_account("gone@example.com", GOOD_PASSWORD).await;
    app.mail.reject_recipient("gone@example.com");
    app.forgot("gone@example.com").await;
    let row = app.outbox_row("reset", "failed").await;
    assert!(row.attempts <= 2, "{} attempts", row.attempts);
    let error = row.last_error.expect("the refusal is recorded");
    assert!(
        error.contains("550") && error.contains("permanent"),
        "{error}"
    );
    assert!(!error.contains("gone@example.com"), "{error}");
    // Nothing more is tried.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(app.mail.recipients_named(), row.attempts as usize);
    // Other mail still goes out.
    app.create_account("here@example.com", GOOD_PASSWORD).await;
    app.forgot("here@example.com").await;
    assert_eq!(
        app.mail.wait_for(1).await[0].envelope_to,
        vec!["here@example.com"]
    );
}

async fn the_request_never_waits_for_smtp(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("mo@example.com", GOOD_PASSWORD).await;
    // The SMTP server takes the message and then never answers...
    app.mail.hold();
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        app.forgot("mo@example.com"),
    )
    .await
    .expect("the request answers while SMTP hangs");
    assert_eq!(res.status(), StatusCode::OK);
    app.mail.wait_for(1).await;
    let row = app.outbox_row("reset", "queued").await;
    assert_eq!(row.attempts, 0, "the delivery is still under way");
    // ...until it does, and the worker records the delivery.
    app.mail.release();
    app.outbox_row("reset", "sent").await;
}

async fn a_refused_message_records_a_redacted_error(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("mo@example.com", GOOD_PASSWORD).await;
    app.mail.refuse_next(1000);
    app.forgot("mo@example.com").await;
    let mut row = app.outbox_row("reset", "queued").await;
    for _ in 0..100 {
        if row.attempts >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        row = app.outbox_row("reset", "queued").await;
    }
    let error = row.last_error.expect("the failure is recorded");
    assert!(
        error.contains("451") && error.contains("temporary"),
        "{error}"
    );
    assert!(!error.contains("mo@example.com"));
}

async fn an_email_whose_link_expired_before_delivery_is_never_sent(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("RESET_TOKEN_TTL_SECS", "1"), ("MAIL_RETRY_BASE_SECS", "2")],
    )
    .await;
    app.create_account("kai@example.com", GOOD_PASSWORD).await;
    app.mail.refuse_next(1);
    app.forgot("kai@example.com").await;
    // The first attempt is refused; the retry comes due after the link has expired.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    app.mail.assert_stays_at(0).await;
    let rows = app.db(|c| latchkey::db::outbox::recent(c, 10)).await;
    let row = rows.iter().find(|r| r.kind == "reset").unwrap();
    assert_ne!(row.status, "sent");
    assert_eq!(row.attempts, 1);
}

/// `n` requests for unknown addresses queued straight in the database, as from a botnet
/// that got past the per-client limits (the HTTP path is not the point where it is used).
async fn queue_bot_requests(app: &TestApp, n: usize) {
    app.db(move |c| {
        latchkey::db::write_transaction(c, |c| {
            for i in 0..n {
                latchkey::db::reset_requests::insert(
                    c,
                    &format!("bot{i}@example.com"),
                    "203.0.113.9",
                    "bot",
                    None,
                )?;
            }
            Ok(())
        })
    })
    .await;
}

async fn a_flood_of_requests_does_not_hold_up_a_real_reset_email(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("nia@example.com", GOOD_PASSWORD).await;
    // 3000 requests for unknown addresses already queued.
    queue_bot_requests(&app, 3000).await;
    let started = std::time::Instant::now();
    assert_eq!(app.forgot("nia@example.com").await.status(), StatusCode::OK);
    // At one request at a time, or one batch a second, this would take minutes.
    app.reset_link_in_email(1).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the email took {:?}",
        started.elapsed()
    );
}

/// The request queue is taken from both ends: a person who asks while thousands of
/// requests are queued is handled within a batch or two, not after all of them (which
/// oldest-first would do). Checked by order, not by time: when the person's email is
/// queued, most of the backlog still is.
async fn a_new_request_is_handled_before_a_queued_backlog(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("oda@example.com", GOOD_PASSWORD).await;
    queue_bot_requests(&app, 3000).await;
    assert_eq!(app.forgot("oda@example.com").await.status(), StatusCode::OK);
    let left = loop {
        let (mailed, left) = app
            .db(|c| {
                use diesel::prelude::*;
                use latchkey::db::schema::{outbox, reset_requests};
                let mailed: i64 = outbox::table
                    .filter(outbox::recipient.eq("oda@example.com"))
                    .count()
                    .get_result(c)?;
                let left: i64 = reset_requests::table.count().get_result(c)?;
                Ok((mailed, left))
            })
            .await;
        if mailed > 0 {
            break left;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert!(
        left > 1500,
        "the person's request waited for {} of 3000 queued requests",
        3000 - left
    );
}

/// Delivery takes from both ends of the outbox too: with 1 000 emails queued (a flood that
/// got through), a person's email is among the first sent once the server takes mail, not
/// the 1 001st.
async fn a_new_email_is_sent_before_a_queued_backlog(backend: Backend) {
    let app = spawn_app_with(backend, &[("SMTP_CONNECTIONS", "1")]).await;
    app.create_account("pam@example.com", GOOD_PASSWORD).await;
    app.mail.hold();
    let keys = latchkey::crypto::Keys::derive(&app.vars["SECRET_KEY"], None);
    let sealed = latchkey::mail::EmailMessage {
        subject: "Reset your Latchkey password".into(),
        text: "a link".into(),
        html: "<p>a link</p>".into(),
    }
    .seal(&keys);
    app.db(move |c| {
        latchkey::db::write_transaction(c, |c| {
            for i in 0..1000 {
                let address = format!("flood{i}@example.com");
                let user = latchkey::db::users::insert(c, &address, "$argon2id$unused", false)?;
                let expires = latchkey::db::now_plus(std::time::Duration::from_secs(3600));
                latchkey::db::outbox::insert(
                    c,
                    user.id,
                    "reset",
                    &address,
                    &sealed,
                    Some(expires),
                )?;
            }
            Ok(())
        })
    })
    .await;
    assert_eq!(app.forgot("pam@example.com").await.status(), StatusCode::OK);
    // Wait until the person's email is queued behind the backlog, then let mail flow.
    loop {
        let queued = app
            .db(|c| {
                use diesel::prelude::*;
                use latchkey::db::schema::outbox;
                let n: i64 = outbox::table
                    .filter(outbox::recipient.eq("pam@example.com"))
                    .count()
                    .get_result(c)?;
                Ok(n)
            })
            .await;
        if queued > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    app.mail.release();
    let position = loop {
        let emails = app.mail.emails().await;
        if let Some(i) = emails
            .iter()
            .position(|e| e.envelope_to == vec!["pam@example.com".to_owned()])
        {
            break i + 1;
        }
        assert!(emails.len() < 1001, "the person's email never came");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(
        position <= 100,
        "the person's email was sent {position}th, behind the backlog"
    );
}

/// Turning requests into emails never waits for delivery: with the SMTP server stuck on
/// one message, a new request still becomes a queued email (and goes out when the server
/// comes back).
async fn requests_become_emails_while_delivery_is_stuck(backend: Backend) {
    let app = spawn_app_with(backend, &[("SMTP_CONNECTIONS", "1")]).await;
    app.create_account("pia@example.com", GOOD_PASSWORD).await;
    app.create_account("quin@example.com", GOOD_PASSWORD).await;
    app.mail.hold();
    app.forgot("pia@example.com").await;
    app.mail.wait_for(1).await;
    app.forgot("quin@example.com").await;
    let mut queued = false;
    for _ in 0..60 {
        let rows = app.db(|c| latchkey::db::outbox::recent(c, 10)).await;
        if rows
            .iter()
            .any(|r| r.recipient == "quin@example.com" && r.status == "queued")
        {
            queued = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(queued, "the request waited for the stuck delivery");
    app.mail.release();
    let emails = app.mail.wait_for(2).await;
    assert_eq!(emails[1].envelope_to, vec!["quin@example.com"]);
}

/// Several connections at once: a server stuck on one message does not hold up the next.
async fn a_message_stuck_on_one_connection_does_not_hold_up_the_others(backend: Backend) {
    let app = spawn_app_with(backend, &[("SMTP_CONNECTIONS", "4")]).await;
    for name in ["ray", "sol"] {
        app.create_account(&format!("{name}@example.com"), GOOD_PASSWORD)
            .await;
    }
    app.mail.hold();
    // Both requests in one batch, so both emails are claimed together.
    app.db(|c| {
        latchkey::db::write_transaction(c, |c| {
            for email in ["ray@example.com", "sol@example.com"] {
                latchkey::db::reset_requests::insert(c, email, "192.0.2.7", "test", None)?;
            }
            Ok(())
        })
    })
    .await;
    // Held messages are still received: both arrive while the first is unacknowledged.
    let emails = app.mail.wait_for(2).await;
    let mut to: Vec<_> = emails.iter().map(|e| e.envelope_to[0].clone()).collect();
    to.sort();
    assert_eq!(to, vec!["ray@example.com", "sol@example.com"]);
    app.mail.release();
    app.outbox_row("reset", "sent").await;
}

both_backends!(
    requests_become_emails_while_delivery_is_stuck,
    a_message_stuck_on_one_connection_does_not_hold_up_the_others,
    every_email_has_a_message_id_and_a_date_and_a_retry_keeps_its_id,
    a_recipient_refused_for_good_is_failed_after_at_most_one_more_attempt,
    a_flood_of_requests_does_not_hold_up_a_real_reset_email,
    a_new_request_is_handled_before_a_queued_backlog,
    a_new_email_is_sent_before_a_queued_backlog,
    an_email_whose_link_expired_before_delivery_is_never_sent,
    a_refused_delivery_is_retried_until_it_goes_through,
    the_request_never_waits_for_smtp,
    a_refused_message_records_a_redacted_error,
);

/// Two instances behind a load balancer share one Postgres: every request is handled once
/// and every email is sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_send_each_email_exactly_once() {
    let a = spawn_app_with(Backend::Postgres, &[("RESET_COOLDOWN_SECS", "0")]).await;
    let b = a.sibling().await;
    let people: Vec<String> = (0..12).map(|i| format!("person{i}@example.com")).collect();
    for p in &people {
        a.create_account(p, GOOD_PASSWORD).await;
    }
    let mut requests = Vec::new();
    for (i, p) in people.iter().enumerate() {
        let (url, body) = (
            if i % 2 == 0 {
                a.url("/auth/forgot")
            } else {
                b.url("/auth/forgot")
            },
            serde_json::json!({ "email": p }),
        );
        requests.push(tokio::spawn(async move {
            new_client()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for r in requests {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    let emails = a.mail.wait_for(12).await;
    a.mail.assert_stays_at(12).await;
    let recipients: HashSet<String> = emails.iter().map(|e| e.envelope_to[0].clone()).collect();
    assert_eq!(recipients.len(), 12, "each person got exactly one email");
}

/// `/readyz` tells a load balancer when the database is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_database_is_gone() {
    let mut app = spawn_app(Backend::Postgres).await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    let token = app.csrf(&app.client).await;
    app.drop_database();
    // A load balancer's probe gives up after a second or two: the answer must come first.
    let asked = std::time::Instant::now();
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(2),
        "/readyz took {:?}",
        asked.elapsed()
    );
    assert_eq!(
        app.get("/healthz").await.status(),
        StatusCode::OK,
        "the process is still up"
    );
    // Requests that need the database say 503 with a real body, not 500.
    let res = app
        .post_json(
            "/auth/forgot",
            &serde_json::json!({"email": "x@example.com"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let res = app
        .client
        .post(app.url("/forgot"))
        .form(&[("csrf_token", token.as_str()), ("email", "x@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("temporarily unavailable")
    );
}
