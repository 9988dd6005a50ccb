//! The audit trail: every recovery and sign-in event of SPEC §9 is recorded with its time,
//! account, client address and user agent, and never with a token, password or session id.

use latchkey::db::events::EventRow;
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

const UA: &str = "AuditTest/1.0 (like Firefox)";

/// A browser that says who it is, so the user agent can be found in events.
fn browser() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .user_agent(UA)
        .build()
        .unwrap()
}

/// Checks the who/where fields of an event.
fn assert_from_test_client(e: &EventRow, email: Option<&str>) {
    assert_eq!(e.email.as_deref(), email, "{e:?}");
    assert_eq!(e.user_id.is_some(), email.is_some(), "{e:?}");
    assert_eq!(e.client_ip.as_deref(), Some("127.0.0.1"), "{e:?}");
    assert_eq!(e.user_agent.as_deref(), Some(UA), "{e:?}");
}

fn detail(e: &EventRow) -> &str {
    e.detail.as_deref().unwrap_or_default()
}

async fn a_reset_request_is_recorded_with_its_outcome_and_the_mail_it_sent(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let b = browser();
    for email in ["ann@example.com", "nobody@example.com"] {
        let res = app.post_form_with(&b, "/forgot", &[("email", email)]).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    app.mail.wait_for(1).await;
    let sent = app.event("mail_sent").await;
    assert_eq!(sent.email.as_deref(), Some("ann@example.com"));
    assert_eq!(detail(&sent), "reset email");

    let requested = app.events_of("reset_requested", 2).await;
    assert_eq!(requested.len(), 2, "{requested:?}");
    let known = requested.iter().find(|e| e.user_id.is_some()).unwrap();
    assert_from_test_client(known, Some("ann@example.com"));
    assert_eq!(detail(known), "reset email queued");
    let unknown = requested.iter().find(|e| e.user_id.is_none()).unwrap();
    assert_from_test_client(unknown, None);
    assert!(detail(unknown).contains("no account"), "{unknown:?}");
    assert!(
        !format!("{unknown:?}").contains("nobody@"),
        "addresses with no account are not kept"
    );
}

async fn a_throttled_address_and_a_failed_delivery_are_recorded(backend: Backend) {
    let app = spawn_app_with(backend, &[("MAIL_RETRY_BASE_SECS", "1")]).await;
    app.create_account("bo@example.com", GOOD_PASSWORD).await;
    app.mail.refuse_next(1);
    let b = browser();
    for _ in 0..2 {
        app.post_form_with(&b, "/forgot", &[("email", "bo@example.com")])
            .await;
    }
    let failed = app.event("mail_failed").await;
    assert_eq!(failed.email.as_deref(), Some("bo@example.com"));
    assert!(
        detail(&failed).starts_with("reset email, attempt 1, will retry"),
        "{failed:?}"
    );
    app.mail.wait_for(1).await;
    app.event("mail_sent").await;

    let throttled = app.event("throttled").await;
    assert_from_test_client(&throttled, Some("bo@example.com"));
    assert!(detail(&throttled).contains("moments ago"), "{throttled:?}");
}

async fn opening_links_and_resetting_are_recorded_with_the_reason_for_refusals(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("cy@example.com", GOOD_PASSWORD).await;
    app.forgot("cy@example.com").await;
    let link = app.reset_link_in_email(1).await;
    let b = browser();

    let res = b.get(app.local(&link)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let opened = app.event("reset_link_opened").await;
    assert_from_test_client(&opened, Some("cy@example.com"));
    assert_eq!(opened.detail, None, "a live link has nothing to explain");

    let token = TestApp::token_of(&link);
    let weak = json!({ "token": token, "password": "password" });
    let res = b
        .post(app.url("/auth/reset"))
        .json(&weak)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused = app.event("reset_refused").await;
    assert_from_test_client(&refused, Some("cy@example.com"));
    assert!(detail(&refused).contains("too short"), "{refused:?}");

    let res = app
        .post_form_with(
            &b,
            "/reset",
            &[
                ("password", OTHER_GOOD_PASSWORD),
                ("password_confirm", OTHER_GOOD_PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_from_test_client(&app.event("reset_done").await, Some("cy@example.com"));

    // The used link, opened again: recorded with why it is dead.
    b.get(app.local(&link)).send().await.unwrap();
    let events = app.events().await;
    let reopened = events
        .iter()
        .rfind(|e| e.kind == "reset_link_opened")
        .unwrap();
    assert!(detail(reopened).contains("already used"), "{reopened:?}");
    assert_from_test_client(reopened, Some("cy@example.com"));

    // A link nobody issued: no account to name.
    b.get(app.url(&format!("/reset?token={}", "B".repeat(43))))
        .send()
        .await
        .unwrap();
    let events = app.events().await;
    let forged = events
        .iter()
        .rfind(|e| e.kind == "reset_link_opened")
        .unwrap();
    assert_eq!(detail(forged), "unknown link");
    assert_from_test_client(forged, None);
}

async fn sign_in_sign_out_and_password_changes_are_recorded(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("di@example.com", GOOD_PASSWORD).await;
    let b = browser();
    app.sign_in_with(&b, "di@example.com", "not my password at all")
        .await;
    app.sign_in_with(&b, "ghost@example.com", GOOD_PASSWORD)
        .await;
    let failures = app.events_of("sign_in_failed", 2).await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_from_test_client(&failures[0], Some("di@example.com"));
    assert_eq!(detail(&failures[0]), "wrong password");
    assert_from_test_client(&failures[1], None);

    let res = app.sign_in_with(&b, "di@example.com", GOOD_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_from_test_client(&app.event("signed_in").await, Some("di@example.com"));

    let res = app
        .post_form_with(
            &b,
            "/account/password",
            &[
                ("current_password", GOOD_PASSWORD),
                ("password", OTHER_GOOD_PASSWORD),
                ("password_confirm", OTHER_GOOD_PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_from_test_client(&app.event("password_changed").await, Some("di@example.com"));

    app.post_form_with(&b, "/account/sessions/end-others", &[])
        .await;
    let ended = app.event("sessions_ended").await;
    assert_from_test_client(&ended, Some("di@example.com"));

    app.post_form_with(&b, "/logout", &[]).await;
    assert_from_test_client(&app.event("signed_out").await, Some("di@example.com"));
}

async fn creating_an_account_is_recorded(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_with(&browser(), "cy@example.com", GOOD_PASSWORD)
        .await;
    let created = app.event("account_created").await;
    assert_from_test_client(&created, Some("cy@example.com"));
}

async fn no_event_holds_a_token_a_password_or_a_session_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let b = browser();
    app.sign_up_with(&b, "eve@example.com", GOOD_PASSWORD).await;
    app.post_form_with(&b, "/logout", &[]).await;
    app.sign_in_with(&b, "eve@example.com", "a wrong guess here")
        .await;
    app.forgot("eve@example.com").await;
    let link = app.reset_link_in_email(1).await;
    app.open_link(&link).await;
    app.set_new_password("zq9#tiny", "zq9#tiny").await;
    app.set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    let res = app
        .sign_in_with(&b, "eve@example.com", OTHER_GOOD_PASSWORD)
        .await;
    let cookie = res
        .cookies()
        .find(|c| c.name().ends_with("latchkey_session"))
        .expect("a session cookie")
        .value()
        .to_owned();
    let session_id = session_id_in(&app, &cookie);

    let events = format!("{:?}", app.events().await);
    for secret in [
        TestApp::token_of(&link).as_str(),
        GOOD_PASSWORD,
        OTHER_GOOD_PASSWORD,
        "a wrong guess here",
        "zq9#tiny",
        cookie.as_str(),
        session_id.as_str(),
    ] {
        assert!(
            !events.contains(secret),
            "an event holds {secret:?}: {events}"
        );
    }
    for kind in [
        "signed_out",
        "sign_in_failed",
        "reset_done",
        "reset_refused",
        "signed_in",
    ] {
        assert!(events.contains(kind), "no {kind} event: {events}");
    }
}

async fn resets_refused_before_any_lookup_are_recorded_too(backend: Backend) {
    let app = spawn_app(backend).await;
    let b = browser();
    let res = b.get(app.url("/reset?token=short")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let opened = app.event("reset_link_opened").await;
    assert_eq!(detail(&opened), "malformed link");
    assert_from_test_client(&opened, None);

    let junk = json!({ "token": "not a token", "password": GOOD_PASSWORD });
    let res = b
        .post(app.url("/auth/reset"))
        .json(&junk)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let bad_email = json!({ "token": "A".repeat(43), "password": GOOD_PASSWORD, "email": "x" });
    let res = b
        .post(app.url("/auth/reset"))
        .json(&bad_email)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = app
        .post_form_with(
            &b,
            "/reset",
            &[
                ("password", GOOD_PASSWORD),
                ("password_confirm", GOOD_PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let refused = app.events_of("reset_refused", 3).await;
    let reasons: Vec<&str> = refused.iter().map(detail).collect();
    assert_eq!(
        reasons,
        [
            "malformed link",
            "the email given is not a valid address",
            "no reset link was opened in this browser"
        ]
    );
    for e in &refused {
        assert_from_test_client(e, None);
    }
}

/// The session id inside an (encrypted) session cookie, opened with the app's key.
fn session_id_in(app: &TestApp, cookie: &str) -> String {
    use actix_web::cookie::{Cookie, CookieJar};
    let key = latchkey::crypto::Keys::derive(&app.vars["SECRET_KEY"], None).cookie_key();
    let mut jar = CookieJar::new();
    let cookie = Cookie::parse_encoded(format!("latchkey_session={cookie}")).unwrap();
    jar.add_original(cookie.into_owned());
    let id = jar
        .private(&key)
        .get("latchkey_session")
        .expect("the cookie opens with the app's key")
        .value()
        .to_owned();
    assert_eq!(id.len(), 43, "a session id: {id}");
    id
}

both_backends!(
    a_reset_request_is_recorded_with_its_outcome_and_the_mail_it_sent,
    a_throttled_address_and_a_failed_delivery_are_recorded,
    opening_links_and_resetting_are_recorded_with_the_reason_for_refusals,
    sign_in_sign_out_and_password_changes_are_recorded,
    no_event_holds_a_token_a_password_or_a_session_id,
    creating_an_account_is_recorded,
    resets_refused_before_any_lookup_are_recorded_too,
);
