//! Rotating `SECRET_KEY` with `SECRET_KEY_PREVIOUS`: nobody is signed out, no form in
//! flight fails, no live reset link or queued email dies. Without the previous key, all of
//! them would (the negative controls below).

use reqwest::StatusCode;

use crate::both_backends;
use crate::helpers::*;

const NEW_KEY: &str = "the-new-secret-key-after-rotation-the-new-secret-key-after-rotation!";

/// The key the test apps start with (see `spawn_app`).
fn old_key(app: &TestApp) -> String {
    app.vars["SECRET_KEY"].clone()
}

async fn end_others_with_token(
    app: &TestApp,
    browser: &reqwest::Client,
    token: &str,
) -> StatusCode {
    browser
        .post(app.url("/account/sessions/end-others"))
        .form(&[("csrf_token", token)])
        .send()
        .await
        .unwrap()
        .status()
}

async fn rotating_the_key_keeps_sessions_and_open_forms_alive(backend: Backend) {
    let before = spawn_app(backend).await;
    let (visitor, absent) = (new_client(), new_client());
    before
        .sign_up_with(&visitor, "uma@example.com", GOOD_PASSWORD)
        .await;
    before
        .sign_up_with(&absent, "vic@example.com", GOOD_PASSWORD)
        .await;
    let old_form_token = before.csrf(&visitor).await;
    before.stop().await;

    let old = old_key(&before);
    let rotating = before
        .sibling_with(&[("SECRET_KEY", NEW_KEY), ("SECRET_KEY_PREVIOUS", &old)])
        .await;
    let res = rotating.get_with(&visitor, "/account").await;
    assert_eq!(res.status(), StatusCode::OK, "still signed in");
    assert!(
        res.cookies().any(|c| c.name() == "latchkey_session"),
        "the browser is handed its cookie under the new key"
    );
    assert!(res.text().await.unwrap().contains("uma@example.com"));
    assert_eq!(
        end_others_with_token(&rotating, &visitor, &old_form_token).await,
        StatusCode::SEE_OTHER,
        "a form loaded before the rotation still submits"
    );
    rotating.stop().await;

    // The old key retired: the visitor was moved over, the absent user was not.
    let after = before
        .sibling_with(&[("SECRET_KEY", NEW_KEY), ("SECRET_KEY_PREVIOUS", "")])
        .await;
    assert_eq!(
        after.get_with(&visitor, "/account").await.status(),
        StatusCode::OK
    );
    let res = after.get_with(&absent, "/account").await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "without the previous key an old session is gone"
    );
    assert_eq!(
        end_others_with_token(&after, &visitor, &old_form_token).await,
        StatusCode::FORBIDDEN,
        "without the previous key an old form token is refused"
    );
}

async fn rotating_the_key_keeps_reset_links_and_queued_mail_alive(backend: Backend) {
    let before = spawn_app(backend).await;
    for who in ["wes", "xan", "yul"] {
        before
            .create_account(&format!("{who}@example.com"), GOOD_PASSWORD)
            .await;
    }
    before.forgot("wes@example.com").await;
    let wes_link = before.reset_link_in_email(1).await;
    before.forgot("yul@example.com").await;
    let yul_link = before.reset_link_in_email(2).await;
    // xan's email is refused once and waits for a retry, sealed under the old key.
    before.mail.refuse_next(1);
    before.forgot("xan@example.com").await;
    for _ in 0..100 {
        let rows = before.db(|c| latchkey::db::outbox::recent(c, 50)).await;
        if rows
            .iter()
            .any(|r| r.recipient == "xan@example.com" && r.attempts == 1)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    before.stop().await;
    // Make the retry due now rather than after the backoff.
    before
        .db(|c| {
            use diesel::prelude::*;
            use latchkey::db::schema::outbox;
            diesel::update(outbox::table.filter(outbox::recipient.eq("xan@example.com")))
                .set(outbox::next_attempt_at.eq(latchkey::db::now()))
                .execute(c)?;
            Ok(())
        })
        .await;

    let old = old_key(&before);
    let rotating = before
        .sibling_with(&[("SECRET_KEY", NEW_KEY), ("SECRET_KEY_PREVIOUS", &old)])
        .await;
    let xan_link = rotating.reset_link_in_email(3).await;
    assert_eq!(
        rotating.mail.emails().await[2].envelope_to,
        ["xan@example.com"]
    );

    // A link from before the rotation opens, and its form submits.
    assert_eq!(
        rotating.open_link(&wes_link).await.status(),
        StatusCode::SEE_OTHER
    );
    let res = rotating
        .set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login?notice=password-changed");
    // The queued email's link works through the API.
    let res = rotating
        .post_json(
            "/auth/reset",
            &serde_json::json!({ "token": TestApp::token_of(&xan_link), "password": OTHER_GOOD_PASSWORD }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    rotating.stop().await;

    // Negative control: once the previous key is dropped, a link made under it is dead.
    let after = before
        .sibling_with(&[("SECRET_KEY", NEW_KEY), ("SECRET_KEY_PREVIOUS", "")])
        .await;
    assert_eq!(
        after.open_link(&yul_link).await.status(),
        StatusCode::BAD_REQUEST
    );
}

both_backends!(
    rotating_the_key_keeps_sessions_and_open_forms_alive,
    rotating_the_key_keeps_reset_links_and_queued_mail_alive,
);

/// With several instances, a rotation rolls out in two phases (see the README): first the
/// new key is added everywhere as `SECRET_KEY_PREVIOUS`, then the two are swapped. While
/// instances of both phases serve one browser in turn, nobody is signed out and no form
/// fails, whichever instance made the cookie or the form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_phase_rolling_rotation_signs_nobody_out() {
    let before = spawn_app(Backend::Postgres).await;
    let browser = new_client();
    before
        .sign_up_with(&browser, "zoe@example.com", GOOD_PASSWORD)
        .await;
    before.stop().await;
    let old = old_key(&before);
    let phase_one = before
        .sibling_with(&[("SECRET_KEY_PREVIOUS", NEW_KEY)])
        .await;
    let phase_two = before
        .sibling_with(&[("SECRET_KEY", NEW_KEY), ("SECRET_KEY_PREVIOUS", &old)])
        .await;
    for (i, app) in [&phase_two, &phase_one, &phase_two, &phase_one]
        .into_iter()
        .enumerate()
    {
        let res = app.get_with(&browser, "/account").await;
        assert_eq!(res.status(), StatusCode::OK, "request {i}: still signed in");
    }
    let from_two = phase_two.csrf(&browser).await;
    let from_one = phase_one.csrf(&browser).await;
    assert_eq!(
        end_others_with_token(&phase_one, &browser, &from_two).await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        end_others_with_token(&phase_two, &browser, &from_one).await,
        StatusCode::SEE_OTHER
    );
}
