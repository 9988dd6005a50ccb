//! Credential changes are linearisable (SPEC §8): a sign-in or password change that races
//! a reset, a password change or a disable never leaves a working session, or a working
//! password, from before the change that completed last. And a session's lifetime is
//! absolute from sign-in: nothing a page makes the browser do extends it.
//!
//! Each race runs for several rounds, the racing request started at staggered offsets. On
//! the code before these guarantees at least one round lost, every time.

use std::time::Duration;

use latchkey::db;
use reqwest::Client;

use crate::both_backends;
use crate::helpers::*;

/// Rounds of each race.
const ROUNDS: u64 = 10;

/// The app for a race: one hashing thread and a costlier hash (~70 ms). Hashing jobs then
/// run one after another in the order they were asked for, so the offsets below decide
/// the interleaving: a sign-in that read the account before the change was written still
/// verifies the old password after it.
async fn racing_app(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        &[("HASH_THREADS", "1"), ("ARGON2_ITERATIONS", "12")],
    )
    .await
}

/// Signs `email` up with `GOOD_PASSWORD` in a browser of its own, asks for a reset link
/// from another browser and opens it there: that browser holds a live link.
async fn owner_with_open_link(app: &TestApp, email: &str) -> Client {
    app.create_account(email, GOOD_PASSWORD).await;
    let owner = new_client();
    app.post_form_with(&owner, "/forgot", &[("email", email)])
        .await;
    let link = app.reset_link_to(email).await;
    let opened = owner.get(app.local(&link)).send().await.unwrap();
    assert_eq!(redirect_of(&opened).as_deref(), Some("/reset"));
    owner
}

/// The reset form's POST, new password `THIRD_GOOD_PASSWORD`.
async fn reset_post(app: &TestApp, owner: &Client) -> reqwest::RequestBuilder {
    let token = app.csrf(owner).await;
    app.prepared_post(
        owner,
        "/reset",
        &token,
        &[
            ("password", THIRD_GOOD_PASSWORD),
            ("password_confirm", THIRD_GOOD_PASSWORD),
        ],
    )
}

/// A sign-in POST with the old password, `GOOD_PASSWORD`.
async fn old_password_sign_in(
    app: &TestApp,
    browser: &Client,
    email: &str,
) -> reqwest::RequestBuilder {
    let token = app.csrf(browser).await;
    app.prepared_post(
        browser,
        "/login",
        &token,
        &[("email", email), ("password", GOOD_PASSWORD)],
    )
}

/// A password change from `GOOD_PASSWORD` to `OTHER_GOOD_PASSWORD`.
async fn change_post(app: &TestApp, browser: &Client) -> reqwest::RequestBuilder {
    let token = app.csrf(browser).await;
    app.prepared_post(
        browser,
        "/account/password",
        &token,
        &[
            ("current_password", GOOD_PASSWORD),
            ("password", OTHER_GOOD_PASSWORD),
            ("password_confirm", OTHER_GOOD_PASSWORD),
        ],
    )
}

/// Sends `first`, then `second` after `offset`; returns both answers.
async fn race(
    first: reqwest::RequestBuilder,
    second: reqwest::RequestBuilder,
    offset: Duration,
) -> (reqwest::Response, reqwest::Response) {
    let (a, b) = tokio::join!(first.send(), async {
        tokio::time::sleep(offset).await;
        second.send().await
    });
    (a.unwrap(), b.unwrap())
}

const RESET_DONE: &str = "/login?notice=password-changed";
const CHANGE_DONE: &str = "/account?notice=password-changed";

async fn a_password_change_racing_a_reset_never_undoes_it(backend: Backend) {
    let app = racing_app(backend).await;
    for round in 0..ROUNDS {
        let email = format!("rae{round}@example.com");
        let owner = owner_with_open_link(&app, &email).await;
        // Someone holding a stolen session and the old password.
        let thief = new_client();
        app.sign_in_with(&thief, &email, GOOD_PASSWORD).await;
        let (change, reset) = (
            change_post(&app, &thief).await,
            reset_post(&app, &owner).await,
        );
        let (change, reset) = race(change, reset, Duration::ZERO).await;
        let changed = redirect_of(&change).as_deref() == Some(CHANGE_DONE);
        let was_reset = redirect_of(&reset).as_deref() == Some(RESET_DONE);
        assert!(
            changed != was_reset,
            "round {round}: exactly one of the change ({}) and the reset ({}) may succeed",
            change.status(),
            reset.status()
        );
        let works = (
            app.signs_in(&email, OTHER_GOOD_PASSWORD).await,
            app.signs_in(&email, THIRD_GOOD_PASSWORD).await,
        );
        assert_eq!(
            works,
            (changed, was_reset),
            "round {round}: the password that works is the one whose request said it was set"
        );
    }
}

