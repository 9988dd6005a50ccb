//! What an attacker tries: forged Host headers, header injection, CSRF, a copy of the
//! database; and the headers and cookies every page must carry.

use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

async fn a_form_without_csrf_token_is_refused_and_sends_no_mail(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("pat@example.com", GOOD_PASSWORD).await;
    // A browser that has a CSRF cookie but posts without the field, and one with a wrong field.
    app.csrf(&app.client).await;
    let res = app
        .client
        .post(app.url("/forgot"))
        .form(&[("email", "pat@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("could not be verified"));
    let res = app
        .client
        .post(app.url("/forgot"))
        .form(&[("email", "pat@example.com"), ("csrf_token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // A cross-site attacker's browser: no cookie at all, a token from another browser.
    let token = app.csrf(&new_client()).await;
    let res = new_client()
        .post(app.url("/forgot"))
        .form(&[("email", "pat@example.com"), ("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    for path in [
        "/login",
        "/signup",
        "/logout",
        "/reset",
        "/account/password",
    ] {
        let res = new_client()
            .post(app.url(path))
            .form(&[("email", "x@y.z")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    app.mail.assert_stays_at(0).await;
}

async fn a_forged_host_header_never_reaches_the_email(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("quinn@example.com", GOOD_PASSWORD).await;
    let token = app.csrf(&app.client).await;
    let res = app
        .client
        .post(app.url("/forgot"))
        .header("Host", "evil.example")
        .header("X-Forwarded-Host", "evil.example")
        .header("Forwarded", "host=evil.example;proto=https")
        .form(&[
            ("email", "quinn@example.com"),
            ("csrf_token", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let email = &app.mail.wait_for(1).await[0];
    assert!(!email.raw.contains("evil.example"));
    assert!(
        email
            .link_starting_with(&format!("{BASE_URL}reset?token="))
            .is_some()
    );
}

async fn crlf_in_the_address_never_reaches_a_header(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("rae@example.com", GOOD_PASSWORD).await;
    for evil in [
        "rae@example.com\r\nBcc: evil@attacker.test",
        "rae@example.com\nBcc: evil@attacker.test",
        "rae@example.com%0d%0aBcc:evil@attacker.test",
    ] {
        let res = app.forgot(evil).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{evil:?}");
        let res = app.post_json("/auth/forgot", &json!({"email": evil})).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{evil:?}");
    }
    app.mail.assert_stays_at(0).await;
}

async fn tokens_are_useless_in_a_copy_of_the_database(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("sam@example.com", GOOD_PASSWORD).await;
    // Hold the SMTP reply, so the email is still queued (with its body) when we look.
    app.mail.hold();
    app.forgot("sam@example.com").await;
    let link = app.reset_link_in_email(1).await;
    let token = TestApp::token_of(&link);
    app.outbox_row("reset", "queued").await;
    app.open_link(&link).await;
    let dump = dump_database(&app).await;
    let text = String::from_utf8_lossy(&dump);
    for table in ["users", "reset_tokens", "outbox", "events", "rate_limits"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{table}: "))),
            "the dump has no row of {table}: it does not read every table"
        );
    }
    let raw =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &token).unwrap();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    for needle in [token.as_bytes(), &raw[..], hex.as_bytes()] {
        assert!(
            !dump.windows(needle.len()).any(|w| w == needle),
            "the token is readable in the database"
        );
    }
    // Once sent, the body is gone altogether.
    app.mail.release();
    let reset = app.outbox_row("reset", "sent").await;
    assert!(reset.payload.is_empty(), "a sent body is scrubbed");
}

/// Every row of every table the database holds (read from its own catalogue, so a table
/// added later is dumped too), one line per row: `table: values`, binary columns as
/// lowercase hex.
async fn dump_database(app: &TestApp) -> Vec<u8> {
    every_row(app).await.join("\n").into_bytes()
}

async fn every_row(app: &TestApp) -> Vec<String> {
    app.db(|c| {
        use diesel::{QueryableByName, RunQueryDsl, sql_query, sql_types::Text};
        use latchkey::db::AnyConnection;
        #[derive(QueryableByName)]
        struct Line {
            #[diesel(sql_type = Text)]
            t: String,
        }
        let mut rows = Vec::new();
        match c {
            AnyConnection::Postgresql(pg) => {
                let tables: Vec<Line> = sql_query(
                    "SELECT table_name::text AS t FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
                     ORDER BY 1",
                )
                .load(pg)?;
                for table in tables {
                    // bytea columns come out as "\\x" and lowercase hex.
                    let lines: Vec<Line> = sql_query(format!(
                        "SELECT row_to_json(x)::text AS t FROM \"{}\" x",
                        table.t
                    ))
                    .load(pg)?;
                    rows.extend(lines.into_iter().map(|l| format!("{}: {}", table.t, l.t)));
                }
            }
            AnyConnection::Sqlite(lite) => {
                let tables: Vec<Line> = sql_query(
                    "SELECT name AS t FROM sqlite_master WHERE type = 'table' ORDER BY 1",
                )
                .load(lite)?;
                for table in tables {
                    let columns: Vec<Line> = sql_query(format!(
                        "SELECT name AS t FROM pragma_table_info('{}')",
                        table.t
                    ))
                    .load(lite)?;
                    let values: Vec<String> = columns
                        .iter()
                        .map(|col| {
                            format!(
                                "CASE WHEN typeof(\"{0}\") = 'blob' THEN lower(hex(\"{0}\")) \
                                 ELSE quote(\"{0}\") END",
                                col.t
                            )
                        })
                        .collect();
                    let lines: Vec<Line> = sql_query(format!(
                        "SELECT {} AS t FROM \"{}\"",
                        values.join(" || ',' || "),
                        table.t
                    ))
                    .load(lite)?;
                    rows.extend(lines.into_iter().map(|l| format!("{}: {}", table.t, l.t)));
                }
            }
        }
        Ok(rows)
    })
    .await
}

async fn pages_carry_the_security_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in ["/", "/login", "/signup", "/forgot", "/reset", "/nowhere"] {
        let res = app.get(path).await;
        let h = res.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
    }
    let res = app.client.post(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let json = app
        .post_json("/auth/forgot", &json!({"email": "x@example.com"}))
        .await;
    assert_eq!(json.headers()["x-content-type-options"], "nosniff");
}

async fn cookies_are_http_only_and_same_site_and_renewed_at_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("tia@example.com", GOOD_PASSWORD).await;
    // An opened reset link is kept in a cookie of its own: sealed, HttpOnly, Lax, and
    // no longer lived than a link.
    app.forgot("tia@example.com").await;
    let link = app.reset_link_in_email(1).await;
    let opened = app.open_link(&link).await;
    assert!(
        session_cookie(&opened).is_none(),
        "opening a link starts no session"
    );
    let reset = named_cookie(&opened, "latchkey_reset=").expect("the link's cookie");
    let token = link.split("token=").nth(1).unwrap();
    assert!(
        !reset.contains(token),
        "the token never goes into a cookie: {reset}"
    );
    for flag in ["HttpOnly", "SameSite=Lax", "Max-Age=3600", "Path=/"] {
        assert!(reset.contains(flag), "{flag}: {reset}");
    }
    let first = app
        .sign_in_with(&app.client, "tia@example.com", GOOD_PASSWORD)
        .await;
    let before = session_cookie(&first).expect("sign-in sets the session cookie");
    let res = app
        .sign_in_with(&app.client, "tia@example.com", GOOD_PASSWORD)
        .await;
    let after = session_cookie(&res).expect("sign-in sets the session cookie");
    assert!(
        after.contains("HttpOnly") && after.contains("SameSite=Lax"),
        "{after}"
    );
    assert!(
        !after.contains("Secure"),
        "plain-http BASE_URL: no Secure flag"
    );
    assert_ne!(
        cookie_value(&before),
        cookie_value(&after),
        "a new session id at sign-in"
    );
}

fn named_cookie(res: &reqwest::Response, prefix: &str) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(prefix))
        .map(str::to_owned)
}

fn session_cookie(res: &reqwest::Response) -> Option<String> {
    named_cookie(res, "latchkey_session=")
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn anonymous_page_views_write_nothing_to_the_database(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = every_row(&app).await;
    for path in [
        "/",
        "/login",
        "/signup",
        "/forgot",
        "/reset",
        "/static/style.css",
    ] {
        app.get(path).await;
    }
    // Nothing written anywhere: every row of every table as it was before the views.
    let after = every_row(&app).await;
    assert_eq!(after, before);
}

/// Every form's POST: CSRF is checked before the body is read, so a missing or unreadable
/// body is the 403 "form expired" page too.
const FORM_POSTS: [&str; 7] = [
    "/login",
    "/signup",
    "/logout",
    "/forgot",
    "/reset",
    "/account/password",
    "/account/sessions/end-others",
];

async fn a_post_without_a_csrf_field_is_403_whatever_its_body(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_with(&app.client, "cal@example.com", GOOD_PASSWORD)
        .await;
    let admin = "/admin/users/1/disable".to_owned();
    let retry = "/admin/outbox/1/retry".to_owned();
    let paths = FORM_POSTS
        .iter()
        .map(|p| (*p).to_owned())
        .chain([admin, retry]);
    for path in paths {
        // No body and no content type; a body of another type; a form without the field.
        let bare = app.client.post(app.url(&path)).send().await.unwrap();
        assert_eq!(bare.status(), StatusCode::FORBIDDEN, "{path} with no body");
        assert!(bare.text().await.unwrap().contains("could not be verified"));
        let text = app
            .client
            .post(app.url(&path))
            .header("content-type", "text/plain")
            .body("email=cal@example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(
            text.status(),
            StatusCode::FORBIDDEN,
            "{path} with text/plain"
        );
        let fieldless = app
            .client
            .post(app.url(&path))
            .form(&[("email", "cal@example.com")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            fieldless.status(),
            StatusCode::FORBIDDEN,
            "{path} without the field"
        );
    }
    assert!(app.is_signed_in(&app.client).await, "nothing was changed");
}

async fn a_duplicated_csrf_field_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_with(&app.client, "dee@example.com", GOOD_PASSWORD)
        .await;
    let token = app.csrf(&app.client).await;
    let res = app
        .client
        .post(app.url("/account/password"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("csrf_token", token.as_str()),
            ("current_password", GOOD_PASSWORD),
            ("password", OTHER_GOOD_PASSWORD),
            ("password_confirm", OTHER_GOOD_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        [StatusCode::BAD_REQUEST, StatusCode::FORBIDDEN].contains(&res.status()),
        "{}",
        res.status()
    );
    assert!(app.signs_in("dee@example.com", GOOD_PASSWORD).await);
    let res = app
        .client
        .post(app.url("/forgot"))
        .form(&[
            ("csrf_token", "forged"),
            ("email", "dee@example.com"),
            ("csrf_token", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    app.mail.assert_stays_at(0).await;
}

async fn the_csrf_cookie_is_replaced_at_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("eve@example.com", GOOD_PASSWORD).await;
    // A form token from before sign-in (one a network attacker could have planted the
    // cookie for, over plain http) must not work afterwards.
    let before = app.csrf(&app.client).await;
    let res = app
        .sign_in_with(&app.client, "eve@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        res.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("latchkey_csrf=")),
        "sign-in sets a new CSRF cookie"
    );
    let stale = app
        .client
        .post(app.url("/account/sessions/end-others"))
        .form(&[("csrf_token", before.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::FORBIDDEN);
    let fresh = app.post_form("/account/sessions/end-others", &[]).await;
    assert_eq!(fresh.status(), StatusCode::SEE_OTHER);
}

both_backends!(
    a_post_without_a_csrf_field_is_403_whatever_its_body,
    a_duplicated_csrf_field_changes_nothing,
    the_csrf_cookie_is_replaced_at_sign_in,
    a_form_without_csrf_token_is_refused_and_sends_no_mail,
    a_forged_host_header_never_reaches_the_email,
    crlf_in_the_address_never_reaches_a_header,
    tokens_are_useless_in_a_copy_of_the_database,
    pages_carry_the_security_headers,
    cookies_are_http_only_and_same_site_and_renewed_at_sign_in,
    anonymous_page_views_write_nothing_to_the_database,
);
