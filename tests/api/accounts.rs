//! Sign-up, sign-in, the account page and its sessions, the probes.

use reqwest::StatusCode;

use crate::both_backends;
use crate::helpers::*;

async fn signing_up_signs_in_and_shows_the_account(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_with(&app.client, "  Uma@Example.com", GOOD_PASSWORD)
        .await;
    let page = app.get("/account").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("uma@example.com"),
        "the address is normalised"
    );
    assert!(html.contains("this browser"));
    assert!(
        app.get("/")
            .await
            .text()
            .await
            .unwrap()
            .contains(r#"href="/account""#)
    );
}

async fn a_taken_address_or_a_weak_password_re_renders_the_form(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("vic@example.com", GOOD_PASSWORD).await;
    let taken = app
        .post_form(
            "/signup",
            &[
                ("email", "VIC@example.com"),
                ("password", OTHER_GOOD_PASSWORD),
                ("password_confirm", OTHER_GOOD_PASSWORD),
            ],
        )
        .await;
    assert_eq!(taken.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = taken.text().await.unwrap();
    assert!(html.contains("already exists"));
    assert!(
        html.contains(r#"value="VIC@example.com""#),
        "values are kept"
    );
    let weak = app
        .post_form(
            "/signup",
            &[
                ("email", "new.person@example.com"),
                ("password", "new.person@example.com"),
                ("password_confirm", "new.person@example.com"),
            ],
        )
        .await;
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn a_taken_address_is_said_before_the_password_is_judged(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("val@example.com", GOOD_PASSWORD).await;
    // Long enough, but weak: judging it would cost a strength check and a hash, for an
    // account that cannot be made anyway.
    let res = app
        .post_form(
            "/signup",
            &[
                ("email", "val@example.com"),
                ("password", "passwordpassword1"),
                ("password_confirm", "passwordpassword1"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(html.contains("already exists"), "{html}");
    assert!(!html.contains("too easy to guess"), "{html}");
}

async fn a_failed_sign_in_says_one_generic_thing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("wes@example.com", GOOD_PASSWORD).await;
    let wrong = app
        .sign_in_with(&app.client, "wes@example.com", OTHER_GOOD_PASSWORD)
        .await;
    let (s1, b1) = (wrong.status(), wrong.text().await.unwrap());
    let unknown = app
        .sign_in_with(&app.client, "nobody@example.com", OTHER_GOOD_PASSWORD)
        .await;
    let (s2, b2) = (unknown.status(), unknown.text().await.unwrap());
    assert_eq!(s1, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s1, s2);
    assert!(b1.contains("do not match an account"));
    assert_eq!(b1.replace("wes@", "X@"), b2.replace("nobody@", "X@"));
    assert!(
        b1.contains(r#"href="/forgot""#),
        "a Forgot your password? link"
    );
}

async fn sign_in_honours_only_local_next_paths(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("xia@example.com", GOOD_PASSWORD).await;
    for (next, expected) in [
        ("/account?tab=1", "/account?tab=1"),
        ("//evil.test", "/account"),
        ("https://evil.test", "/account"),
        ("/\\evil.test", "/account"),
        ("/%2F/evil.test", "/account"),
        ("/%2f%2fevil.test", "/account"),
        ("%2F%2Fevil.test", "/account"),
        ("/%5Cevil.test", "/account"),
        ("/%252F/evil.test", "/account"),
        ("/%09/evil.test", "/account"),
        ("https:%2F%2Fevil.test", "/account"),
    ] {
        let browser = new_client();
        let res = app
            .post_form_with(
                &browser,
                "/login",
                &[
                    ("email", "xia@example.com"),
                    ("password", GOOD_PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()["location"], expected, "{next}");
        // Already signed in, GET /login?next=… redirects at once: the same rule holds.
        let query: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let res = app
            .get_with(&browser, &format!("/login?next={query}"))
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()["location"], expected, "GET {next}");
    }
}

async fn the_account_page_requires_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.get("/account").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login?next=/account");
}

async fn signing_out_ends_the_session(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_with(&app.client, "yan@example.com", GOOD_PASSWORD)
        .await;
    let res = app.post_form("/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
    assert_eq!(app.get("/account").await.status(), StatusCode::SEE_OTHER);
}

async fn changing_the_password_ends_other_sessions_and_sends_a_notice(backend: Backend) {
    let app = spawn_app(backend).await;
    let phone = new_client();
    app.sign_up_with(&app.client, "zed@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(
        app.sign_in_with(&phone, "zed@example.com", GOOD_PASSWORD)
            .await
            .status(),
        StatusCode::SEE_OTHER
    );

    let wrong = app
        .post_form(
            "/account/password",
            &[
                ("current_password", "not my password at all"),
                ("password", OTHER_GOOD_PASSWORD),
                ("password_confirm", OTHER_GOOD_PASSWORD),
            ],
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("not your current password")
    );

    let ok = app
        .post_form(
            "/account/password",
            &[
                ("current_password", GOOD_PASSWORD),
                ("password", OTHER_GOOD_PASSWORD),
                ("password_confirm", OTHER_GOOD_PASSWORD),
            ],
        )
        .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/account").await.status(),
        StatusCode::OK,
        "this session stays"
    );
    assert_eq!(
        app.get_with(&phone, "/account").await.status(),
        StatusCode::SEE_OTHER,
        "the other one ends"
    );
    let email = &app.mail.wait_for(1).await[0];
    assert!(email.subject.contains("password was changed"));
    assert_eq!(email.envelope_to, vec!["zed@example.com"]);
}

async fn signing_out_other_sessions_keeps_this_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let tablet = new_client();
    app.sign_up_with(&app.client, "ada@example.com", GOOD_PASSWORD)
        .await;
    app.sign_in_with(&tablet, "ada@example.com", GOOD_PASSWORD)
        .await;
    let listing = app.get("/account").await.text().await.unwrap();
    assert_eq!(
        listing.matches("<li>").count(),
        2,
        "both sessions are listed"
    );
    let res = app.post_form("/account/sessions/end-others", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.get("/account").await.status(), StatusCode::OK);
    assert_eq!(
        app.get_with(&tablet, "/account").await.status(),
        StatusCode::SEE_OTHER
    );
}

async fn the_probes_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    let css = app.get("/static/style.css").await;
    assert_eq!(css.status(), StatusCode::OK);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

both_backends!(
    signing_up_signs_in_and_shows_the_account,
    a_taken_address_or_a_weak_password_re_renders_the_form,
    a_failed_sign_in_says_one_generic_thing,
    a_taken_address_is_said_before_the_password_is_judged,
    sign_in_honours_only_local_next_paths,
    the_account_page_requires_sign_in,
    signing_out_ends_the_session,
    changing_the_password_ends_other_sessions_and_sends_a_notice,
    signing_out_other_sessions_keeps_this_one,
    the_probes_answer,
);