async fn a_sign_in_racing_a_reset_leaves_no_session(backend: Backend) {
    let app = racing_app(backend).await;
    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let email = format!("sid{round}@example.com");
        let owner = owner_with_open_link(&app, &email).await;
        let intruder = new_client();
        let reset = reset_post(&app, &owner).await;
        let sign_in = old_password_sign_in(&app, &intruder, &email).await;
        // The reset hashes once before it writes: a sign-in started meanwhile reads the
        // old password and verifies it after the reset's hash.
        let offset = Duration::from_millis(3 + round * 6);
        let (reset, _) = race(reset, sign_in, offset).await;
        assert_eq!(redirect_of(&reset).as_deref(), Some(RESET_DONE));
        if app.is_signed_in(&intruder).await {
            lost.push(round);
        }
    }
    assert!(
        lost.is_empty(),
        "a sign-in with the old password outlived the reset in rounds {lost:?}"
    );
}

async fn a_sign_in_racing_a_password_change_leaves_no_session(backend: Backend) {
    let app = racing_app(backend).await;
    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let email = format!("pam{round}@example.com");
        let owner = new_client();
        app.sign_up_with(&owner, &email, GOOD_PASSWORD).await;
        let intruder = new_client();
        let change = change_post(&app, &owner).await;
        let sign_in = old_password_sign_in(&app, &intruder, &email).await;
        // The change verifies the old password and hashes the new one before it writes:
        // a sign-in started during the second hash reads the old password and verifies it
        // after the change's hash.
        let offset = Duration::from_millis(40 + round * 20);
        let (change, _) = race(change, sign_in, offset).await;
        assert_eq!(redirect_of(&change).as_deref(), Some(CHANGE_DONE));
        if app.is_signed_in(&intruder).await {
            lost.push(round);
        }
        assert!(
            app.is_signed_in(&owner).await,
            "the session that changed the password stays"
        );
    }
    assert!(
        lost.is_empty(),
        "a sign-in with the old password outlived the change in rounds {lost:?}"
    );
}

async fn a_sign_in_racing_a_disable_stays_dead_when_the_account_is_enabled_again(backend: Backend) {
    let app = racing_app(backend).await;
    let admin = new_client();
    app.sign_up_with(&admin, "root@example.com", GOOD_PASSWORD)
        .await;
    assert!(app.db(|c| db::users::promote(c, "root@example.com")).await);
    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let email = format!("dot{round}@example.com");
        app.create_account(&email, GOOD_PASSWORD).await;
        let lookup = email.clone();
        let id = app
            .db(move |c| db::users::find_by_email(c, &lookup))
            .await
            .unwrap()
            .id;
        let intruder = new_client();
        let sign_in = old_password_sign_in(&app, &intruder, &email).await;
        let token = app.csrf(&admin).await;
        let disable = app.prepared_post(&admin, &format!("/admin/users/{id}/disable"), &token, &[]);
        // The disable lands while the sign-in verifies the password.
        let offset = Duration::from_millis(8 + round * 5);
        let (_, disable) = race(sign_in, disable, offset).await;
        assert_eq!(
            redirect_of(&disable).as_deref(),
            Some(format!("/admin/users/{id}?notice=disabled").as_str())
        );
        let enable = app
            .post_form_with(&admin, &format!("/admin/users/{id}/enable"), &[])
            .await;
        assert!(redirect_of(&enable).is_some());
        if app.is_signed_in(&intruder).await {
            lost.push(round);
        }
    }
    assert!(
        lost.is_empty(),
        "a sign-in that raced the disable came back with the enable in rounds {lost:?}"
    );
}

async fn a_session_ends_on_time_whatever_pages_make_the_browser_do(backend: Backend) {
    let app = spawn_app_with(backend, &[("SESSION_TTL_SECS", "4")]).await;
    app.create_account("other@example.com", GOOD_PASSWORD).await;
    app.forgot("other@example.com").await;
    let link = app.reset_link_to("other@example.com").await;
    let browser = new_client();
    app.sign_up_with(&browser, "tess@example.com", GOOD_PASSWORD)
        .await;
    let signed_in = tokio::time::Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Any page can make a visitor's browser open a link (a cross-site navigation).
        browser.get(app.local(&link)).send().await.unwrap();
        if signed_in.elapsed() < Duration::from_secs(3) {
            assert!(app.is_signed_in(&browser).await, "signed in until the TTL");
        }
    }
    tokio::time::sleep_until(signed_in + Duration::from_secs(5)).await;
    assert!(
        !app.is_signed_in(&browser).await,
        "the session outlived SESSION_TTL_SECS"
    );
}

both_backends!(
    a_password_change_racing_a_reset_never_undoes_it,
    a_sign_in_racing_a_reset_leaves_no_session,
    a_sign_in_racing_a_password_change_leaves_no_session,
    a_sign_in_racing_a_disable_stays_dead_when_the_account_is_enabled_again,
    a_session_ends_on_time_whatever_pages_make_the_browser_do,
);
