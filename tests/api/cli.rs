//! The `latchkey` binary: its subcommands and its refusal of bad configuration.

use std::process::{Command, Output, Stdio};

use reqwest::StatusCode;

use crate::both_backends;
use crate::helpers::*;

/// Runs the real binary with only the given environment (no `.env`: a temp working dir).
pub(crate) fn latchkey(
    app: &TestApp,
    args: &[&str],
    stdin: Option<&str>,
    extra_env: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    cmd.args(args)
        .env_clear()
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", app.database_url())
        .env("SECRET_KEY", &app.vars["SECRET_KEY"])
        .env("SMTP_URL", &app.vars["SMTP_URL"])
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run latchkey");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

async fn an_admin_created_from_the_cli_can_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let out = latchkey(
        &app,
        &[
            "user",
            "create",
            "--email",
            "Root@Example.com",
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("Created admin account"));
    let user = app
        .db(|c| latchkey::db::users::find_by_email(c, "root@example.com"))
        .await
        .unwrap();
    assert!(user.is_admin);
    let res = app
        .sign_in_with(&app.client, "root@example.com", GOOD_PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

async fn promote_makes_an_existing_account_admin_and_refuses_unknown_ones(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_account("nia@example.com", GOOD_PASSWORD).await;
    let out = latchkey(&app, &["user", "promote", "nia@example.com"], None, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = app
        .db(|c| latchkey::db::users::find_by_email(c, "nia@example.com"))
        .await
        .unwrap();
    assert!(user.is_admin);
    let out = latchkey(&app, &["user", "promote", "nobody@example.com"], None, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account"));
}

async fn an_account_created_without_a_password_is_recovered_by_email(backend: Backend) {
    let app = spawn_app(backend).await;
    let out = latchkey(
        &app,
        &["user", "create", "--email", "ops@example.com"],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("/forgot"));
    app.forgot("ops@example.com").await;
    let link = app.reset_link_in_email(1).await;
    app.open_link(&link).await;
    let res = app.set_new_password(GOOD_PASSWORD, GOOD_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

async fn a_weak_cli_password_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let out = latchkey(
        &app,
        &[
            "user",
            "create",
            "--email",
            "w@example.com",
            "--password-stdin",
        ],
        Some("short\n"),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 15 characters"));
}

both_backends!(
    an_admin_created_from_the_cli_can_sign_in,
    promote_makes_an_existing_account_admin_and_refuses_unknown_ones,
    an_account_created_without_a_password_is_recovered_by_email,
    a_weak_cli_password_is_refused,
);

#[tokio::test]
async fn bad_configuration_stops_with_one_line_naming_the_variable() {
    let app = spawn_app(Backend::Sqlite).await;
    for (var, value) in [
        ("DATABASE_URL", "mysql://localhost/x"),
        ("RESET_TOKEN_TTL_SECS", "0"),
        ("PASSWORD_MIN_LENGTH", "4"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ("SECRET_KEY", "too-short"),
        ("BASE_URL", "not a url"),
        ("SMTP_URL", "ftp://nope"),
    ] {
        let out = latchkey(&app, &["migrate"], None, &[(var, value)]);
        assert_eq!(out.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}: {stderr}");
        assert!(lines[0].contains(var), "{var}: {stderr}");
    }
    let out = latchkey(
        &app,
        &["migrate"],
        None,
        &[("LISTEN_ADDR", "0.0.0.0:8080"), ("SMTP_URL", "")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SMTP_URL"));
}

#[tokio::test]
async fn an_unreachable_postgres_is_reported_with_the_real_error() {
    let app = spawn_app(Backend::Sqlite).await;
    let out = latchkey(
        &app,
        &["migrate"],
        None,
        &[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DATABASE_URL") && stderr.contains("127.0.0.1"),
        "{stderr}"
    );
}
