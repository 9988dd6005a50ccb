//! Contention with a real process: 50 requests of every kind that writes (sign-up,
//! sign-in, recovery by form and by API, password change, a reset) let go at the same
//! instant, three rounds. SQLite has one writer at a time; SPEC §12 promises that nobody
//! ever sees "database is locked" for it: every answer is the one the request deserves,
//! and every write it promised is in the database afterwards.

use std::{sync::Arc, time::Duration};

use latchkey::{config::DatabaseUrl, db};
use reqwest::Client;
use serde_json::json;
use tokio::sync::Barrier;

use crate::both_backends;
use crate::faults::{Instance, LIMITS_OFF};
use crate::helpers::*;
use crate::outage::{csrf_of, sign_up};
use crate::smtp::MailSink;

/// Requests let go together per round, and rounds.
const AT_ONCE: usize = 50;
const ROUNDS: usize = 3;
/// Of the 50: five kinds of ten.
const EACH: usize = AT_ONCE / 5;

/// What one request of a round does.
#[derive(Clone, Copy, Debug)]
enum Kind {
    SignUp,
    SignIn,
    ForgotForm,
    ForgotApi,
    Reset,
    ChangePassword,
}

/// A request ready to go: its client, its form's CSRF token where it has one, and what
/// it sends.
struct Prepared {
    kind: Kind,
    client: Client,
    csrf: String,
    email: String,
    token: String,
}

/// The answer each kind must get (anything else, a 500 or a 503 included, fails).
fn expected(kind: Kind) -> &'static [u16] {
    match kind {
        // Success is a 303 onwards (a 422 re-renders the form with an error).
        Kind::SignUp | Kind::SignIn | Kind::ChangePassword => &[303],
        // The "check your email" page, and the API's answers.
        Kind::ForgotForm | Kind::ForgotApi | Kind::Reset => &[200],
    }
}

async fn send(base: &str, p: &Prepared) -> (u16, String) {
    let form = |path: &str, fields: Vec<(&str, &str)>| {
        p.client.post(format!("{base}{path}")).form(&fields).send()
    };
    let answer = match p.kind {
        Kind::SignUp => {
            form(
                "/signup",
                vec![
                    ("csrf_token", &p.csrf),
                    ("email", &p.email),
                    ("password", GOOD_PASSWORD),
                    ("password_confirm", GOOD_PASSWORD),
                ],
            )
            .await
        }
        Kind::SignIn => {
            form(
                "/login",
                vec![
                    ("csrf_token", &p.csrf),
                    ("email", &p.email),
                    ("password", GOOD_PASSWORD),
                ],
            )
            .await
        }
        Kind::ForgotForm => {
            form(
                "/forgot",
                vec![("csrf_token", &p.csrf), ("email", &p.email)],
            )
            .await
        }
        Kind::ChangePassword => {
            form(
                "/account/password",
                vec![
                    ("csrf_token", &p.csrf),
                    ("current_password", GOOD_PASSWORD),
                    ("password", OTHER_GOOD_PASSWORD),
                    ("password_confirm", OTHER_GOOD_PASSWORD),
                ],
            )
            .await
        }
        Kind::ForgotApi => {
            p.client
                .post(format!("{base}/auth/forgot"))
                .json(&json!({ "email": p.email }))
                .send()
                .await
        }
        Kind::Reset => {
            p.client
                .post(format!("{base}/auth/reset"))
                .json(&json!({ "token": p.token, "password": OTHER_GOOD_PASSWORD }))
                .send()
                .await
        }
    };
    let res = answer.unwrap_or_else(|e| panic!("{:?}: no answer: {e}", p.kind));
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

/// A new browser with an address of its own: fifty people, not one client (the hashing
/// pool rightly refuses one client more than its share).
fn person(round: usize, people: &mut usize) -> Client {
    *people += 1;
    client_from(&format!("10.0.{round}.{people}"))
}

/// Prepares one round: accounts to sign in to, reset, change and recover, made before the
/// round starts so that only the round's own requests run at once.
async fn prepare(base: &str, sink: &MailSink, round: usize) -> Vec<Prepared> {
    let mut prepared = vec![];
    let mut people = 0;
    for i in 0..EACH {
        let name = |what: &str| format!("{what}.{round}.{i}@example.com");
        // A new address to sign up with.
        let client = person(round, &mut people);
        let csrf = csrf_of(&client, base, "/signup").await;
        prepared.push(Prepared {
            kind: Kind::SignUp,
            client,
            csrf,
            email: name("new"),
            token: String::new(),
        });
        // An account to sign in to.
        sign_up(&person(round, &mut people), base, &name("in")).await;
        let client = person(round, &mut people);
        let csrf = csrf_of(&client, base, "/login").await;
        prepared.push(Prepared {
            kind: Kind::SignIn,
            client,
            csrf,
            email: name("in"),
            token: String::new(),
        });
        // Recovery by form and by API (half for registered addresses, half unknown).
        let registered = i % 2 == 0;
        let client = person(round, &mut people);
        let csrf = csrf_of(&client, base, "/forgot").await;
        prepared.push(Prepared {
            kind: Kind::ForgotForm,
            client,
            csrf,
            email: if registered {
                name("in")
            } else {
                name("nobody")
            },
            token: String::new(),
        });
        prepared.push(Prepared {
            kind: Kind::ForgotApi,
            client: person(round, &mut people),
            csrf: String::new(),
            email: if registered {
                name("in")
            } else {
                name("nobody.api")
            },
            token: String::new(),
        });
        // Every other slot alternates a reset (its link mailed beforehand) and a password
        // change from a signed-in browser.
        if i % 2 == 0 {
            sign_up(&person(round, &mut people), base, &name("reset")).await;
            let res = person(round, &mut people)
                .post(format!("{base}/auth/forgot"))
                .json(&json!({ "email": name("reset") }))
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success());
            let link = link_mailed_to(sink, base, &name("reset")).await;
            prepared.push(Prepared {
                kind: Kind::Reset,
                client: person(round, &mut people),
                csrf: String::new(),
                email: name("reset"),
                token: link.rsplit('=').next().unwrap().to_owned(),
            });
        } else {
            let client = person(round, &mut people);
            sign_up(&client, base, &name("change")).await;
            let csrf = csrf_of(&client, base, "/account").await;
            prepared.push(Prepared {
                kind: Kind::ChangePassword,
                client,
                csrf,
                email: name("change"),
                token: String::new(),
            });
        }
    }
    prepared
}

