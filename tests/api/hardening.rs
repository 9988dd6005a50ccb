//! Sign-in hardening: hashes follow the configured argon2 parameters, and a saturated
//! hashing pool answers 503 with `Retry-After` instead of queueing without bound.

use reqwest::StatusCode;

use crate::both_backends;
use crate::helpers::*;

async fn password_hash_of(app: &TestApp, email: &'static str) -> String {
    app.db(move |c| {
        Ok(latchkey::db::users::find_by_email(c, email)?
            .expect("the account exists")
            .password_hash)
    })
    .await
}

async fn signing_in_rehashes_when_the_argon2_parameters_change(backend: Backend) {
    let old = spawn_app_with(
        backend,
        &[("ARGON2_MEMORY_KIB", "8192"), ("ARGON2_ITERATIONS", "1")],
    )
    .await;
    old.create_account("ida@example.com", GOOD_PASSWORD).await;
    let before = password_hash_of(&old, "ida@example.com").await;
    assert!(before.contains("m=8192,t=1,p=1"), "{before}");

    // The operator raises the cost to the defaults and restarts.
    let new = old
        .sibling_with(&[("ARGON2_MEMORY_KIB", ""), ("ARGON2_ITERATIONS", "")])
        .await;
    let res = new
        .sign_in_with(&new_client(), "ida@example.com", "not the password")
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        password_hash_of(&new, "ida@example.com").await,
        before,
        "a failed sign-in changes nothing"
    );

    let res = new
        .sign_in_with(&new_client(), "ida@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let after = password_hash_of(&new, "ida@example.com").await;
    assert!(after.contains("m=19456,t=2,p=1"), "{after}");
    assert!(after.starts_with("$argon2id$"), "{after}");

    let res = new
        .sign_in_with(&new_client(), "ida@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "the new hash verifies");
}

async fn a_saturated_hash_pool_answers_503_with_retry_after(backend: Backend) {
    // One hashing thread, no queue, and a hash slow enough for requests to overlap.
    let app = spawn_app_with(
        backend,
        &[
            ("HASH_THREADS", "1"),
            ("HASH_QUEUE", "0"),
            ("ARGON2_MEMORY_KIB", "65536"),
            ("ARGON2_ITERATIONS", "3"),
        ],
    )
    .await;
    let mut browsers = Vec::new();
    for _ in 0..8 {
        let browser = new_client();
        let token = app.csrf(&browser).await;
        browsers.push((browser, token));
    }
    let mut attempts = Vec::new();
    for (i, (browser, token)) in browsers.into_iter().enumerate() {
        let url = app.url("/login");
        attempts.push(tokio::spawn(async move {
            let email = format!("nobody{i}@example.com");
            let form = [
                ("email", email.as_str()),
                ("password", "some password or other"),
                ("csrf_token", token.as_str()),
            ];
            let res = browser.post(url).form(&form).send().await.unwrap();
            let retry_after = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (res.status(), retry_after)
        }));
    }
    let mut answers = Vec::new();
    for a in attempts {
        answers.push(a.await.unwrap());
    }
    let busy: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    let served = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    assert_eq!(busy.len() + served, answers.len(), "{answers:?}");
    assert!(!busy.is_empty(), "nothing was turned away: {answers:?}");
    assert!(served >= 1, "nothing was served: {answers:?}");
    for (_, retry_after) in busy {
        let secs: u64 = retry_after
            .as_deref()
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!(secs >= 1);
    }
}

both_backends!(
    signing_in_rehashes_when_the_argon2_parameters_change,
    a_saturated_hash_pool_answers_503_with_retry_after,
);
