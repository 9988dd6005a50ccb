//! The recovery flow as a browser with JavaScript off goes through it.

use reqwest::StatusCode;

use crate::both_backends;
use crate::helpers::*;

async fn the_whole_recovery_flow_works_in_a_browser(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("alice@example.com", GOOD_PASSWORD).await;

    let res = app.forgot("Alice@Example.com ").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("If an account exists for that address")
    );

    let emails = app.mail.wait_for(1).await;
    let email = &emails[0];
    assert_eq!(email.envelope_to, vec!["alice@example.com"]);
    assert!(email.from.contains("no-reply@latchkey.test"));
    assert_eq!(email.envelope_from, "<no-reply@latchkey.test>");
    assert_eq!(email.to, "alice@example.com");
    assert_eq!(email.content_type, "multipart/alternative");
    assert!(email.subject.contains("Reset"));
    assert!(email.text.contains("expires in 1 hour"));
    assert!(email.text.contains("If this wasn't you, ignore this email"));
    assert!(
        email.text.contains("127.0.0.1"),
        "the email says where the request came from"
    );
    let link = app.reset_link_in_email(1).await;
    assert!(
        email.html.contains(&link),
        "the HTML part carries the same link"
    );

    // Opening the link moves the token into the session and out of the address bar.
    let res = app.open_link(&link).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/reset");

    let form = app.get("/reset").await;
    assert_eq!(form.status(), StatusCode::OK);
    let html = form.text().await.unwrap();
    assert!(html.contains(r#"name="username" value="alice@example.com" autocomplete="username""#));
    assert!(html.contains(r#"autocomplete="new-password""#));
    assert!(
        !html.contains(&TestApp::token_of(&link)),
        "the token is not in the page"
    );

    let res = app
        .set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/login"),
        "not signed in automatically: {location}"
    );
    let login_page = app.get(&location).await.text().await.unwrap();
    assert!(login_page.contains("Your password has been changed"));
    assert_eq!(
        app.get("/account").await.status(),
        StatusCode::SEE_OTHER,
        "a reset does not sign in"
    );

    let browser = new_client();
    let old = app
        .sign_in_with(&browser, "alice@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(old.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let new = app
        .sign_in_with(&browser, "alice@example.com", OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(new.status(), StatusCode::SEE_OTHER);
    assert_eq!(new.headers()["location"], "/account");

    let emails = app.mail.wait_for(2).await;
    let changed = &emails[1];
    assert!(changed.subject.contains("password was changed"));
    assert!(changed.text.contains("If you did not"));
    assert!(
        changed
            .link_starting_with(&format!("{BASE_URL}reset"))
            .is_none(),
        "never a live reset link"
    );
}

async fn a_used_reset_link_cannot_be_used_again(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("bob@example.com", GOOD_PASSWORD).await;
    app.forgot("bob@example.com").await;
    let link = app.reset_link_in_email(1).await;
    app.open_link(&link).await;
    let res = app
        .set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    let again = app.open_link(&link).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let page = again.text().await.unwrap();
    assert!(page.contains("no longer works") && page.contains(r#"href="/forgot""#));

    let via_api = app
        .post_json("/auth/reset", &serde_json::json!({"token": TestApp::token_of(&link), "password": "third fresh passphrase here"}))
        .await;
    assert_eq!(via_api.status(), StatusCode::BAD_REQUEST);
}

async fn an_expired_link_is_refused_when_opened(backend: Backend) {
    let app = spawn_app_with(backend, &[("RESET_TOKEN_TTL_SECS", "1")]).await;
    app.create_account("carol@example.com", GOOD_PASSWORD).await;
    app.forgot("carol@example.com").await;
    let link = app.reset_link_in_email(1).await;
    assert!(
        app.mail.emails().await[0]
            .text
            .contains("expires in 1 second")
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let res = app.open_link(&link).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains("ask for a new link"));
}

async fn an_expired_link_is_refused_at_submit(backend: Backend) {
    let app = spawn_app_with(backend, &[("RESET_TOKEN_TTL_SECS", "3")]).await;
    app.create_account("dan@example.com", GOOD_PASSWORD).await;
    app.forgot("dan@example.com").await;
    let link = app.reset_link_in_email(1).await;
    let opened = app.open_link(&link).await;
    assert_eq!(opened.status(), StatusCode::SEE_OTHER);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let res = app
        .set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let still = app
        .sign_in_with(&new_client(), "dan@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(
        still.status(),
        StatusCode::SEE_OTHER,
        "the password did not change"
    );
}

async fn an_unknown_address_gets_the_identical_page_and_no_mail(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("erin@example.com", GOOD_PASSWORD).await;
    let unknown = app.forgot("nobody@example.com").await;
    let (unknown_status, unknown_body) = (unknown.status(), unknown.text().await.unwrap());
    let known = app.forgot("erin@example.com").await;
    let (known_status, known_body) = (known.status(), known.text().await.unwrap());
    assert_eq!(unknown_status, StatusCode::OK);
    assert_eq!(unknown_status, known_status);
    assert_eq!(unknown_body, known_body);
    app.mail.wait_for(1).await;
    app.mail.assert_stays_at(1).await;
    assert_eq!(
        app.mail.emails().await[0].envelope_to,
        vec!["erin@example.com"]
    );
}

async fn a_weak_or_mismatched_password_keeps_the_link_alive(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("fay@example.com", GOOD_PASSWORD).await;
    app.forgot("fay@example.com").await;
    let link = app.reset_link_in_email(1).await;
    app.open_link(&link).await;

    let weak = app
        .set_new_password("passwordpassword", "passwordpassword")
        .await;
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = weak.text().await.unwrap();
    assert!(
        html.contains("too easy to guess"),
        "says why in plain words"
    );
    assert!(
        html.contains(r#"id="password-error""#),
        "the message sits beside the field"
    );

    let huge = "x".repeat(10_000);
    let overlong = app.set_new_password(&huge, &huge).await;
    assert_eq!(overlong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        overlong
            .text()
            .await
            .unwrap()
            .contains("at most 128 characters")
    );

    let short = app.set_new_password("short", "short").await;
    assert_eq!(short.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        short
            .text()
            .await
            .unwrap()
            .contains("at least 15 characters")
    );

    let mismatch = app
        .set_new_password(OTHER_GOOD_PASSWORD, GOOD_PASSWORD)
        .await;
    assert_eq!(mismatch.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = mismatch.text().await.unwrap();
    assert!(html.contains("do not match"));
    assert!(
        !html.contains(OTHER_GOOD_PASSWORD),
        "passwords are never echoed back"
    );

    let ok = app
        .set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
}

async fn other_sessions_end_after_a_reset(backend: Backend) {
    let app = spawn_app(backend).await;
    let laptop = new_client();
    app.sign_up_with(&laptop, "gus@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(
        app.get_with(&laptop, "/account").await.status(),
        StatusCode::OK
    );

    app.forgot("gus@example.com").await;
    let link = app.reset_link_in_email(1).await;
    app.open_link(&link).await;
    let res = app
        .set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    let after = app.get_with(&laptop, "/account").await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert_eq!(after.headers()["location"], "/login?next=/account");
}

async fn three_quick_requests_send_one_email(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("hal@example.com", GOOD_PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(app.forgot("hal@example.com").await.status(), StatusCode::OK);
    }
    app.mail.wait_for(1).await;
    app.mail.assert_stays_at(1).await;
}

async fn asking_again_does_not_kill_the_earlier_link(backend: Backend) {
    let app = spawn_app_with(backend, &[("RESET_COOLDOWN_SECS", "0")]).await;
    app.create_account("ivy@example.com", GOOD_PASSWORD).await;
    app.forgot("ivy@example.com").await;
    let first = app.reset_link_in_email(1).await;
    app.forgot("ivy@example.com").await;
    let second = app.reset_link_in_email(2).await;
    assert_ne!(first, second);
    // Mail arrives late and out of order: the first link still works.
    let res = app.open_link(&first).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = app
        .set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // Once the password changed, every other outstanding link is dead.
    let res = new_client().get(app.local(&second)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

async fn the_dev_mailbox_shows_the_mail_when_smtp_is_not_configured(backend: Backend) {
    let app = spawn_app_with(backend, &[("SMTP_URL", "")]).await;
    app.create_account("jo@example.com", GOOD_PASSWORD).await;
    app.forgot("jo@example.com").await;
    let mut link = None;
    for _ in 0..50 {
        let page = app.get("/dev/mail").await.text().await.unwrap();
        if let Some(start) = page.find(&format!("href=\"{BASE_URL}reset?token=")) {
            let rest = &page[start + 6..];
            link = Some(rest[..rest.find('"').unwrap()].to_owned());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let link = link.expect("the reset email shows up in the dev mailbox");
    let res = app.open_link(&link).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

async fn the_dev_mailbox_does_not_exist_with_smtp(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get("/dev/mail").await.status(), StatusCode::NOT_FOUND);
}

async fn the_daily_cap_silently_stops_further_emails(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("RESET_COOLDOWN_SECS", "0"), ("RESET_DAILY_CAP", "2")],
    )
    .await;
    app.create_account("cap@example.com", GOOD_PASSWORD).await;
    let mut pages = Vec::new();
    for n in 1..=3 {
        let res = app.forgot("cap@example.com").await;
        assert_eq!(res.status(), StatusCode::OK);
        pages.push(res.text().await.unwrap());
        if n <= 2 {
            app.mail.wait_for(n).await;
        }
    }
    assert!(
        pages.windows(2).all(|w| w[0] == w[1]),
        "the same page, capped or not"
    );
    app.mail.assert_stays_at(2).await;
}

both_backends!(
    the_daily_cap_silently_stops_further_emails,
    the_whole_recovery_flow_works_in_a_browser,
    a_used_reset_link_cannot_be_used_again,
    an_expired_link_is_refused_when_opened,
    an_expired_link_is_refused_at_submit,
    an_unknown_address_gets_the_identical_page_and_no_mail,
    a_weak_or_mismatched_password_keeps_the_link_alive,
    other_sessions_end_after_a_reset,
    three_quick_requests_send_one_email,
    asking_again_does_not_kill_the_earlier_link,
    the_dev_mailbox_shows_the_mail_when_smtp_is_not_configured,
    the_dev_mailbox_does_not_exist_with_smtp,
);