/// The reset link in the email to `address`, once it has arrived.
async fn link_mailed_to(sink: &MailSink, base: &str, address: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let link = sink.emails().await.iter().find_map(|e| {
            e.envelope_to
                .iter()
                .any(|to| to == address)
                .then(|| e.link_starting_with(&format!("{base}/reset?token=")))
                .flatten()
        });
        if let Some(link) = link {
            return link;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reset email to {address} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fifty_concurrent_mixed_requests_never_see_a_locked_database(backend: Backend) {
    let sink = MailSink::start().await;
    let (_db, url) = TestDb::create(backend);
    let instance = Instance::start_with(
        &url,
        &sink,
        &[
            LIMITS_OFF.as_slice(),
            &[
                // Cheap hashes: the contention under test is the database's, not argon2's.
                ("ARGON2_MEMORY_KIB", "8192"),
                ("ARGON2_ITERATIONS", "1"),
                ("SMTP_CONNECTIONS", "4"),
                ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ],
        ]
        .concat(),
    );
    instance.ready().await;
    let base = instance.address.clone();

    for round in 0..ROUNDS {
        let prepared = prepare(&base, &sink, round).await;
        assert_eq!(prepared.len(), AT_ONCE);
        let barrier = Arc::new(Barrier::new(AT_ONCE));
        let tasks: Vec<_> = prepared
            .into_iter()
            .map(|p| {
                let (base, barrier) = (base.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let answer = send(&base, &p).await;
                    (p, answer)
                })
            })
            .collect();
        let mut done = vec![];
        for task in tasks {
            done.push(task.await.expect("a request task"));
        }
        for (p, (status, body)) in &done {
            assert!(
                !body.to_lowercase().contains("locked"),
                "round {round}: {:?} for {} saw a locked database: {status} {body}",
                p.kind,
                p.email
            );
            assert!(
                expected(p.kind).contains(status),
                "round {round}: {:?} for {} answered {status}: {body}",
                p.kind,
                p.email
            );
        }

        // What each answer promised is stored.
        let pool = db::build_pool(&DatabaseUrl::parse(&url).unwrap(), 1).unwrap();
        for (p, _) in done {
            let email = p.email.clone();
            let user = db::run(&pool, move |c| db::users::find_by_email(c, &email))
                .await
                .unwrap();
            match p.kind {
                Kind::SignUp => assert!(user.is_some(), "{} was not created", p.email),
                Kind::Reset | Kind::ChangePassword => {
                    let client = new_client();
                    let csrf = csrf_of(&client, &base, "/login").await;
                    let res = client
                        .post(format!("{base}/login"))
                        .form(&[
                            ("csrf_token", csrf.as_str()),
                            ("email", p.email.as_str()),
                            ("password", OTHER_GOOD_PASSWORD),
                        ])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        res.status(),
                        reqwest::StatusCode::SEE_OTHER,
                        "{:?}: {} does not sign in with the new password",
                        p.kind,
                        p.email
                    );
                }
                Kind::SignIn => {
                    let res = p
                        .client
                        .get(format!("{base}/account"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200, "{} is not signed in", p.email);
                }
                Kind::ForgotForm | Kind::ForgotApi => {}
            }
        }
    }
    // The recovery requests for registered addresses all became emails.
    let registered_requests = ROUNDS * EACH.div_ceil(2) * 2;
    let resets_before = ROUNDS * EACH.div_ceil(2);
    let password_changed = ROUNDS * EACH; // one per reset and per change
    let want = registered_requests + resets_before + password_changed;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = sink.emails().await.len();
        if got >= want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{got} of {want} emails arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

both_backends!(fifty_concurrent_mixed_requests_never_see_a_locked_database);
