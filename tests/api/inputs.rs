//! Bad input gets a clear 4xx and loses nothing: never a 500, never a panic.

use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

async fn bad_form_input_gets_a_4xx_never_a_500(backend: Backend) {
    let app = spawn_app(backend).await;
    let long = "a".repeat(10_000);
    let long_email = format!("{}@example.com", "a".repeat(300));
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, StatusCode);
    let cases: Vec<Case> = vec![
        (
            "/forgot",
            vec![("email", "")],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("/forgot", vec![], StatusCode::UNPROCESSABLE_ENTITY),
        (
            "/forgot",
            vec![("email", &long_email)],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/forgot",
            vec![("email", "ü@ö.ä\u{202e}")],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/forgot",
            vec![("email", "\u{0}@x.com")],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/signup",
            vec![
                ("email", "a@b.com"),
                ("password", &long),
                ("password_confirm", &long),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/signup",
            vec![
                ("email", "a@b.com"),
                ("password", "ü🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂"),
                ("password_confirm", "x"),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/signup",
            vec![("email", "😀"), ("password", ""), ("password_confirm", "")],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/login",
            vec![("email", &long), ("password", &long)],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/login",
            vec![("email", "a@b.com"), ("password", "")],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (path, fields, expected) in cases {
        let res = app.post_form(path, &fields).await;
        assert_eq!(
            res.status(),
            expected,
            "{path} {:?}",
            fields
                .iter()
                .map(|f| (f.0, f.1.chars().take(20).collect::<String>()))
                .collect::<Vec<_>>()
        );
    }
    // A body over 64 KiB, a duplicated field, and a body that is not a form at all.
    let token = app.csrf(&app.client).await;
    let huge = format!("csrf_token={token}&email={}", "a".repeat(70 * 1024));
    let res = app
        .client
        .post(app.url("/forgot"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let dup = format!("csrf_token={token}&email=a@b.com&email=c@d.com");
    let res = app
        .client
        .post(app.url("/forgot"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(dup)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    let res = app
        .client
        .post(app.url("/forgot"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    let res = app
        .client
        .post(app.url("/forgot"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0xff, 0xfe, b'=', 0x80])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
}

async fn bad_json_input_gets_a_4xx_never_a_500(backend: Backend) {
    let app = spawn_app(backend).await;
    let bodies = [
        json!({}),
        json!([]),
        json!(null),
        json!("alice@example.com"),
        json!({"email": null}),
        json!({"email": ["a@b.com"]}),
        json!({"email": {"nested": true}}),
        json!({"email": "a".repeat(5000)}),
        json!({"email": "ünïcødé@例え.テスト"}),
        json!({"email": "a@b.com\r\nBcc: c@d.com"}),
    ];
    for body in &bodies {
        let res = app.post_json("/auth/forgot", body).await;
        assert!(res.status().is_client_error(), "{body}: {}", res.status());
        let envelope: serde_json::Value = res.json().await.unwrap();
        assert!(envelope["error"]["code"].is_string(), "{body}");
    }
    let reset_bodies = [
        json!({"token": 1, "password": "x"}),
        json!({"token": "a".repeat(43), "password": 5}),
        json!({"token": "a".repeat(43), "password": "valid but unknown token here"}),
        json!({"token": "😀".repeat(11), "password": "valid but unknown token here"}),
        json!({"token": "a".repeat(10_000), "password": "x"}),
        json!({"token": "a".repeat(43), "password": "valid but unknown token here", "email": 7}),
    ];
    for body in &reset_bodies {
        let res = app.post_json("/auth/reset", body).await;
        assert!(res.status().is_client_error(), "{body}: {}", res.status());
    }
}

async fn odd_links_get_the_dead_link_page(backend: Backend) {
    let app = spawn_app(backend).await;
    for query in [
        "",
        "?token=",
        "?token=%00",
        "?token=abc",
        "?token=%E2%80%AE",
        &format!("?token={}", "a".repeat(5000)),
        "?token=a&token=b",
    ] {
        let res = app.get(&format!("/reset{query}")).await;
        assert!(res.status().is_client_error(), "{query}: {}", res.status());
    }
}

async fn addresses_that_cannot_be_mailed_or_that_deceive_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    for address in [
        "dot.@example.com",
        ".dot@example.com",
        "a..b@example.com",
        "=?utf-8?q?x?=@example.com",
        "x=?utf-8?b?eA==?=y@example.com",
        "alice@example.com\u{200b}",
        "al\u{200d}ice@example.com",
        "alice@exam\u{00ad}ple.com",
        "alice@exa\u{202e}mple.com",
        "alice@127.0.0.1",
        "alice@localhost",
        "alice@[::1]",
        "alice@-example.com",
        "alice@example..com",
        "\"alice smith\"@example.com",
    ] {
        let res = app
            .post_form(
                "/signup",
                &[
                    ("email", address),
                    ("password", GOOD_PASSWORD),
                    ("password_confirm", GOOD_PASSWORD),
                ],
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "sign-up {address:?}"
        );
        let res = app
            .post_json("/auth/forgot", &json!({ "email": address }))
            .await;
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "forgot {address:?}"
        );
    }
    let accounts = app.db(latchkey::db::users::count).await;
    assert_eq!(accounts, 0);
}

async fn look_alike_addresses_are_the_same_account(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("alice@example.com", GOOD_PASSWORD).await;
    // Fullwidth letters are NFKC-equal to ASCII ones: the same address, already taken.
    for look_alike in [
        "alice@\u{ff45}xample.com",
        "\u{ff41}lice@example.com",
        "ALICE@EXAMPLE.COM",
    ] {
        let res = app
            .post_form(
                "/signup",
                &[
                    ("email", look_alike),
                    ("password", OTHER_GOOD_PASSWORD),
                    ("password_confirm", OTHER_GOOD_PASSWORD),
                ],
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{look_alike:?}"
        );
        assert!(res.text().await.unwrap().contains("already exists"));
    }
    assert!(
        app.signs_in("alice@\u{ff45}xample.com", GOOD_PASSWORD)
            .await
    );
    assert_eq!(app.db(latchkey::db::users::count).await, 1);
}

async fn internationalised_domains_are_stored_and_mailed_as_punycode(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("zoe@B\u{fc}cher.example", GOOD_PASSWORD)
        .await;
    let stored = app
        .db(|c| latchkey::db::users::find_by_email(c, "zoe@xn--bcher-kva.example"))
        .await;
    assert!(stored.is_some(), "the domain is stored as punycode");
    // Either spelling reaches the account.
    app.forgot("zoe@b\u{fc}cher.example").await;
    let email = &app.mail.wait_for(1).await[0];
    assert_eq!(email.envelope_to, vec!["zoe@xn--bcher-kva.example"]);
    assert!(
        email.to.contains("zoe@xn--bcher-kva.example"),
        "{}",
        email.to
    );
}

both_backends!(
    addresses_that_cannot_be_mailed_or_that_deceive_are_refused,
    look_alike_addresses_are_the_same_account,
    internationalised_domains_are_stored_and_mailed_as_punycode,
    bad_form_input_gets_a_4xx_never_a_500,
    bad_json_input_gets_a_4xx_never_a_500,
    odd_links_get_the_dead_link_page,
);
