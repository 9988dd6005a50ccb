//! `/admin/users`: the accounts list with search, one account's page, and the actions on it
//! (send a reset email, end its sessions, disable or enable it).

use actix_web::{
    HttpResponse,
    http::StatusCode,
    web::{Data, Path, Query},
};
use askama::Template;
use serde::Deserialize;

use crate::{
    db::users::UserSummary,
    error::PageError,
    services::{admin::AdminOutcome, admin::UserDetail},
    words::{browser_name, lifetime_in_words},
};

use super::{
    super::{
        AppState,
        auth::NoFields,
        client::Client,
        csrf::Csrf,
        gate::{Admin, AdminForm},
        render::{Layout, page, see_other},
    },
    EventView, admin_layout, event_views, id_keyset, link, path_id, when, when_or_never,
};

/// Longest search fragment: an address is at most 254 characters.
const MAX_QUERY: usize = 254;

/// One row of the accounts list.
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub created: String,
    pub last_login: String,
    pub last_reset: String,
    pub disabled: bool,
    pub admin: bool,
}

impl From<UserSummary> for UserView {
    fn from(u: UserSummary) -> Self {
        Self {
            id: u.id,
            email: u.email,
            created: when(u.created_at),
            last_login: when_or_never(u.last_login_at),
            last_reset: when_or_never(u.last_reset_at),
            disabled: u.disabled,
            admin: u.is_admin,
        }
    }
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    l: Layout,
    q: String,
    users: Vec<UserView>,
    older: Option<String>,
    newer: Option<String>,
}

/// Query of `GET /admin/users`.
#[derive(Deserialize)]
pub struct UsersQuery {
    q: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

/// `GET /admin/users`
pub async fn list(
    state: Data<AppState>,
    csrf: Csrf,
    query: Query<UsersQuery>,
    Admin { admin }: Admin,
) -> Result<HttpResponse, PageError> {
    let q = query.q.as_deref().unwrap_or_default().trim().to_owned();
    if q.chars().count() > MAX_QUERY {
        return Err(PageError::BadRequest(format!(
            "The search is too long: at most {MAX_QUERY} characters."
        )));
    }
    if q.chars().any(char::is_control) {
        return Err(PageError::BadRequest(
            "The search cannot contain control characters.".into(),
        ));
    }
    let keyset = id_keyset(query.before.as_deref(), query.after.as_deref())?;
    let fragment = (!q.is_empty()).then(|| q.clone());
    let found = state.services.admin_users(fragment, keyset).await?;
    let to = |key: &str, id: i64| link("/admin/users", &[("q", q.clone()), (key, id.to_string())]);
    let users = found.rows.into_iter().map(UserView::from).collect();
    page(
        StatusCode::OK,
        &UsersPage {
            l: admin_layout(csrf.token(), &admin),
            older: found.older.map(|id| to("before", id)),
            newer: found.newer.map(|id| to("after", id)),
            q,
            users,
        },
    )
}

/// One line of an account's session list.
pub struct SessionView {
    pub browser: String,
    pub ip: String,
    pub since: String,
}

#[derive(Template)]
#[template(path = "admin/user.html")]
struct UserPage {
    l: Layout,
    user: UserView,
    sessions: Vec<SessionView>,
    events: Vec<EventView>,
    notice: Option<String>,
    is_self: bool,
}

/// Query of `GET /admin/users/{id}`.
#[derive(Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

/// The sentence for a notice code (never text from the address bar).
fn user_notice(code: &str, state: &AppState) -> Option<String> {
    let cooldown = lifetime_in_words(state.services.settings.reset_cooldown);
    Some(match code {
        "reset-queued" => format!(
            "A reset email is queued for this account. The usual limits apply: if one was \
             sent in the last {cooldown}, or the daily number was reached, none is sent \
             (the events below say which)."
        ),
        "reset-disabled" => {
            "This account is disabled, so no reset email was sent. Enable it first.".to_owned()
        }
        "sessions-ended" => "Every session of this account has been ended.".to_owned(),
        "disabled" => "The account is disabled: its sessions and reset links were ended, and \
                       it can no longer sign in."
            .to_owned(),
        "enabled" => "The account is enabled again.".to_owned(),
        "cannot-disable-self" => "You cannot disable your own account.".to_owned(),
        "last-admin" => "This is the last enabled admin; it stays enabled.".to_owned(),
        "already-disabled" => "The account was already disabled; nothing changed.".to_owned(),
        "already-enabled" => "The account was already enabled; nothing changed.".to_owned(),
        _ => return None,
    })
}

/// `GET /admin/users/{id}`
pub async fn detail(
    state: Data<AppState>,
    csrf: Csrf,
    id: Path<String>,
    query: Query<NoticeQuery>,
    Admin { admin }: Admin,
) -> Result<HttpResponse, PageError> {
    let id = path_id(&id)?;
    let Some(UserDetail {
        user,
        sessions,
        events,
    }) = state.services.admin_user(id).await?
    else {
        return Err(PageError::NotFound);
    };
    let sessions = sessions
        .into_iter()
        .map(|s| SessionView {
            browser: browser_name(s.user_agent.as_deref().unwrap_or_default()),
            ip: s.client_ip.unwrap_or_default(),
            since: when(s.created_at),
        })
        .collect();
    page(
        StatusCode::OK,
        &UserPage {
            l: admin_layout(csrf.token(), &admin),
            is_self: admin.id == user.id,
            user: user.into(),
            sessions,
            events: event_views(events),
            notice: query.notice.as_deref().and_then(|c| user_notice(c, &state)),
        },
    )
}

/// The actions on an account, by the last segment of their path.
#[derive(Clone, Copy)]
enum Action {
    SendReset,
    EndSessions,
    Disable,
    Enable,
}

impl Action {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "reset-email" => Self::SendReset,
            "end-sessions" => Self::EndSessions,
            "disable" => Self::Disable,
            "enable" => Self::Enable,
            _ => return None,
        })
    }
}

