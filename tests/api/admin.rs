//! The admin area (SPEC §10, issue 4): who may see it, what each page shows, and what each
//! action does, with its audit event naming the admin who acted.

use std::{collections::HashMap, time::Duration};

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use latchkey::db::{self, events::NewEvent, outbox::OutboxRow, users::UserRow};
use reqwest::{Client, Response, StatusCode};

use crate::both_backends;
use crate::helpers::*;
use crate::webdriver::Browser;

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// The address of the admin the tests act as.
const ADMIN: &str = "root@example.com";

/// A user agent the pages name as a browser ("Firefox on Linux").
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// Events only an admin action (or a reset request) writes: none may appear when an action
/// was refused.
const ACTION_KINDS: [&str; 6] = [
    "reset_requested",
    "admin_reset_requested",
    "sessions_ended",
    "account_disabled",
    "account_enabled",
    "mail_retried",
];

/// An admin's browser, signed in, and the admin's account id.
struct Admin {
    client: Client,
    id: i64,
}

/// Signs `ADMIN` up in a browser of its own and grants it the role, as
/// `latchkey user promote` does.
async fn sign_in_admin(app: &TestApp) -> Admin {
    let client = new_client();
    app.sign_up_with(&client, ADMIN, GOOD_PASSWORD).await;
    assert!(app.db(|c| db::users::promote(c, ADMIN)).await);
    Admin {
        client,
        id: id_of(app, ADMIN).await,
    }
}

/// The stored row of an account.
async fn account(app: &TestApp, email: &str) -> UserRow {
    let email = email.to_owned();
    app.db(move |c| db::users::find_by_email(c, &email))
        .await
        .expect("the account exists")
}

async fn id_of(app: &TestApp, email: &str) -> i64 {
    account(app, email).await.id
}

/// A browser that keeps cookies and says it is Firefox on Linux.
fn firefox() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .user_agent(FIREFOX)
        .build()
        .unwrap()
}

/// Disables or enables an account straight in the database.
async fn set_disabled(app: &TestApp, email: &str, disabled: bool) {
    use diesel::prelude::*;
    use latchkey::db::schema::users;
    let email = email.to_owned();
    app.db(move |c| {
        diesel::update(users::table.filter(users::email.eq(email)))
            .set(users::disabled.eq(disabled))
            .execute(c)?;
        Ok(())
    })
    .await;
}

/// Accounts written straight to the database (they never sign in, so any hash will do);
/// returns their ids, in the order given.
async fn seed_accounts<S: AsRef<str>>(app: &TestApp, emails: &[S]) -> Vec<i64> {
    let emails: Vec<String> = emails.iter().map(|e| e.as_ref().to_owned()).collect();
    app.db(move |c| {
        db::write_transaction(c, |c| {
            let mut ids = Vec::with_capacity(emails.len());
            for email in &emails {
                ids.push(db::users::insert(c, email, "not-a-real-hash", false)?.id);
            }
            Ok(ids)
        })
    })
    .await
}

/// An audit event written straight to the database; its detail `seed-NNN` tells its row
/// apart on a page.
#[derive(Clone, Copy)]
struct Seed {
    n: usize,
    kind: &'static str,
    ip: Option<&'static str>,
    at: NaiveDateTime,
}

/// A `throttled` event numbered `n` at `at`, with no account and no address.
fn seed(n: usize, at: NaiveDateTime) -> Seed {
    Seed {
        n,
        kind: "throttled",
        ip: None,
        at,
    }
}

async fn seed_events(app: &TestApp, seeds: Vec<Seed>) {
    app.db(move |c| {
        db::write_transaction(c, |c| {
            for s in &seeds {
                let detail = format!("seed-{:03}", s.n);
                db::events::insert(
                    c,
                    &NewEvent {
                        kind: s.kind,
                        user_id: None,
                        actor_id: None,
                        email: None,
                        detail: Some(&detail),
                        client_ip: s.ip,
                        user_agent: None,
                        created_at: s.at,
                    },
                )?;
            }
            Ok(())
        })
    })
    .await;
}

/// A moment in UTC, as the database stores it.
fn utc(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32, micro: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_micro_opt(h, min, s, micro)
        .unwrap()
}

/// A value for a query string.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The path of an action on an account.
fn action(id: i64, name: &str) -> String {
    format!("/admin/users/{id}/{name}")
}

/// Where an action on an account sends the admin back to.
fn notice(id: i64, name: &str) -> String {
    format!("/admin/users/{id}?notice={name}")
}

/// GETs a page as `admin`; checks it answered 200 and returns its HTML.
async fn page(app: &TestApp, admin: &Admin, path: &str) -> String {
    let res = app.get_with(&admin.client, path).await;
    let status = res.status();
    let html = res.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "GET {path}: {html}");
    html
}

/// POSTs an action as `admin` (with its CSRF token); returns where its 303 leads.
async fn act(app: &TestApp, admin: &Admin, path: &str) -> String {
    let res = app.post_form_with(&admin.client, path, &[]).await;
    let status = res.status();
    let location = res
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    match location {
        Some(location) if status == StatusCode::SEE_OTHER => location,
        _ => panic!(
            "POST {path}: {status} {}",
            res.text().await.unwrap_or_default()
        ),
    }
}

/// Where a redirect sends the browser.
fn location(res: &Response) -> String {
    res.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location header ({})", res.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The page a redirect to the sign-in page comes back to: its `next`, decoded.
fn sign_in_next(res: &Response) -> String {
    let location = location(res);
    assert!(location.contains("next="), "{location}");
    let url = url::Url::parse(&format!("http://latchkey.test{location}")).unwrap();
    assert_eq!(url.path(), "/login", "{location}");
    url.query_pairs()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no next in {location}"))
}

/// Every element of `html` that starts with `open`, up to its `close`.
fn elements<'a>(html: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(open) {
        let from = &rest[start..];
        let end = from.find(close).map_or(from.len(), |e| e + close.len());
        found.push(&from[..end]);
        rest = &from[end..];
    }
    found
}

