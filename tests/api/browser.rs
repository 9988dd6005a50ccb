//! The whole recovery flow in a real browser (headless Chromium) with JavaScript off:
//! plain HTML forms, POST and 303 redirects must carry a person through.

use crate::both_backends;
use crate::helpers::*;
use crate::webdriver::Browser;

async fn a_person_recovers_their_account_in_a_browser_without_javascript(backend: Backend) {
    let app = spawn_app(backend).await;
    let browser = Browser::start().await;

    // JavaScript really is off: a script would have replaced the noscript text.
    browser
        .goto("data:text/html,<p id=x>scripts off</p><script>document.getElementById('x').textContent='scripts on'</script>")
        .await;
    assert!(browser.source().await.contains("scripts off"));

    browser.goto(&app.url("/signup")).await;
    browser.screenshot("signup").await;
    browser
        .type_into("input[name=email]", "rosa@example.com")
        .await;
    browser
        .type_into("input[name=password]", GOOD_PASSWORD)
        .await;
    browser
        .type_into("input[name=password_confirm]", GOOD_PASSWORD)
        .await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_url("/account").await;
    browser
        .wait_for_text("Signed in as <strong>rosa@example.com</strong>")
        .await;
    browser.screenshot("account").await;

    browser.click("header form button").await;
    browser.wait_for_url("/login").await;
    browser.click("a[href='/forgot']").await;
    browser.wait_for_url("/forgot").await;
    browser
        .type_into("input[name=email]", "rosa@example.com")
        .await;
    browser.click("main button[type=submit]").await;
    browser
        .wait_for_text("If an account exists for that address")
        .await;
    browser.screenshot("forgot-sent").await;

    let link = app.reset_link_in_email(1).await;
    browser.goto(&app.local(&link)).await;
    let at = browser.url().await;
    assert!(
        at.ends_with("/reset"),
        "the token left the address bar: {at}"
    );
    browser.wait_for_text("For the account").await;
    browser.screenshot("reset-form").await;

    // A typo first: the form comes back with the reason, and the link still works.
    browser
        .type_into("input[name=password]", OTHER_GOOD_PASSWORD)
        .await;
    browser
        .type_into("input[name=password_confirm]", "something else entirely")
        .await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_text("do not match").await;
    browser.screenshot("reset-mismatch").await;
    browser
        .type_into("input[name=password]", OTHER_GOOD_PASSWORD)
        .await;
    browser
        .type_into("input[name=password_confirm]", OTHER_GOOD_PASSWORD)
        .await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_url("/login").await;
    browser
        .wait_for_text("Your password has been changed")
        .await;
    browser.screenshot("reset-done").await;

    browser
        .type_into("input[name=email]", "rosa@example.com")
        .await;
    browser
        .type_into("input[name=password]", OTHER_GOOD_PASSWORD)
        .await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_url("/account").await;
    browser.wait_for_text("Where you are signed in").await;
}

both_backends!(a_person_recovers_their_account_in_a_browser_without_javascript);