/// `POST /admin/users/{id}/{action}`: `reset-email`, `end-sessions`, `disable` or `enable`;
/// answers with a 303 to the account's page and a notice.
pub async fn act(
    state: Data<AppState>,
    // Who asks is checked before what they ask about: a non-admin learns nothing, not
    // even which ids exist.
    AdminForm { admin, .. }: AdminForm<NoFields>,
    Client(client): Client,
    path: Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (raw_id, name) = path.into_inner();
    let id = path_id(&raw_id)?;
    let back = format!("/admin/users/{id}");
    let action = Action::parse(&name).ok_or(PageError::NotFound)?;
    let services = &state.services;
    let outcome = match action {
        Action::SendReset => services.admin_send_reset(&admin, id, &client).await?,
        Action::EndSessions => services.admin_end_sessions(&admin, id, &client).await?,
        Action::Disable => {
            services
                .admin_set_disabled(&admin, id, true, &client)
                .await?
        }
        Action::Enable => {
            services
                .admin_set_disabled(&admin, id, false, &client)
                .await?
        }
    };
    let notice = match (action, outcome) {
        (_, AdminOutcome::NotFound) => return Err(PageError::NotFound),
        (Action::SendReset, AdminOutcome::Done) => "reset-queued",
        (Action::SendReset, AdminOutcome::Refused | AdminOutcome::Unchanged) => "reset-disabled",
        (Action::EndSessions, _) => "sessions-ended",
        (Action::Disable, AdminOutcome::Done) => "disabled",
        (Action::Disable, AdminOutcome::Refused) if id == admin.id => "cannot-disable-self",
        (Action::Disable, AdminOutcome::Refused) => "last-admin",
        (Action::Disable, AdminOutcome::Unchanged) => "already-disabled",
        (Action::Enable, AdminOutcome::Unchanged) => "already-enabled",
        (Action::Enable, _) => "enabled",
    };
    tracing::info!(admin_id = admin.id, user_id = id, notice, "admin action");
    Ok(see_other(&format!("{back}?notice={notice}")))
}