/// An attribute of the first tag of `element`, unescaped.
fn attr(element: &str, name: &str) -> Option<String> {
    let tag = &element[..element.find('>')?];
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// The `href` of the link with `rel` (`next`: older rows, `prev`: newer rows).
fn link(html: &str, rel: &str) -> Option<String> {
    let at = html.find(&format!("rel=\"{rel}\""))?;
    let start = html[..at].rfind("<a ")?;
    attr(&html[start..], "href")
}

fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// What a person reads in `html`: the text without tags, whitespace collapsed.
fn text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A figure of the dashboard: `<dd id="…">N</dd>`.
fn count(html: &str, id: &str) -> i64 {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} on the dashboard: {html}"));
    let rest = &html[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    let figure = rest[start..end].trim();
    figure
        .parse()
        .unwrap_or_else(|_| panic!("#{id} is not a number: {figure:?}"))
}

/// The account ids of the rows of a users page, in order.
fn user_ids(html: &str) -> Vec<i64> {
    elements(html, r#"<tr class="user""#, "</tr>")
        .iter()
        .map(|row| attr(row, "data-id").expect("data-id").parse().unwrap())
        .collect()
}

/// The text of account `id`'s row on a users page, lower-cased.
fn user_row(html: &str, id: i64) -> String {
    elements(html, r#"<tr class="user""#, "</tr>")
        .into_iter()
        .find(|row| attr(row, "data-id") == Some(id.to_string()))
        .map(|row| text(row).to_lowercase())
        .unwrap_or_else(|| panic!("no row for account {id}: {html}"))
}

/// An event row as a page shows it.
struct ShownEvent {
    kind: String,
    text: String,
}

fn shown_events(html: &str) -> Vec<ShownEvent> {
    elements(html, r#"<tr class="event""#, "</tr>")
        .into_iter()
        .map(|row| ShownEvent {
            kind: attr(row, "data-kind").expect("data-kind"),
            text: text(row),
        })
        .collect()
}

/// The number of a seeded event in a row's text.
fn seed_number(text: &str) -> Option<usize> {
    let at = text.find("seed-")? + "seed-".len();
    text.get(at..at + 3)?.parse().ok()
}

/// For each event row of a page, in order: which seeded event it shows (`None` for an
/// event the app wrote).
fn seeds_in(html: &str) -> Vec<Option<usize>> {
    shown_events(html)
        .iter()
        .map(|e| seed_number(&e.text))
        .collect()
}

/// [`seeds_in`] the events page at `path`.
async fn seeds_shown(app: &TestApp, admin: &Admin, path: &str) -> Vec<Option<usize>> {
    seeds_in(&page(app, admin, path).await)
}

/// A message row of the outbox page.
struct ShownMail {
    id: i64,
    status: String,
    html: String,
    text: String,
}

fn shown_mail(html: &str) -> Vec<ShownMail> {
    elements(html, r#"<tr class="mail""#, "</tr>")
        .into_iter()
        .map(|row| ShownMail {
            id: attr(row, "data-id").expect("data-id").parse().unwrap(),
            status: attr(row, "data-status").expect("data-status"),
            html: row.to_owned(),
            text: text(row),
        })
        .collect()
}

/// Waits (5 s at most) for an outbox row that satisfies `wanted`.
async fn wait_for_mail_row(app: &TestApp, wanted: impl Fn(&OutboxRow) -> bool) -> OutboxRow {
    for _ in 0..100 {
        let rows = app.db(|c| db::outbox::recent(c, 50)).await;
        if let Some(row) = rows.into_iter().find(&wanted) {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no outbox row reached the expected state");
}

/// Makes the reset email of `email` fail for good: the SMTP server refuses it, and the
/// attempts between the first and the last are skipped (their backoff takes minutes).
/// Returns its outbox id; the SMTP server accepts mail again afterwards.
async fn a_failed_reset_email(app: &TestApp, email: &str) -> i64 {
    use diesel::prelude::*;
    use latchkey::{db::schema::outbox, jobs::MAX_ATTEMPTS};

    app.mail.refuse_next(1000);
    assert_eq!(app.forgot(email).await.status(), StatusCode::OK);
    let recipient = email.to_owned();
    let refused_once = wait_for_mail_row(app, move |r| {
        r.recipient == recipient && r.kind == "reset" && r.attempts >= 1
    })
    .await;
    let id = refused_once.id;
    app.db(move |c| {
        diesel::update(outbox::table.find(id))
            .set((
                outbox::attempts.eq(MAX_ATTEMPTS - 1),
                outbox::next_attempt_at.eq(db::now()),
            ))
            .execute(c)?;
        Ok(())
    })
    .await;
    let failed = wait_for_mail_row(app, move |r| r.id == id && r.status == "failed").await;
    assert_eq!(failed.attempts, MAX_ATTEMPTS);
    app.mail.refuse_next(0);
    id
}

/// Every admin action, aimed at the enabled account `bob` or the disabled account `dee`.
fn every_action(bob: i64, dee: i64) -> Vec<String> {
    vec![
        action(bob, "reset-email"),
        action(bob, "end-sessions"),
        action(bob, "disable"),
        action(dee, "enable"),
        // CONTRACT: authorization and CSRF are checked before the message is looked up, so
        // an id with no message is refused like any other.
        "/admin/outbox/1/retry".to_owned(),
    ]
}

/// After refused actions: bob is still signed in and enabled, dee still disabled, no mail
/// went out and no action was recorded.
async fn assert_nothing_changed(app: &TestApp, bob_browser: &Client) {
    assert_eq!(
        app.get_with(bob_browser, "/account").await.status(),
        StatusCode::OK,
        "bob is still signed in"
    );
    assert!(!account(app, "bob@example.com").await.disabled);
    assert!(account(app, "dee@example.com").await.disabled);
    app.mail.assert_stays_at(0).await;
    let events = app.events().await;
    assert!(
        events
            .iter()
            .all(|e| e.actor_id.is_none() && !ACTION_KINDS.contains(&e.kind.as_str())),
        "{events:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Who may enter
// ---------------------------------------------------------------------------------------

async fn every_admin_page_sends_a_signed_out_visitor_to_sign_in_and_back(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let user_page = format!("/admin/users/{}", id_of(&app, "ann@example.com").await);
    for path in [
        "/admin",
        "/admin/users",
        user_page.as_str(),
        "/admin/events",
        "/admin/outbox",
        "/admin/events?kind=signed_in&from=2025-03-10",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(sign_in_next(&res), path, "the query is kept whole too");
    }
}

async fn every_admin_page_refuses_a_signed_in_user_who_is_not_an_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_with(&app.client, "ann@example.com", GOOD_PASSWORD)
        .await;
    let user_page = format!("/admin/users/{}", id_of(&app, "ann@example.com").await);
    for path in [
        "/admin",
        "/admin/users",
        user_page.as_str(),
        "/admin/events",
        "/admin/outbox",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(res.text().await.unwrap().contains("Admins only"), "{path}");
    }
}

async fn a_non_admin_cannot_act_even_with_a_valid_csrf_token(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_with(&app.client, "ann@example.com", GOOD_PASSWORD)
        .await;
    let bob_browser = new_client();
    app.sign_up_with(&bob_browser, "bob@example.com", GOOD_PASSWORD)
        .await;
    app.create_account("dee@example.com", GOOD_PASSWORD).await;
    set_disabled(&app, "dee@example.com", true).await;
    let (bob, dee) = (
        id_of(&app, "bob@example.com").await,
        id_of(&app, "dee@example.com").await,
    );
    // Unknown and malformed ids too: a non-admin learns nothing, not even which ids exist.
    let probes = [
        "/admin/users/abc/disable".to_owned(),
        "/admin/users/999999/disable".to_owned(),
        "/admin/outbox/999999/retry".to_owned(),
    ];
    for path in every_action(bob, dee).into_iter().chain(probes) {
        let res = app.post_form(&path, &[]).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(res.text().await.unwrap().contains("Admins only"), "{path}");
    }
    assert_nothing_changed(&app, &bob_browser).await;
}

async fn a_signed_out_action_is_sent_to_sign_in_and_back_to_its_page(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("bob@example.com", GOOD_PASSWORD).await;
    let bob = id_of(&app, "bob@example.com").await;
    for name in ["reset-email", "end-sessions", "disable", "enable"] {
        let res = app.post_form(&action(bob, name), &[]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{name}");
        assert_eq!(sign_in_next(&res), format!("/admin/users/{bob}"), "{name}");
    }
    let res = app.post_form("/admin/outbox/1/retry", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // CONTRACT: "the page it belongs to" is the outbox, with or without a status tab
    // (the implementation comes back to `/admin/outbox?status=failed`).
    let next = sign_in_next(&res);
    assert!(
        next == "/admin/outbox" || next.starts_with("/admin/outbox?"),
        "{next}"
    );
    assert!(!account(&app, "bob@example.com").await.disabled);
}

async fn only_admins_see_the_admin_link_in_the_navigation(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.sign_up_with(&app.client, "ann@example.com", GOOD_PASSWORD)
        .await;
    let admins_view = page(&app, &admin, "/account").await;
    assert!(admins_view.contains(r#"href="/admin""#), "{admins_view}");
    let anns_view = app.get("/account").await.text().await.unwrap();
    assert!(!anns_view.contains(r#"href="/admin""#), "{anns_view}");
}

async fn admin_actions_without_a_valid_csrf_token_are_refused_and_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    let bob_browser = new_client();
    app.sign_up_with(&bob_browser, "bob@example.com", GOOD_PASSWORD)
        .await;
    app.create_account("dee@example.com", GOOD_PASSWORD).await;
    set_disabled(&app, "dee@example.com", true).await;
    let (bob, dee) = (
        id_of(&app, "bob@example.com").await,
        id_of(&app, "dee@example.com").await,
    );
    let another_browsers_token = app.csrf(&new_client()).await;
    for path in every_action(bob, dee) {
        for token in [None, Some("forged"), Some(another_browsers_token.as_str())] {
            let form: Vec<(&str, &str)> = token.map(|t| ("csrf_token", t)).into_iter().collect();
            let res = admin
                .client
                .post(app.url(&path))
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path} with {token:?}");
        }
    }
    assert_nothing_changed(&app, &bob_browser).await;
}

// ---------------------------------------------------------------------------------------
// Dashboard
// ---------------------------------------------------------------------------------------

async fn the_dashboard_counts_requested_completed_and_refused_resets_and_mail(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    // Requests three and ten days ago: in the 7-day count, and in neither.
    let days_ago = |d: u64| db::now_minus(Duration::from_secs(d * 86_400));
    seed_events(
        &app,
        vec![
            Seed {
                kind: "reset_requested",
                ..seed(3, days_ago(3))
            },
            Seed {
                kind: "reset_requested",
                ..seed(10, days_ago(10))
            },
        ],
    )
    .await;
    // One request, one refused attempt, one completed reset; two emails sent.
    app.forgot("ann@example.com").await;
    let link = app.reset_link_in_email(1).await;
    app.open_link(&link).await;
    let weak = app.set_new_password("zq9#tiny", "zq9#tiny").await;
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let done = app
        .set_new_password(OTHER_GOOD_PASSWORD, OTHER_GOOD_PASSWORD)
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    app.mail.wait_for(2).await;
    app.outbox_row("reset", "sent").await;
    app.outbox_row("password_changed", "sent").await;

    let html = page(&app, &admin, "/admin").await;
    assert!(html.contains("<h1>Admin</h1>"), "{html}");
    let ids = [
        "count-users",
        "count-requested-24h",
        "count-requested-7d",
        "count-completed-24h",
        "count-completed-7d",
        "count-refused-24h",
        "count-refused-7d",
        "count-mail-queued",
        "count-mail-sent",
        "count-mail-failed",
    ];
    let shown: Vec<(&str, i64)> = ids.iter().map(|id| (*id, count(&html, id))).collect();
    let expected: [i64; 10] = [2, 1, 2, 1, 1, 1, 1, 0, 2, 0];
    assert_eq!(shown, ids.into_iter().zip(expected).collect::<Vec<_>>());
    assert!(
        html.contains(r#"<tr class="event" data-kind="reset_done""#),
        "the latest events are listed: {html}"
    );
}

// ---------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------

async fn searching_users_matches_a_fragment_in_any_case_and_takes_wildcards_literally(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    let emails = [
        "ann@example.com",
        "joanna@example.org",
        "bob@example.com",
        "a_b@example.com",
        "axb@example.com",
        "50%off@example.com",
        "50xoff@example.com",
    ];
    let ids: HashMap<&str, i64> = emails
        .into_iter()
        .zip(seed_accounts(&app, &emails).await)
        .collect();
    for (q, matching) in [
        ("ANN", vec!["ann@example.com", "joanna@example.org"]),
        ("Example.ORG", vec!["joanna@example.org"]),
        ("a_b", vec!["a_b@example.com"]),
        ("_", vec!["a_b@example.com"]),
        ("50%", vec!["50%off@example.com"]),
        ("%", vec!["50%off@example.com"]),
        ("nobody", vec![]),
    ] {
        let mut expected: Vec<i64> = matching.iter().map(|e| ids[e]).collect();
        expected.sort_unstable_by(|a, b| b.cmp(a));
        let html = page(&app, &admin, &format!("/admin/users?q={}", enc(q))).await;
        assert_eq!(user_ids(&html), expected, "q={q}");
    }
    // CONTRACT: the search form sent empty (a browser sends `q=`) lists everyone.
    let everyone = page(&app, &admin, "/admin/users?q=").await;
    assert_eq!(user_ids(&everyone).len(), emails.len() + 1);
}

async fn the_users_list_pages_through_every_account_newest_first_and_back(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    let emails: Vec<String> = (0..60).map(|i| format!("user{i:02}@example.com")).collect();
    let mut expected = seed_accounts(&app, &emails).await;
    expected.push(admin.id);
    expected.sort_unstable_by(|a, b| b.cmp(a));

    let first = page(&app, &admin, "/admin/users").await;
    assert!(link(&first, "prev").is_none(), "no Newer link on page one");
    let older = link(&first, "next").expect("an Older link");
    let second = page(&app, &admin, &older).await;
    assert!(
        link(&second, "next").is_none(),
        "no Older link on the last page"
    );
    let (first_ids, second_ids) = (user_ids(&first), user_ids(&second));
    assert_eq!(first_ids.len(), 50);
    assert_eq!(
        [first_ids.clone(), second_ids].concat(),
        expected,
        "every account once, newest first"
    );

    let newer = link(&second, "prev").expect("a Newer link");
    assert_eq!(user_ids(&page(&app, &admin, &newer).await), first_ids);
}

async fn the_users_list_shows_who_is_disabled_and_who_is_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    let ids = seed_accounts(&app, &["pat@example.com", "dee@example.com"]).await;
    set_disabled(&app, "dee@example.com", true).await;
    let html = page(&app, &admin, "/admin/users").await;
    let root = user_row(&html, admin.id);
    let pat = user_row(&html, ids[0]);
    let dee = user_row(&html, ids[1]);
    // CONTRACT: a row holds only the email, the three dates and the state (no buttons),
    // so the words below can only come from the state column.
    assert!(root.contains("active") && root.contains("admin"), "{root}");
    assert!(pat.contains("pat@example.com"), "{pat}");
    assert!(
        pat.contains("active") && !pat.contains("admin") && !pat.contains("disabled"),
        "{pat}"
    );
    assert!(dee.contains("disabled") && !dee.contains("active"), "{dee}");
    assert!(
        html.contains(&format!(r#"href="/admin/users/{}""#, ids[0])),
        "the email links to the user page"
    );
}

async fn an_overlong_user_search_is_refused_with_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    let res = app
        .get_with(
            &admin.client,
            &format!("/admin/users?q={}", "a".repeat(255)),
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // The longest address there can be is still a search.
    page(&app, &admin, &format!("/admin/users?q={}", "a".repeat(254))).await;
}

async fn the_user_page_shows_the_account_its_sessions_and_its_events(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    let browser = firefox();
    app.sign_up_with(&browser, "ann@example.com", GOOD_PASSWORD)
        .await;
    app.post_form_with(&browser, "/logout", &[]).await;
    let res = app
        .sign_in_with(&browser, "ann@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let ann = id_of(&app, "ann@example.com").await;

    let html = page(&app, &admin, &format!("/admin/users/{ann}")).await;
    let heading = elements(&html, "<h1", "</h1>");
    assert!(
        heading
            .first()
            .is_some_and(|h| text(h).contains("ann@example.com")),
        "{html}"
    );
    let sessions = elements(&html, r#"<li class="session""#, "</li>");
    assert_eq!(sessions.len(), 1, "{html}");
    let session = text(sessions[0]);
    assert!(
        session.contains("Firefox") && session.contains("127.0.0.1"),
        "{session}"
    );
    let kinds: Vec<String> = shown_events(&html).into_iter().map(|e| e.kind).collect();
    for kind in ["signed_in", "signed_out"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind}: {kinds:?}");
    }
    assert!(html.contains(&format!(r#"href="/admin/events?user={ann}""#)));
    for name in ["reset-email", "end-sessions", "disable"] {
        assert!(
            html.contains(&format!(r#"action="{}""#, action(ann, name))),
            "a {name} form"
        );
    }
    assert!(
        !html.contains(&action(ann, "enable")),
        "no enable form for an enabled account"
    );
}

async fn no_admin_page_shows_a_password_hash_or_a_reset_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    app.forgot("ann@example.com").await;
    let link = app.reset_link_in_email(1).await;
    app.outbox_row("reset", "sent").await;
    let token = TestApp::token_of(&link);
    let ann = account(&app, "ann@example.com").await;
    let user_page = format!("/admin/users/{}", ann.id);
    for path in [
        "/admin",
        "/admin/users",
        user_page.as_str(),
        "/admin/events",
        "/admin/outbox",
    ] {
        let html = page(&app, &admin, path).await;
        assert!(!html.contains(&ann.password_hash), "{path} shows the hash");
        assert!(!html.contains("$argon2"), "{path} shows a hash");
        assert!(!html.contains("token="), "{path} shows a link");
        assert!(!html.contains(&token), "{path} shows the token");
    }
}

async fn unknown_or_malformed_ids_get_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    for path in [
        "/admin/users/999999",
        "/admin/users/abc",
        "/admin/users/99999999999999999999999",
    ] {
        let res = app.get_with(&admin.client, path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "GET {path}");
    }
    for path in [
        "/admin/users/999999/reset-email",
        "/admin/users/999999/end-sessions",
        "/admin/users/999999/disable",
        "/admin/users/999999/enable",
        "/admin/users/abc/disable",
        "/admin/outbox/999999/retry",
    ] {
        let res = app.post_form_with(&admin.client, path, &[]).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "POST {path}");
    }
}

// ---------------------------------------------------------------------------------------
// Actions on an account
// ---------------------------------------------------------------------------------------

async fn sending_a_reset_email_mails_the_user_and_records_the_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let ann = id_of(&app, "ann@example.com").await;

    let to = act(&app, &admin, &action(ann, "reset-email")).await;
    assert_eq!(to, notice(ann, "reset-queued"));
    // The action is on record as soon as it is answered, in its own transaction.
    let asked: Vec<_> = app
        .events()
        .await
        .into_iter()
        .filter(|e| e.kind == "admin_reset_requested")
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        (asked[0].user_id, asked[0].actor_id),
        (Some(ann), Some(admin.id))
    );
    assert!(page(&app, &admin, &to).await.contains(r#"role="status""#));

    let emails = app.mail.wait_for(1).await;
    assert_eq!(emails[0].envelope_to, vec!["ann@example.com"]);
    // It says an administrator asked, instead of naming the admin's address and browser.
    assert!(
        emails[0]
            .text
            .contains("An administrator of this service asked for this link"),
        "{}",
        emails[0].text
    );
    let link = app.reset_link_in_email(1).await;
    assert_eq!(
        app.open_link(&link).await.status(),
        StatusCode::SEE_OTHER,
        "the link works"
    );
    let requested = app.event("reset_requested").await;
    assert_eq!(requested.user_id, Some(ann));
    assert_eq!(requested.actor_id, Some(admin.id));
}

async fn the_cooldown_holds_back_a_second_reset_email_sent_by_an_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let ann = id_of(&app, "ann@example.com").await;
    for _ in 0..2 {
        let to = act(&app, &admin, &action(ann, "reset-email")).await;
        // CONTRACT: the cooldown applies silently, as for the public form: the admin sees
        // reset-queued both times.
        assert_eq!(to, notice(ann, "reset-queued"));
    }
    app.mail.wait_for(1).await;
    app.mail.assert_stays_at(1).await;
    let requested = app.events_of("reset_requested", 2).await;
    assert!(
        requested.iter().all(|e| e.actor_id == Some(admin.id)),
        "{requested:?}"
    );
}

async fn a_disabled_account_gets_no_reset_email_from_the_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    set_disabled(&app, "ann@example.com", true).await;
    let ann = id_of(&app, "ann@example.com").await;
    let to = act(&app, &admin, &action(ann, "reset-email")).await;
    assert_eq!(to, notice(ann, "reset-disabled"));
    app.mail.assert_stays_at(0).await;
}

async fn ending_sessions_signs_the_user_out_everywhere_and_records_the_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    let laptop = new_client();
    app.sign_up_with(&laptop, "ann@example.com", GOOD_PASSWORD)
        .await;
    let phone = new_client();
    app.sign_in_with(&phone, "ann@example.com", GOOD_PASSWORD)
        .await;
    let ann = id_of(&app, "ann@example.com").await;

    let to = act(&app, &admin, &action(ann, "end-sessions")).await;
    assert_eq!(to, notice(ann, "sessions-ended"));
    for browser in [&laptop, &phone] {
        let res = app.get_with(browser, "/account").await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert!(location(&res).starts_with("/login"));
    }
    let ended = app.event("sessions_ended").await;
    assert_eq!(ended.user_id, Some(ann));
    assert_eq!(ended.actor_id, Some(admin.id));
    assert_eq!(
        app.get_with(&admin.client, "/admin").await.status(),
        StatusCode::OK,
        "the admin stays signed in"
    );
}

async fn a_disabled_account_cannot_sign_in_and_its_session_ends(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    let laptop = new_client();
    app.sign_up_with(&laptop, "ann@example.com", GOOD_PASSWORD)
        .await;
    let ann = id_of(&app, "ann@example.com").await;

    let to = act(&app, &admin, &action(ann, "disable")).await;
    assert_eq!(to, notice(ann, "disabled"));
    let after = page(&app, &admin, &to).await;
    assert!(after.contains(r#"role="status""#), "{after}");
    assert!(
        after.contains(&format!(r#"action="{}""#, action(ann, "enable"))),
        "the page now offers to enable the account"
    );

    let res = app.get_with(&laptop, "/account").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(location(&res).starts_with("/login"));
    let sessions = app.db(move |c| db::sessions::for_user(c, ann)).await;
    assert!(sessions.is_empty(), "{sessions:?}");

    let res = app
        .sign_in_with(&new_client(), "ann@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("do not match an account")
    );
    assert!(account(&app, "ann@example.com").await.disabled);
    let disabled = app.event("account_disabled").await;
    assert_eq!(disabled.user_id, Some(ann));
    assert_eq!(disabled.actor_id, Some(admin.id));
}

async fn disabling_an_account_kills_its_outstanding_reset_link_for_good(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let ann = id_of(&app, "ann@example.com").await;
    app.forgot("ann@example.com").await;
    let link = app.reset_link_in_email(1).await;

    act(&app, &admin, &action(ann, "disable")).await;
    assert_eq!(app.open_link(&link).await.status(), StatusCode::BAD_REQUEST);
    // Revoked, not merely blocked while disabled.
    act(&app, &admin, &action(ann, "enable")).await;
    assert_eq!(app.open_link(&link).await.status(), StatusCode::BAD_REQUEST);
}

async fn forgot_for_a_disabled_account_answers_like_any_address_and_sends_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let ann = id_of(&app, "ann@example.com").await;
    act(&app, &admin, &action(ann, "disable")).await;

    let unknown = app.forgot("nobody@example.com").await;
    let (unknown_status, unknown_body) = (unknown.status(), unknown.text().await.unwrap());
    let disabled = app.forgot("ann@example.com").await;
    let (disabled_status, disabled_body) = (disabled.status(), disabled.text().await.unwrap());
    assert_eq!(unknown_status, StatusCode::OK);
    assert_eq!(disabled_status, unknown_status);
    assert_eq!(disabled_body, unknown_body);
    // The worker did handle it, and sent nothing.
    let handled = app.events_of("reset_requested", 2).await;
    assert!(
        handled.iter().any(|e| e.user_id == Some(ann)
            && e.detail.as_deref().is_some_and(|d| d.contains("disabled"))),
        "{handled:?}"
    );
    app.mail.assert_stays_at(0).await;
}

async fn an_admin_cannot_disable_their_own_account(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    let to = act(&app, &admin, &action(admin.id, "disable")).await;
    assert_eq!(to, notice(admin.id, "cannot-disable-self"));
    assert!(!account(&app, ADMIN).await.disabled);
    page(&app, &admin, "/admin").await;
    let events = app.events().await;
    assert!(
        events.iter().all(|e| e.kind != "account_disabled"),
        "{events:?}"
    );
}

async fn an_enabled_account_can_sign_in_again_and_the_admin_is_recorded(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let ann = id_of(&app, "ann@example.com").await;
    act(&app, &admin, &action(ann, "disable")).await;

    let to = act(&app, &admin, &action(ann, "enable")).await;
    assert_eq!(to, notice(ann, "enabled"));
    let res = app
        .sign_in_with(&new_client(), "ann@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let enabled = app.event("account_enabled").await;
    assert_eq!(enabled.user_id, Some(ann));
    assert_eq!(enabled.actor_id, Some(admin.id));
    assert!(
        page(&app, &admin, &to)
            .await
            .contains(&format!(r#"action="{}""#, action(ann, "disable")))
    );
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

async fn the_events_log_filters_by_kind_by_address_fragment_and_by_account(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    app.create_account("bob@example.com", GOOD_PASSWORD).await;
    let res = app
        .sign_in_with(&new_client(), "ann@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    app.sign_in_with(
        &new_client(),
        "bob@example.com",
        "not bob's password at all",
    )
    .await;
    let res = app
        .sign_in_with(&new_client(), "bob@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let ann = id_of(&app, "ann@example.com").await;

    let signed_in = shown_events(&page(&app, &admin, "/admin/events?kind=signed_in").await);
    assert!(signed_in.iter().all(|e| e.kind == "signed_in"));
    assert!(signed_in.len() >= 2);
    assert!(
        signed_in[0].text.contains("bob@example.com")
            && signed_in[1].text.contains("ann@example.com"),
        "newest first"
    );

    for path in [
        format!("/admin/events?email={}", enc("ANN@Example")),
        format!("/admin/events?user={ann}"),
    ] {
        let shown = shown_events(&page(&app, &admin, &path).await);
        assert!(!shown.is_empty(), "{path}");
        assert!(
            shown
                .iter()
                .all(|e| e.text.contains("ann@example.com") && !e.text.contains("bob@")),
            "{path}"
        );
    }

    let failed =
        shown_events(&page(&app, &admin, "/admin/events?kind=sign_in_failed&email=bob").await);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].kind, "sign_in_failed");

    // CONTRACT: the filter form sent with its fields empty (as a browser does) filters
    // nothing.
    let everything =
        shown_events(&page(&app, &admin, "/admin/events?kind=&email=&ip=&from=&to=").await);
    assert!(everything.len() >= 3, "three sign-in attempts");
}

async fn the_events_log_filters_by_exact_client_address(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    let now = db::now();
    seed_events(
        &app,
        vec![
            Seed {
                ip: Some("203.0.113.9"),
                ..seed(1, now)
            },
            Seed {
                ip: Some("203.0.113.90"),
                ..seed(2, now)
            },
            Seed {
                ip: Some("2001:db8::1"),
                ..seed(3, now)
            },
        ],
    )
    .await;
    // An event the app writes, from the test's own address.
    app.sign_in_with(&new_client(), ADMIN, GOOD_PASSWORD).await;

    assert_eq!(
        seeds_shown(&app, &admin, "/admin/events?ip=203.0.113.9").await,
        [Some(1)]
    );
    assert_eq!(
        seeds_shown(
            &app,
            &admin,
            &format!("/admin/events?ip={}", enc("2001:db8::1"))
        )
        .await,
        [Some(3)]
    );
    let local = seeds_shown(&app, &admin, "/admin/events?ip=127.0.0.1").await;
    assert!(
        !local.is_empty() && local.iter().all(Option::is_none),
        "{local:?}"
    );
}

async fn the_events_log_date_range_takes_both_days_whole(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    seed_events(
        &app,
        vec![
            seed(1, utc(2025, 3, 9, 23, 59, 59, 999_999)),
            seed(2, utc(2025, 3, 10, 0, 0, 0, 0)),
            seed(3, utc(2025, 3, 12, 23, 59, 59, 999_999)),
            seed(4, utc(2025, 3, 13, 0, 0, 0, 0)),
        ],
    )
    .await;
    // An event of today (the day read first, so that a run across midnight still finds it
    // between today and tomorrow).
    let today = chrono::Utc::now().date_naive();
    app.sign_in_with(&new_client(), ADMIN, GOOD_PASSWORD).await;
    let tomorrow = today.succ_opt().unwrap();

    let path = |query: &str| format!("/admin/events?{query}");
    assert_eq!(
        seeds_shown(&app, &admin, &path("from=2025-03-10&to=2025-03-12")).await,
        [Some(3), Some(2)]
    );
    assert_eq!(
        seeds_shown(&app, &admin, &path("to=2025-03-09")).await,
        [Some(1)]
    );
    assert_eq!(
        seeds_shown(&app, &admin, &path("from=2025-03-13&to=2025-03-13")).await,
        [Some(4)]
    );
    let tomorrows = seeds_shown(&app, &admin, &path(&format!("from={tomorrow}"))).await;
    assert!(tomorrows.is_empty(), "{tomorrows:?}");
    let todays = seeds_shown(&app, &admin, &path(&format!("from={today}&to={today}"))).await;
    assert!(
        !todays.is_empty() && todays.iter().all(Option::is_none),
        "{todays:?}"
    );
}

async fn bad_event_filters_get_422_with_the_form(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    for query in [
        "kind=nonsense",
        "from=2025-02-30",
        "to=yesterday",
        "from=2025-3-1x",
        "ip=not-an-ip",
        "ip=203.0.113",
    ] {
        let res = app
            .get_with(&admin.client, &format!("/admin/events?{query}"))
            .await;
        let status = res.status();
        let html = res.text().await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert!(
            html.contains(r#"action="/admin/events""#),
            "{query}: the filter form comes back"
        );
        assert!(
            html.contains(r#"class="error""#),
            "{query}: with what is wrong"
        );
    }
}

async fn the_events_log_pages_through_filtered_events_without_duplicates_or_gaps(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    // 120 events, three to a second, so that page boundaries fall between equal times.
    let start = utc(2025, 1, 1, 0, 0, 0, 0);
    seed_events(
        &app,
        (0..120)
            .map(|i| seed(i, start + TimeDelta::seconds(i as i64 / 3)))
            .collect(),
    )
    .await;
    // An event of another kind, which the filter must keep out of every page.
    app.sign_in_with(&new_client(), ADMIN, GOOD_PASSWORD).await;

    let mut pages: Vec<Vec<usize>> = Vec::new();
    let mut path = "/admin/events?kind=throttled".to_owned();
    let last = loop {
        let html = page(&app, &admin, &path).await;
        if pages.is_empty() {
            assert!(link(&html, "prev").is_none(), "no Newer link on page one");
        }
        pages.push(
            seeds_in(&html)
                .into_iter()
                .map(|s| s.expect("only seeded events are throttled"))
                .collect(),
        );
        assert!(pages.len() <= 3, "too many pages: {pages:?}");
        match link(&html, "next") {
            Some(next) => path = next,
            None => break html,
        }
    };
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [50, 50, 20]);
    assert_eq!(
        pages.concat(),
        (0..120).rev().collect::<Vec<usize>>(),
        "every event once, newest first"
    );

    // Back from the last page, through the same pages.
    let mut html = last;
    for expected in pages.iter().rev().skip(1) {
        let newer = link(&html, "prev").expect("a Newer link");
        html = page(&app, &admin, &newer).await;
        let seeds: Vec<Option<usize>> = expected.iter().copied().map(Some).collect();
        assert_eq!(seeds_in(&html), seeds);
    }
    assert!(link(&html, "prev").is_none(), "back on page one");
}

async fn the_events_log_names_the_admin_who_acted(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let ann = id_of(&app, "ann@example.com").await;
    act(&app, &admin, &action(ann, "disable")).await;

    let rows = shown_events(&page(&app, &admin, "/admin/events?kind=account_disabled").await);
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].text.contains("ann@example.com") && rows[0].text.contains(ADMIN),
        "{}",
        rows[0].text
    );
}

// ---------------------------------------------------------------------------------------
// Outbox
// ---------------------------------------------------------------------------------------

async fn a_failed_email_is_listed_with_its_attempts_its_error_and_a_retry_form(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let id = a_failed_reset_email(&app, "ann@example.com").await;

    let html = page(&app, &admin, "/admin/outbox?status=failed").await;
    let mail = shown_mail(&html);
    let row = mail
        .iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("no row for message {id}: {html}"));
    assert_eq!(row.status, "failed");
    assert!(row.text.contains("ann@example.com"), "{}", row.text);
    assert!(row.text.contains("reset"), "{}", row.text);
    let attempts = latchkey::jobs::MAX_ATTEMPTS.to_string();
    assert!(
        row.text.split_whitespace().any(|w| w == attempts),
        "{attempts} attempts: {}",
        row.text
    );
    assert!(row.text.contains("451"), "the last error: {}", row.text);
    assert!(
        row.html
            .contains(&format!(r#"action="/admin/outbox/{id}/retry""#)),
        "{}",
        row.html
    );
    assert!(!html.contains("token="), "{html}");
}

async fn the_outbox_lists_one_status_at_a_time(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    app.create_account("bob@example.com", GOOD_PASSWORD).await;
    app.forgot("bob@example.com").await;
    app.mail.wait_for(1).await;
    let sent = app.outbox_row("reset", "sent").await.id;
    let failed = a_failed_reset_email(&app, "ann@example.com").await;

    let shown = |html: &str| -> Vec<(i64, String)> {
        shown_mail(html)
            .into_iter()
            .map(|m| (m.id, m.status))
            .collect()
    };
    let (failed_row, sent_row) = ((failed, "failed".to_owned()), (sent, "sent".to_owned()));
    assert_eq!(
        shown(&page(&app, &admin, "/admin/outbox").await),
        [failed_row.clone(), sent_row.clone()]
    );
    assert_eq!(
        shown(&page(&app, &admin, "/admin/outbox?status=failed").await),
        [failed_row]
    );
    let sent_page = page(&app, &admin, "/admin/outbox?status=sent").await;
    assert_eq!(shown(&sent_page), [sent_row]);
    assert!(
        !sent_page.contains("/retry\""),
        "a sent message has no retry form"
    );
    assert!(shown(&page(&app, &admin, "/admin/outbox?status=queued").await).is_empty());
}

async fn retrying_a_failed_email_sends_it_and_records_the_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let ann = id_of(&app, "ann@example.com").await;
    let id = a_failed_reset_email(&app, "ann@example.com").await;

    let to = act(&app, &admin, &format!("/admin/outbox/{id}/retry")).await;
    assert_eq!(to, "/admin/outbox?status=failed&notice=retried");
    assert!(page(&app, &admin, &to).await.contains(r#"role="status""#));
    let link = app.reset_link_in_email(1).await;
    assert_eq!(
        app.open_link(&link).await.status(),
        StatusCode::SEE_OTHER,
        "the link in it works"
    );
    let sent = wait_for_mail_row(&app, move |r| r.id == id && r.status == "sent").await;
    assert_eq!(sent.attempts, 1, "the retry started again from no attempts");
    let retried = app.event("mail_retried").await;
    assert_eq!(retried.user_id, Some(ann));
    assert_eq!(retried.actor_id, Some(admin.id));
}

async fn a_sent_email_cannot_be_retried(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    app.forgot("ann@example.com").await;
    app.mail.wait_for(1).await;
    let id = app.outbox_row("reset", "sent").await.id;

    let to = act(&app, &admin, &format!("/admin/outbox/{id}/retry")).await;
    assert_eq!(to, "/admin/outbox?status=failed&notice=retry-impossible");
    app.mail.assert_stays_at(1).await;
    assert_eq!(
        wait_for_mail_row(&app, move |r| r.id == id).await.status,
        "sent"
    );
}

async fn a_failed_email_whose_link_expired_cannot_be_retried(backend: Backend) {
    use diesel::prelude::*;
    use latchkey::db::schema::{outbox, reset_tokens};

    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let id = a_failed_reset_email(&app, "ann@example.com").await;
    // Time passes for the message and its link.
    let past = db::now_minus(Duration::from_secs(1));
    app.db(move |c| {
        diesel::update(outbox::table.find(id))
            .set(outbox::expires_at.eq(Some(past)))
            .execute(c)?;
        diesel::update(reset_tokens::table)
            .set(reset_tokens::expires_at.eq(past))
            .execute(c)?;
        Ok(())
    })
    .await;

    let to = act(&app, &admin, &format!("/admin/outbox/{id}/retry")).await;
    assert_eq!(to, "/admin/outbox?status=failed&notice=retry-impossible");
    app.mail.assert_stays_at(0).await;
    assert_eq!(
        wait_for_mail_row(&app, move |r| r.id == id).await.status,
        "failed"
    );
}

// ---------------------------------------------------------------------------------------
// Found in review
// ---------------------------------------------------------------------------------------

async fn disabling_twice_changes_and_records_nothing_the_second_time(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let ann = id_of(&app, "ann@example.com").await;
    assert_eq!(
        act(&app, &admin, &action(ann, "disable")).await,
        notice(ann, "disabled")
    );
    assert_eq!(
        act(&app, &admin, &action(ann, "disable")).await,
        notice(ann, "already-disabled")
    );
    assert_eq!(
        act(&app, &admin, &action(ann, "enable")).await,
        notice(ann, "enabled")
    );
    assert_eq!(
        act(&app, &admin, &action(ann, "enable")).await,
        notice(ann, "already-enabled")
    );
    let kinds: Vec<String> = app
        .events()
        .await
        .into_iter()
        .filter(|e| e.actor_id == Some(admin.id))
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "account_disabled").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "account_enabled").count(),
        1,
        "{kinds:?}"
    );
}

async fn a_failed_reset_email_dies_with_its_link_when_the_account_is_disabled(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let ann = id_of(&app, "ann@example.com").await;
    let id = a_failed_reset_email(&app, "ann@example.com").await;
    act(&app, &admin, &action(ann, "disable")).await;

    let row = wait_for_mail_row(&app, move |r| r.id == id).await;
    assert_eq!(
        row.status, "expired",
        "its link was revoked with the account"
    );
    assert!(row.payload.is_empty(), "and its body scrubbed");
    let html = page(&app, &admin, "/admin/outbox").await;
    let shown = shown_mail(&html);
    let mail = shown.iter().find(|m| m.id == id).expect("listed");
    assert!(
        !mail.html.contains("/retry"),
        "no retry offered: {}",
        mail.html
    );
    let to = act(&app, &admin, &format!("/admin/outbox/{id}/retry")).await;
    assert!(to.ends_with("notice=retry-impossible"), "{to}");
    app.mail.assert_stays_at(0).await;
}

async fn an_address_fragment_common_to_many_accounts_still_filters_the_events(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    // More accounts than the id lookup takes (200), so the log is matched by address.
    let emails: Vec<String> = (0..205).map(|i| format!("m{i:03}@many.test")).collect();
    let ids = seed_accounts(&app, &emails).await;
    let (first, last) = (ids[0], ids[204]);
    app.db(move |c| {
        db::write_transaction(c, |c| {
            for (n, (id, email)) in [(first, "m000@many.test"), (last, "m204@many.test")]
                .into_iter()
                .enumerate()
            {
                let detail = format!("seed-{n:03}");
                db::events::insert(
                    c,
                    &NewEvent {
                        kind: "signed_in",
                        user_id: Some(id),
                        actor_id: None,
                        email: Some(email),
                        detail: Some(&detail),
                        client_ip: None,
                        user_agent: None,
                        created_at: db::now(),
                    },
                )?;
            }
            Ok(())
        })
    })
    .await;
    // The admin's own sign-in is an event too, and must not match.
    assert_eq!(
        seeds_shown(&app, &admin, "/admin/events?email=many.test").await,
        vec![Some(1), Some(0)]
    );
    assert_eq!(
        seeds_shown(
            &app,
            &admin,
            &format!("/admin/events?email=many.test&user={last}")
        )
        .await,
        vec![Some(1)]
    );
    // Wildcards are literal here too.
    assert!(
        seeds_shown(&app, &admin, "/admin/events?email=m_0")
            .await
            .is_empty()
    );
}

async fn odd_input_on_admin_pages_gets_a_clear_4xx(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    for (path, status) in [
        ("/admin/users?q=a%00b", StatusCode::BAD_REQUEST),
        ("/admin/users?q=a%0D%0Ab", StatusCode::BAD_REQUEST),
        ("/admin/users?before=abc", StatusCode::BAD_REQUEST),
        ("/admin/users?after=1.5", StatusCode::BAD_REQUEST),
        ("/admin/outbox?before=x", StatusCode::BAD_REQUEST),
        ("/admin/outbox?status=nope", StatusCode::BAD_REQUEST),
        ("/admin/events?before=abc", StatusCode::BAD_REQUEST),
        ("/admin/events?before=1.x", StatusCode::BAD_REQUEST),
        ("/admin/events?after=1", StatusCode::BAD_REQUEST),
        (
            "/admin/events?before=-300000000000000000.1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/events?email=a%00b",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/admin/events?from=-5000-01-01",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/admin/events?to=%2B10000-01-01",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("/admin/events?user=abc", StatusCode::UNPROCESSABLE_ENTITY),
        (
            "/admin/events?ip=%E2%9C%93",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let res = app.get_with(&admin.client, path).await;
        assert_eq!(res.status(), status, "{path}");
        assert!(
            res.text().await.unwrap().contains("<main"),
            "an HTML page explains: {path}"
        );
    }
    // The last day there is still bounds nothing out (the day after it has five digits).
    seed_events(&app, vec![seed(7, db::now())]).await;
    assert_eq!(
        seeds_shown(
            &app,
            &admin,
            "/admin/events?kind=throttled&from=2000-01-01&to=9999-12-31"
        )
        .await,
        vec![Some(7)]
    );
    // Unicode is fine to search for.
    page(&app, &admin, "/admin/users?q=%C3%A9l%C3%A8ve").await;
    page(&app, &admin, "/admin/events?email=%C3%A9l%C3%A8ve").await;
}

async fn the_outbox_pages_newest_first_and_back(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = sign_in_admin(&app).await;
    let ids = seed_accounts(&app, &["ann@example.com"]).await;
    let ann = ids[0];
    app.db(move |c| {
        db::write_transaction(c, |c| {
            for _ in 0..60 {
                db::outbox::insert(c, ann, "password_changed", "ann@example.com", b"x", None)?;
            }
            Ok(())
        })
    })
    .await;
    // Sent or not by now, all 60 are listed once across the two pages of "all".
    let first = page(&app, &admin, "/admin/outbox").await;
    let one: Vec<i64> = shown_mail(&first).iter().map(|m| m.id).collect();
    assert_eq!(one.len(), 50);
    assert!(one.windows(2).all(|w| w[0] > w[1]), "newest first");
    let older = link(&first, "next").expect("an Older link");
    let second = page(&app, &admin, &older).await;
    let two: Vec<i64> = shown_mail(&second).iter().map(|m| m.id).collect();
    assert_eq!(two.len(), 10);
    assert!(two[0] < one[49]);
    let newer = link(&second, "prev").expect("a Newer link");
    let back: Vec<i64> = shown_mail(&page(&app, &admin, &newer).await)
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(back, one);
}

async fn two_admins_disabling_each_other_at_once_leave_one_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = sign_in_admin(&app).await;
    let other = "second@example.com";
    let client = new_client();
    app.sign_up_with(&client, other, GOOD_PASSWORD).await;
    assert!(app.db(move |c| db::users::promote(c, other)).await);
    let second = Admin {
        client,
        id: id_of(&app, other).await,
    };
    // Both requests must be inside their transactions at once: another connection holds
    // the two accounts (Postgres) or the write lock (SQLite) while they arrive, then lets go.
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
    let pool = app.pool.clone();
    let holder = tokio::task::spawn_blocking(move || {
        use diesel::{connection::SimpleConnection, prelude::*};
        let mut conn = pool.get().expect("a connection");
        let c: &mut db::AnyConnection = &mut conn;
        match c {
            db::AnyConnection::Postgresql(pg) => {
                pg.batch_execute("BEGIN").unwrap();
                diesel::sql_query("SELECT id FROM users WHERE is_admin FOR NO KEY UPDATE")
                    .execute(pg)
                    .unwrap();
            }
            db::AnyConnection::Sqlite(sq) => sq.batch_execute("BEGIN IMMEDIATE").unwrap(),
        }
        held_tx.send(()).unwrap();
        hold_rx.recv().unwrap();
        c.batch_execute("COMMIT").unwrap();
    });
    held_rx.await.unwrap();
    let (a, b) = (action(second.id, "disable"), action(first.id, "disable"));
    let requests = async {
        tokio::join!(
            app.post_form_with(&first.client, &a, &[]),
            app.post_form_with(&second.client, &b, &[]),
        )
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hold_tx.send(()).unwrap();
    };
    let ((x, y), ()) = tokio::join!(requests, release);
    holder.await.unwrap();
    assert_eq!(x.status(), StatusCode::SEE_OTHER);
    assert_eq!(y.status(), StatusCode::SEE_OTHER);
    let disabled = [
        account(&app, ADMIN).await.disabled,
        account(&app, other).await.disabled,
    ];
    assert_ne!(disabled, [true, true], "an enabled admin is left");
    assert_eq!(
        disabled.iter().filter(|d| **d).count(),
        1,
        "the first to commit wins"
    );
}

async fn a_reset_email_dropped_while_the_worker_sends_others_is_never_sent(backend: Backend) {
    // One connection: the claimed emails go out one after the other.
    let app = spawn_app_with(backend, &[("SMTP_CONNECTIONS", "1")]).await;
    let admin = sign_in_admin(&app).await;
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    app.create_account("bob@example.com", GOOD_PASSWORD).await;
    let bob = id_of(&app, "bob@example.com").await;
    // Both requests queued together, so the worker claims both emails at once; the SMTP
    // server then holds ann's (the first) while bob's account is disabled.
    app.mail.hold();
    app.db(|c| {
        db::write_transaction(c, |c| {
            for email in ["ann@example.com", "bob@example.com"] {
                db::reset_requests::insert(c, email, "192.0.2.7", "test", None)?;
            }
            Ok(())
        })
    })
    .await;
    let first = app.mail.wait_for(1).await;
    assert_eq!(first[0].envelope_to, vec!["ann@example.com"]);
    let claimed = wait_for_mail_row(&app, |r| {
        r.recipient == "bob@example.com" && r.locked_until.is_some()
    })
    .await;
    act(&app, &admin, &action(bob, "disable")).await;
    app.mail.release();

    app.mail.assert_stays_at(1).await;
    let row = wait_for_mail_row(&app, move |r| r.id == claimed.id).await;
    assert_eq!(row.status, "expired", "{row:?}");
    assert!(row.payload.is_empty());
}

both_backends!(
    every_admin_page_sends_a_signed_out_visitor_to_sign_in_and_back,
    every_admin_page_refuses_a_signed_in_user_who_is_not_an_admin,
    a_non_admin_cannot_act_even_with_a_valid_csrf_token,
    a_signed_out_action_is_sent_to_sign_in_and_back_to_its_page,
    only_admins_see_the_admin_link_in_the_navigation,
    admin_actions_without_a_valid_csrf_token_are_refused_and_change_nothing,
    the_dashboard_counts_requested_completed_and_refused_resets_and_mail,
    searching_users_matches_a_fragment_in_any_case_and_takes_wildcards_literally,
    the_users_list_pages_through_every_account_newest_first_and_back,
    the_users_list_shows_who_is_disabled_and_who_is_admin,
    an_overlong_user_search_is_refused_with_400,
    the_user_page_shows_the_account_its_sessions_and_its_events,
    no_admin_page_shows_a_password_hash_or_a_reset_token,
    unknown_or_malformed_ids_get_404,
    sending_a_reset_email_mails_the_user_and_records_the_admin,
    the_cooldown_holds_back_a_second_reset_email_sent_by_an_admin,
    a_disabled_account_gets_no_reset_email_from_the_admin,
    ending_sessions_signs_the_user_out_everywhere_and_records_the_admin,
    a_disabled_account_cannot_sign_in_and_its_session_ends,
    disabling_an_account_kills_its_outstanding_reset_link_for_good,
    forgot_for_a_disabled_account_answers_like_any_address_and_sends_nothing,
    an_admin_cannot_disable_their_own_account,
    an_enabled_account_can_sign_in_again_and_the_admin_is_recorded,
    the_events_log_filters_by_kind_by_address_fragment_and_by_account,
    the_events_log_filters_by_exact_client_address,
    the_events_log_date_range_takes_both_days_whole,
    bad_event_filters_get_422_with_the_form,
    the_events_log_pages_through_filtered_events_without_duplicates_or_gaps,
    the_events_log_names_the_admin_who_acted,
    a_failed_email_is_listed_with_its_attempts_its_error_and_a_retry_form,
    the_outbox_lists_one_status_at_a_time,
    retrying_a_failed_email_sends_it_and_records_the_admin,
    a_sent_email_cannot_be_retried,
    a_failed_email_whose_link_expired_cannot_be_retried,
    disabling_twice_changes_and_records_nothing_the_second_time,
    a_failed_reset_email_dies_with_its_link_when_the_account_is_disabled,
    an_address_fragment_common_to_many_accounts_still_filters_the_events,
    odd_input_on_admin_pages_gets_a_clear_4xx,
    the_outbox_pages_newest_first_and_back,
    two_admins_disabling_each_other_at_once_leave_one_admin,
    a_reset_email_dropped_while_the_worker_sends_others_is_never_sent,
);

// ---------------------------------------------------------------------------------------
// In a browser
// ---------------------------------------------------------------------------------------

/// The issue's "done when": an admin made with the CLI does the work in a browser with
/// JavaScript off (one backend suffices: the pages are the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_from_the_cli_disables_an_account_in_a_browser_without_javascript() {
    let app = spawn_app(Backend::Postgres).await;
    let out = crate::cli::latchkey(
        &app,
        &[
            "user",
            "create",
            "--email",
            ADMIN,
            "--admin",
            "--password-stdin",
        ],
        Some(&format!("{GOOD_PASSWORD}\n")),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.create_account("ann@example.com", GOOD_PASSWORD).await;
    let ann = id_of(&app, "ann@example.com").await;
    let browser = Browser::start().await;

    // Signed out, /admin leads to the sign-in form and back.
    browser.goto(&app.url("/admin")).await;
    browser.wait_for_url("/login").await;
    browser.type_into("input[name=email]", ADMIN).await;
    browser
        .type_into("input[name=password]", GOOD_PASSWORD)
        .await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_text("<h1>Admin</h1>").await;
    browser.screenshot("admin-dashboard").await;

    // CONTRACT: the admin pages link to each other (here: a link to /admin/users).
    browser.click("a[href='/admin/users']").await;
    browser.wait_for_url("/admin/users").await;
    // Enter in the search field submits its form (no script needed).
    browser.type_into("input[name=q]", "ANN\u{E007}").await;
    browser.wait_for_url("q=ANN").await;
    browser.screenshot("admin-users-search").await;

    browser
        .click(&format!("tr.user a[href='/admin/users/{ann}']"))
        .await;
    browser.wait_for_url(&format!("/admin/users/{ann}")).await;
    browser.wait_for_text("ann@example.com").await;
    browser.screenshot("admin-user").await;

    browser.click("form[action$='/disable'] button").await;
    browser.wait_for_url("notice=disabled").await;
    browser.wait_for_text(r#"role="status""#).await;
    browser.screenshot("admin-user-disabled").await;
    assert!(account(&app, "ann@example.com").await.disabled);

    // The other actions, each a plain form.
    browser.click("form[action$='/enable'] button").await;
    browser.wait_for_url("notice=enabled").await;
    assert!(!account(&app, "ann@example.com").await.disabled);
    browser.click("form[action$='/end-sessions'] button").await;
    browser.wait_for_url("notice=sessions-ended").await;
    browser.click("form[action$='/reset-email'] button").await;
    browser.wait_for_url("notice=reset-queued").await;
    let mail = app.mail.wait_for(1).await;
    assert_eq!(mail[0].envelope_to, vec!["ann@example.com"]);

    // The outbox shows that email as sent.
    browser.click("a[href='/admin/outbox']").await;
    browser.wait_for_url("/admin/outbox").await;
    browser.wait_for_text(r#"data-status="sent""#).await;
    browser.screenshot("admin-outbox").await;
    browser.goto(&app.url(&format!("/admin/users/{ann}"))).await;
    browser.wait_for_text("ann@example.com").await;

    browser
        .click(&format!("a[href='/admin/events?user={ann}']"))
        .await;
    browser.wait_for_url("/admin/events").await;
    browser
        .wait_for_text(r#"data-kind="account_disabled""#)
        .await;
    browser.screenshot("admin-events").await;
}
