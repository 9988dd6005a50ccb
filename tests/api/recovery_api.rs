//! The Novel-compatible JSON API: `POST /auth/forgot` and `POST /auth/reset`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

async fn error_code(res: reqwest::Response) -> (StatusCode, String) {
    let status = res.status();
    let body: Value = res.json().await.expect("errors are JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message"
    );
    (status, code)
}

/// Creates an account and asks for a link through the API; returns the emailed token.
async fn account_with_token(app: &TestApp, email: &str) -> String {
    app.create_account(email, GOOD_PASSWORD).await;
    let res = app
        .post_json("/auth/forgot", &json!({ "email": email }))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    TestApp::token_of(&app.reset_link_in_email(1).await)
}

async fn the_whole_flow_works_through_the_api(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("kim@example.com", GOOD_PASSWORD).await;
    let res = app
        .post_json("/auth/forgot", &json!({"email": "kim@example.com"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["ok"], true);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("If an account exists")
    );

    let token = TestApp::token_of(&app.reset_link_in_email(1).await);
    let res = app
        .post_json(
            "/auth/reset",
            &json!({"token": token, "password": OTHER_GOOD_PASSWORD, "email": "KIM@example.com"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"ok": true}));
    let signed_in = app
        .sign_in_with(&new_client(), "kim@example.com", OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
}

async fn an_unknown_address_gets_the_identical_json(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("lee@example.com", GOOD_PASSWORD).await;
    let unknown = app
        .post_json("/auth/forgot", &json!({"email": "ghost@example.com"}))
        .await;
    let known = app
        .post_json("/auth/forgot", &json!({"email": "lee@example.com"}))
        .await;
    assert_eq!(unknown.status(), known.status());
    assert_eq!(unknown.text().await.unwrap(), known.text().await.unwrap());
    app.mail.wait_for(1).await;
    app.mail.assert_stays_at(1).await;
}

async fn a_token_with_another_email_is_refused_and_stays_usable(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = account_with_token(&app, "max@example.com").await;
    let res = app
        .post_json(
            "/auth/reset",
            &json!({"token": token, "password": OTHER_GOOD_PASSWORD, "email": "eve@example.com"}),
        )
        .await;
    assert_eq!(
        error_code(res).await,
        (StatusCode::BAD_REQUEST, "invalid_token".into())
    );
    let res = app
        .post_json(
            "/auth/reset",
            &json!({"token": token, "password": OTHER_GOOD_PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn a_weak_password_is_422_and_the_token_stays_usable(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = account_with_token(&app, "ned@example.com").await;
    for (password, code) in [
        ("passwordpassword", "password_too_weak"),
        ("short", "password_too_short"),
        (&"long ".repeat(30) as &str, "password_too_long"),
        ("ned@example.com ned", "password_too_weak"),
    ] {
        let res = app
            .post_json(
                "/auth/reset",
                &json!({"token": token, "password": password}),
            )
            .await;
        assert_eq!(
            error_code(res).await,
            (StatusCode::UNPROCESSABLE_ENTITY, code.to_owned()),
            "{password}"
        );
    }
    let res = app
        .post_json(
            "/auth/reset",
            &json!({"token": token, "password": OTHER_GOOD_PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn exactly_one_of_16_concurrent_submissions_wins(backend: Backend) {
    // From 16 places at once (one client alone would be held to its share of the
    // hashing pool).
    let app = spawn_app_with(backend, &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let token = account_with_token(&app, "olga@example.com").await;
    let url = app.url("/auth/reset");
    let attempts: Vec<_> = (0..16)
        .map(|i| {
            let client = client_from(&format!("198.51.100.{}", i + 1));
            let (url, token) = (url.clone(), token.clone());
            tokio::spawn(async move {
                let password = format!("concurrent winner number {i} orbit");
                let res = client
                    .post(url)
                    .json(&json!({"token": token, "password": password}))
                    .send()
                    .await
                    .unwrap();
                (res.status(), password)
            })
        })
        .collect();
    let mut results: Vec<(StatusCode, String)> = Vec::new();
    for attempt in attempts {
        results.push(attempt.await.unwrap());
    }
    let winners: Vec<&String> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, p)| p)
        .collect();
    let losers = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::BAD_REQUEST)
        .count();
    assert_eq!(
        winners.len(),
        1,
        "statuses: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(losers, 15);
    let res = app
        .sign_in_with(&new_client(), "olga@example.com", winners[0])
        .await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the winner's password is the one that holds"
    );
}

async fn api_errors_are_json_envelopes(backend: Backend) {
    let app = spawn_app(backend).await;
    let c = &app.client;
    let malformed = c
        .post(app.url("/auth/forgot"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(malformed).await,
        (StatusCode::BAD_REQUEST, "malformed_json".into())
    );
    let wrong_type = app.post_json("/auth/forgot", &json!({"email": 42})).await;
    assert_eq!(wrong_type.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let invalid = app
        .post_json("/auth/forgot", &json!({"email": "not an address"}))
        .await;
    assert_eq!(
        error_code(invalid).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_email".into())
    );
    let missing = app
        .post_json("/auth/reset", &json!({"password": GOOD_PASSWORD}))
        .await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let junk_token = app
        .post_json(
            "/auth/reset",
            &json!({"token": "abc", "password": GOOD_PASSWORD}),
        )
        .await;
    assert_eq!(
        error_code(junk_token).await,
        (StatusCode::BAD_REQUEST, "invalid_token".into())
    );
    let huge = app
        .post_json("/auth/forgot", &json!({"email": "a".repeat(70 * 1024)}))
        .await;
    assert_eq!(
        error_code(huge).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    let not_json = c
        .post(app.url("/auth/forgot"))
        .form(&[("email", "a@b.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let wrong_method = app.get("/auth/forgot").await;
    assert_eq!(
        error_code(wrong_method).await,
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
    let nowhere = app.post_json("/auth/nothing", &json!({})).await;
    assert_eq!(
        error_code(nowhere).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}

async fn a_link_dies_when_the_account_is_disabled_or_its_address_changes(backend: Backend) {
    use diesel::prelude::*;
    use latchkey::db::schema::users;
    let app = spawn_app_with(backend, &[("RESET_COOLDOWN_SECS", "0")]).await;
    app.create_account("pia@example.com", GOOD_PASSWORD).await;
    for (n, change) in [(1, "disable"), (2, "move")] {
        app.post_json("/auth/forgot", &json!({"email": "pia@example.com"}))
            .await;
        let token = TestApp::token_of(&app.reset_link_in_email(n).await);
        app.db(move |c| {
            let target = users::table.filter(users::email.eq("pia@example.com"));
            match change {
                "disable" => diesel::update(target)
                    .set(users::disabled.eq(true))
                    .execute(c)?,
                _ => diesel::update(target)
                    .set(users::email.eq("pia@new.example"))
                    .execute(c)?,
            };
            Ok(())
        })
        .await;
        let res = app
            .post_json(
                "/auth/reset",
                &json!({"token": token, "password": OTHER_GOOD_PASSWORD}),
            )
            .await;
        assert_eq!(
            error_code(res).await,
            (StatusCode::BAD_REQUEST, "invalid_token".into()),
            "{change}"
        );
        // Put the account back for the next round.
        app.db(|c| {
            diesel::update(users::table)
                .set((
                    users::disabled.eq(false),
                    users::email.eq("pia@example.com"),
                ))
                .execute(c)?;
            Ok(())
        })
        .await;
    }
}

async fn the_openapi_document_describes_both_endpoints(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/auth/forgot", "/auth/reset"] {
        let op = &doc["paths"][path]["post"];
        for status in ["200", "400", "413", "422"] {
            assert!(op["responses"][status].is_object(), "{path} {status}");
        }
    }
    let reset = &doc["components"]["schemas"]["ResetRequest"];
    assert_eq!(reset["required"], json!(["token", "password"]));
}

both_backends!(
    the_openapi_document_describes_both_endpoints,
    a_link_dies_when_the_account_is_disabled_or_its_address_changes,
    the_whole_flow_works_through_the_api,
    an_unknown_address_gets_the_identical_json,
    a_token_with_another_email_is_refused_and_stays_usable,
    a_weak_password_is_422_and_the_token_stays_usable,
    exactly_one_of_16_concurrent_submissions_wins,
    api_errors_are_json_envelopes,
);
