//! `/admin/outbox`: queued, sent, failed and expired mail, and the retry of a failed one.
//! Shows who a message was for and what happened to it, never its body or link.

use actix_web::{
    HttpResponse,
    http::StatusCode,
    web::{Data, Path, Query},
};
use askama::Template;
use serde::Deserialize;

use crate::{db::outbox::status, error::PageError, services::admin::AdminOutcome};

use super::{
    super::{
        AppState,
        auth::NoFields,
        client::Client,
        csrf::Csrf,
        gate::{Admin, AdminForm},
        render::{Layout, page, see_other},
    },
    admin_layout, id_keyset, link, path_id, when,
};

/// The statuses the page filters on, in the order of its tabs.
const STATUSES: [&str; 4] = [
    status::QUEUED,
    status::SENT,
    status::FAILED,
    status::EXPIRED,
];

/// One row of the outbox table.
pub struct MailView {
    pub id: i64,
    pub created: String,
    pub kind: String,
    pub recipient: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: String,
    pub sent: String,
    pub retryable: bool,
}

#[derive(Template)]
#[template(path = "admin/outbox.html")]
struct OutboxPage {
    l: Layout,
    status: String,
    statuses: [&'static str; 4],
    mails: Vec<MailView>,
    older: Option<String>,
    newer: Option<String>,
    notice: Option<&'static str>,
}

/// Query of `GET /admin/outbox`.
#[derive(Deserialize)]
pub struct OutboxQuery {
    status: Option<String>,
    before: Option<String>,
    after: Option<String>,
    notice: Option<String>,
}

fn notice(code: &str) -> Option<&'static str> {
    match code {
        "retried" => Some("The email is queued again; it is sent within moments."),
        "retry-impossible" => Some(
            "That email cannot be sent again: it has not failed, or its reset link has \
             expired. Send a new reset email from the account's page instead.",
        ),
        _ => None,
    }
}

/// `GET /admin/outbox`
pub async fn list(
    state: Data<AppState>,
    csrf: Csrf,
    query: Query<OutboxQuery>,
    Admin { admin }: Admin,
) -> Result<HttpResponse, PageError> {
    let wanted = query.status.as_deref().unwrap_or_default().trim();
    let status = match STATUSES.into_iter().find(|s| *s == wanted) {
        Some(s) => Some(s),
        None if wanted.is_empty() => None,
        None => {
            return Err(PageError::BadRequest(
                "Unknown status: pick queued, sent, failed or expired.".into(),
            ));
        }
    };
    let keyset = id_keyset(query.before.as_deref(), query.after.as_deref())?;
    let found = state.services.admin_outbox(status, keyset).await?;
    let shown = status.unwrap_or_default().to_owned();
    let to = |key: &str, id: i64| {
        link(
            "/admin/outbox",
            &[("status", shown.clone()), (key, id.to_string())],
        )
    };
    let mails = found
        .rows
        .into_iter()
        .map(|entry| {
            let m = entry.mail;
            MailView {
                id: m.id,
                created: when(m.created_at),
                kind: m.kind,
                recipient: m.recipient,
                status: m.status,
                attempts: m.attempts,
                last_error: m.last_error.unwrap_or_default(),
                sent: m.sent_at.map(when).unwrap_or_default(),
                retryable: entry.retryable,
            }
        })
        .collect();
    page(
        StatusCode::OK,
        &OutboxPage {
            l: admin_layout(csrf.token(), &admin),
            older: found.older.map(|id| to("before", id)),
            newer: found.newer.map(|id| to("after", id)),
            status: shown,
            statuses: STATUSES,
            mails,
            notice: query.notice.as_deref().and_then(notice),
        },
    )
}

/// `POST /admin/outbox/{id}/retry`
pub async fn retry(
    state: Data<AppState>,
    AdminForm { admin, .. }: AdminForm<NoFields>,
    Client(client): Client,
    id: Path<String>,
) -> Result<HttpResponse, PageError> {
    let id = path_id(&id)?;
    let code = match state.services.admin_retry_mail(&admin, id, &client).await? {
        AdminOutcome::NotFound => return Err(PageError::NotFound),
        AdminOutcome::Done => "retried",
        AdminOutcome::Refused | AdminOutcome::Unchanged => "retry-impossible",
    };
    tracing::info!(admin_id = admin.id, outbox_id = id, code, "admin retry");
    Ok(see_other(&format!(
        "/admin/outbox?status=failed&notice={code}"
    )))
}
