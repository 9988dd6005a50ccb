//! Per-client rate limits: 429 with `Retry-After`, counters in the database that hold
//! across instances, and `TRUSTED_PROXIES` deciding whose address counts.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

/// The `Retry-After` of a 429, checked to be a sane number of seconds.
fn retry_after(res: &Response, window_secs: u64) -> u64 {
    let secs: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(
        (1..=2 * window_secs).contains(&secs),
        "Retry-After {secs} is outside one to two windows"
    );
    secs
}

async fn forgot_json(app: &TestApp, client: &reqwest::Client, email: &str) -> Response {
    client
        .post(app.url("/auth/forgot"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap()
}

async fn the_forgot_form_and_api_share_one_limit_then_answer_429(backend: Backend) {
    let app = spawn_app_with(backend, &[("RATE_LIMIT_FORGOT", "3/600")]).await;
    assert_eq!(app.forgot("a@example.com").await.status(), StatusCode::OK);
    assert_eq!(app.forgot("b@example.com").await.status(), StatusCode::OK);
    let res = forgot_json(&app, &app.client, "c@example.com").await;
    assert_eq!(res.status(), StatusCode::OK);

    // The fourth, by form: a page that explains, with Retry-After.
    let res = app.forgot("d@example.com").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    retry_after(&res, 600);
    let page = res.text().await.unwrap();
    assert!(page.contains("Too many attempts"), "{page}");
    assert!(page.contains("Please wait"), "{page}");

    // The fifth, by API: the JSON envelope, with Retry-After.
    let res = forgot_json(&app, &app.client, "e@example.com").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    retry_after(&res, 600);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests");

    // Refused requests queue nothing (the worker records every request it handles); the
    // first refusal is audited, the flood after it not.
    app.events_of("reset_requested", 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let events = app.events().await;
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count("reset_requested"), 3, "{events:?}");
    let throttled = app.events_of("throttled", 1).await;
    assert_eq!(throttled.len(), 1, "{throttled:?}");
    assert_eq!(throttled[0].client_ip.as_deref(), Some("127.0.0.1"));
    assert!(
        throttled[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("forgot"))
    );
}

async fn sign_in_is_limited_even_with_the_right_password(backend: Backend) {
    let app = spawn_app_with(backend, &[("RATE_LIMIT_LOGIN", "2/600")]).await;
    app.create_account("kim@example.com", GOOD_PASSWORD).await;
    for _ in 0..2 {
        let res = app
            .sign_in_with(&app.client, "kim@example.com", "wrong horse battery")
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let res = app
        .sign_in_with(&app.client, "kim@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    retry_after(&res, 600);
    assert_eq!(
        app.get("/account").await.status(),
        StatusCode::SEE_OTHER,
        "a throttled sign-in signs nobody in"
    );
    // Other groups keep their own count.
    assert_eq!(app.forgot("kim@example.com").await.status(), StatusCode::OK);
}

async fn the_reset_form_and_api_share_one_limit(backend: Backend) {
    let app = spawn_app_with(backend, &[("RATE_LIMIT_RESET", "2/600")]).await;
    let junk = json!({ "token": "A".repeat(43), "password": GOOD_PASSWORD });
    for _ in 0..2 {
        let res = app.post_json("/auth/reset", &junk).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
    let res = app
        .set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    retry_after(&res, 600);
    let res = app.post_json("/auth/reset", &junk).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

async fn opening_dead_links_is_never_refused_but_its_audit_is_bounded(backend: Backend) {
    let app = spawn_app_with(backend, &[("RATE_LIMIT_RESET", "2/600")]).await;
    app.create_account("lou@example.com", GOOD_PASSWORD).await;
    // Hidden images on another site could make a browser open links: that must never
    // cost anyone their reset budget, so openings are answered, not refused…
    let guess = format!("/reset?token={}", "B".repeat(43));
    for _ in 0..5 {
        assert_eq!(app.get(&guess).await.status(), StatusCode::BAD_REQUEST);
    }
    app.forgot("lou@example.com").await;
    let link = app.reset_link_in_email(1).await;
    assert_eq!(app.open_link(&link).await.status(), StatusCode::SEE_OTHER);
    let res = app
        .set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the POST budget is intact"
    );
    // …but only the first dead openings, up to the reset limit, are written down.
    let opened = app.events_of("reset_link_opened", 3).await;
    let dead = opened.iter().filter(|e| e.user_id.is_none()).count();
    assert_eq!((dead, opened.len()), (2, 3), "{opened:?}");
}

async fn forwarded_for_counts_only_from_trusted_proxies(backend: Backend) {
    let limit = ("RATE_LIMIT_FORGOT", "1/600");
    let behind_proxy = spawn_app_with(backend, &[limit, ("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let from = |ip: &'static str| {
        reqwest::Client::builder()
            .default_headers(
                [("x-forwarded-for".parse().unwrap(), ip.parse().unwrap())]
                    .into_iter()
                    .collect(),
            )
            .build()
            .unwrap()
    };
    let (alice, bob) = (from("198.51.100.1"), from("198.51.100.2"));
    let app = &behind_proxy;
    assert_eq!(
        forgot_json(app, &alice, "x@example.com").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        forgot_json(app, &alice, "x@example.com").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        forgot_json(app, &bob, "x@example.com").await.status(),
        StatusCode::OK,
        "behind a trusted proxy each forwarded client has its own count"
    );
    let throttled = app.event("throttled").await;
    assert_eq!(throttled.client_ip.as_deref(), Some("198.51.100.1"));

    // Without TRUSTED_PROXIES the header is the client's own claim: the socket counts.
    let direct = spawn_app_with(backend, &[limit]).await;
    assert_eq!(
        forgot_json(&direct, &alice, "x@example.com").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        forgot_json(&direct, &bob, "x@example.com").await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a forged X-Forwarded-For must not buy a fresh count"
    );
    assert_eq!(
        direct.event("throttled").await.client_ip.as_deref(),
        Some("127.0.0.1")
    );
}

async fn opening_a_live_link_again_and_again_grows_no_table(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("liv@example.com", GOOD_PASSWORD).await;
    app.forgot("liv@example.com").await;
    let link = app.reset_link_to("liv@example.com").await;
    let sessions = || {
        app.db(|c| {
            use diesel::prelude::*;
            use latchkey::db::schema::sessions;
            Ok(sessions::table.count().get_result::<i64>(c)?)
        })
    };
    let before = sessions().await;
    for _ in 0..40 {
        // No cookies: every opening looks like a new visitor (a scanner, a script).
        let res = new_client().get(app.local(&link)).send().await.unwrap();
        assert_eq!(redirect_of(&res).as_deref(), Some("/reset"));
    }
    assert_eq!(sessions().await, before, "opening a link stores no session");
    let audited = app
        .events()
        .await
        .into_iter()
        .filter(|e| e.kind == "reset_link_opened")
        .count();
    assert!(
        (1..=5).contains(&audited),
        "{audited} openings of one link were audited"
    );
    // The owner's browser still gets the form, and the link still works.
    assert_eq!(
        redirect_of(&app.open_link(&link).await).as_deref(),
        Some("/reset")
    );
    let res = app
        .set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(
        redirect_of(&res).as_deref(),
        Some("/login?notice=password-changed")
    );
}

async fn one_client_opening_many_live_links_is_audited_up_to_its_limit(backend: Backend) {
    let app = spawn_app_with(backend, &[("RATE_LIMIT_RESET", "3/600")]).await;
    let mut links = Vec::new();
    for n in 0..3 {
        let email = format!("many{n}@example.com");
        app.create_account(&email, GOOD_PASSWORD).await;
        app.forgot(&email).await;
        links.push(app.reset_link_to(&email).await);
    }
    for link in &links {
        for _ in 0..2 {
            let res = new_client().get(app.local(link)).send().await.unwrap();
            assert_eq!(
                redirect_of(&res).as_deref(),
                Some("/reset"),
                "never refused"
            );
        }
    }
    let audited = app
        .events()
        .await
        .into_iter()
        .filter(|e| e.kind == "reset_link_opened")
        .count();
    assert_eq!(
        audited, 3,
        "openings beyond the client's reset limit are not audited"
    );
}

async fn sign_up_is_limited_per_client(backend: Backend) {
    let app = spawn_app_with(backend, &[("RATE_LIMIT_SIGNUP", "2/600")]).await;
    let sign_up = |n: usize| {
        let email = format!("new{n}@example.com");
        let app = &app;
        async move {
            app.post_form_with(
                &new_client(),
                "/signup",
                &[
                    ("email", email.as_str()),
                    ("password", GOOD_PASSWORD),
                    ("password_confirm", GOOD_PASSWORD),
                ],
            )
            .await
        }
    };
    for n in 0..2 {
        assert_eq!(sign_up(n).await.status(), StatusCode::SEE_OTHER);
    }
    let res = sign_up(2).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    retry_after(&res, 600);
    assert!(!app.signs_in("new2@example.com", GOOD_PASSWORD).await);
}

async fn password_changes_are_limited_per_client_and_wrong_passwords_audited(backend: Backend) {
    let app = spawn_app_with(backend, &[("RATE_LIMIT_ACCOUNT", "2/600")]).await;
    app.sign_up_with(&app.client, "acc@example.com", GOOD_PASSWORD)
        .await;
    let change = |current: &'static str| {
        let app = &app;
        async move {
            app.post_form(
                "/account/password",
                &[
                    ("current_password", current),
                    ("password", OTHER_GOOD_PASSWORD),
                    ("password_confirm", OTHER_GOOD_PASSWORD),
                ],
            )
            .await
        }
    };
    for _ in 0..2 {
        let res = change("not my password at all").await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let refused = app.events_of("password_change_refused", 2).await;
    for event in &refused {
        assert_eq!(event.email.as_deref(), Some("acc@example.com"));
        assert_eq!(event.client_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(event.detail.as_deref(), Some("wrong current password"));
    }
    let res = change(GOOD_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    retry_after(&res, 600);
    assert!(app.signs_in("acc@example.com", GOOD_PASSWORD).await);
}

/// One client sends many sign-ups at once while another signs in: the flood holds only
/// its share of the hashing pool, and the other client's job does not wait behind it.
async fn a_flood_of_sign_ups_from_one_client_does_not_hold_up_another(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("HASH_THREADS", "1"),
            ("HASH_QUEUE", "63"),
            // ~90 ms a hash: the flood takes well over a second to work through.
            ("ARGON2_ITERATIONS", "16"),
        ],
    )
    .await;
    app.create_account("vee@example.com", GOOD_PASSWORD).await;
    let (attacker, victim) = (client_from("198.51.100.66"), client_from("203.0.113.7"));
    let (attacker_token, victim_token) = (app.csrf(&attacker).await, app.csrf(&victim).await);
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut flood = Vec::new();
    for n in 0..16 {
        let email = format!("flood{n}@example.com");
        let request = app.prepared_post(
            &attacker,
            "/signup",
            &attacker_token,
            &[
                ("email", email.as_str()),
                ("password", GOOD_PASSWORD),
                ("password_confirm", GOOD_PASSWORD),
            ],
        );
        let served = served.clone();
        flood.push(tokio::spawn(async move {
            let status = request.send().await.unwrap().status();
            if status == StatusCode::SEE_OTHER {
                served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            status
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let res = app
        .prepared_post(
            &victim,
            "/login",
            &victim_token,
            &[("email", "vee@example.com"), ("password", GOOD_PASSWORD)],
        )
        .send()
        .await
        .unwrap();
    let served_first = served.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the other client signs in"
    );
    let mut statuses = Vec::new();
    for request in flood {
        statuses.push(request.await.unwrap());
    }
    let served_all = served.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "the flooding client is held to its share of the pool: {statuses:?}"
    );
    assert!(
        served_all - served_first >= 3,
        "the sign-in waited behind the flood: {served_first} of its {served_all} sign-ups \
         were served first"
    );
}

both_backends!(
    the_forgot_form_and_api_share_one_limit_then_answer_429,
    sign_in_is_limited_even_with_the_right_password,
    the_reset_form_and_api_share_one_limit,
    opening_dead_links_is_never_refused_but_its_audit_is_bounded,
    forwarded_for_counts_only_from_trusted_proxies,
    opening_a_live_link_again_and_again_grows_no_table,
    one_client_opening_many_live_links_is_audited_up_to_its_limit,
    sign_up_is_limited_per_client,
    password_changes_are_limited_per_client_and_wrong_passwords_audited,
    a_flood_of_sign_ups_from_one_client_does_not_hold_up_another,
);

/// Two instances behind a load balancer share one count: of 12 concurrent requests
/// spread over both, exactly the limit get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_two_instances_on_one_postgres() {
    let a = spawn_app_with(Backend::Postgres, &[("RATE_LIMIT_FORGOT", "4/600")]).await;
    let b = a.sibling().await;
    let mut requests = Vec::new();
    for i in 0..12 {
        let url = if i % 2 == 0 {
            a.url("/auth/forgot")
        } else {
            b.url("/auth/forgot")
        };
        requests.push(tokio::spawn(async move {
            new_client()
                .post(url)
                .json(&json!({ "email": format!("p{i}@example.com") }))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, throttled), (4, 8), "{statuses:?}");
    // And the next one is refused by either instance.
    for app in [&a, &b] {
        let res = forgot_json(app, &new_client(), "late@example.com").await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
