//! The account page: the address, a password change, and the signed-in sessions.

use actix_session::Session;
use actix_web::{
    HttpResponse,
    http::StatusCode,
    web::{Data, Query},
};
use askama::Template;
use serde::Deserialize;

use crate::{
    domain::{NewPassword, SubmittedPassword},
    error::PageError,
    services::accounts::Account,
    services::accounts::ChangeProblem,
    services::limits::LimitGroup,
    words::browser_name,
};

use super::{
    AppState,
    auth::{FieldErrors, NoFields},
    client::Client,
    csrf::Csrf,
    gate::{SignedIn, SignedInForm},
    render::{Layout, page, see_other},
    session::{self, layout},
};

/// One line of the session list.
pub struct SessionView {
    pub browser: String,
    pub ip: String,
    pub since: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    l: Layout,
    email: String,
    sessions: Vec<SessionView>,
    current_error: Option<String>,
    errors: FieldErrors,
    notice: Option<String>,
    min_length: usize,
}

/// Query of `GET /account`.
#[derive(Deserialize)]
pub struct AccountQuery {
    notice: Option<String>,
}

/// What the account page says about the last form sent.
#[derive(Default)]
struct Feedback {
    current_error: Option<String>,
    errors: FieldErrors,
    notice: Option<String>,
}

impl Feedback {
    fn password(problem: &crate::domain::PasswordProblem) -> Self {
        Self {
            errors: FieldErrors::from_password(problem),
            ..Self::default()
        }
    }
}

async fn account_page(
    state: &AppState,
    session: &Session,
    csrf: &Csrf,
    user: &Account,
    status: StatusCode,
    feedback: Feedback,
) -> Result<HttpResponse, PageError> {
    let Feedback {
        current_error,
        errors,
        notice,
    } = feedback;
    let mine = session::public_id(session);
    let sessions = state
        .services
        .sessions_of(user.id)
        .await?
        .into_iter()
        .map(|s| SessionView {
            browser: browser_name(s.user_agent.as_deref().unwrap_or_default()),
            ip: s.client_ip.unwrap_or_default(),
            since: s.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            current: s.public_id.is_some() && s.public_id == mine,
        })
        .collect();
    page(
        status,
        &AccountPage {
            l: layout(csrf.token(), Some(user)),
            email: user.email.clone(),
            sessions,
            current_error,
            errors,
            notice,
            min_length: state.services.settings.password_min_length,
        },
    )
}

/// `GET /account`
pub async fn account(
    state: Data<AppState>,
    csrf: Csrf,
    query: Query<AccountQuery>,
    SignedIn { user, session }: SignedIn,
) -> Result<HttpResponse, PageError> {
    let notice = match query.notice.as_deref() {
        Some("password-changed") => {
            Some("Your password has been changed. Your other sessions were signed out.".to_owned())
        }
        Some("sessions-ended") => Some("Your other sessions were signed out.".to_owned()),
        _ => None,
    };
    let feedback = Feedback {
        notice,
        ..Feedback::default()
    };
    account_page(&state, &session, &csrf, &user, StatusCode::OK, feedback).await
}

/// Fields of the password change form.
#[derive(Deserialize)]
pub struct ChangePasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

/// `POST /account/password`
pub async fn change_password(
    state: Data<AppState>,
    SignedInForm {
        user,
        session,
        csrf,
        form,
    }: SignedInForm<ChangePasswordForm>,
    Client(client): Client,
) -> Result<HttpResponse, PageError> {
    let services = &state.services;
    // Every POST here checks the current password: a guess, for someone holding a
    // stolen session, so it is limited like sign-in.
    services.throttle(LimitGroup::Account, &client).await?;
    let refused = |feedback| {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        account_page(&state, &session, &csrf, &user, status, feedback)
    };
    let new = match NewPassword::parse(
        &form.password,
        Some(&form.password_confirm),
        services.policy(),
    ) {
        Ok(p) => p,
        Err(problem) => return refused(Feedback::password(&problem)).await,
    };
    let current = SubmittedPassword::parse(&form.current_password);
    let keep = session::public_id(&session);
    match services
        .change_password(&user, current, new, keep, &client)
        .await?
    {
        Ok(()) => {
            tracing::info!(user_id = user.id, "password changed");
            Ok(see_other("/account?notice=password-changed"))
        }
        Err(ChangeProblem::CredentialsChanged) => {
            // A reset, another change or a disable won meanwhile: this session is over.
            session::sign_out(&session);
            Ok(see_other("/login?notice=credentials-changed"))
        }
        Err(ChangeProblem::WrongCurrentPassword) => {
            let error = "That is not your current password.".to_owned();
            refused(Feedback {
                current_error: Some(error),
                ..Feedback::default()
            })
            .await
        }
        Err(ChangeProblem::Password(problem)) => refused(Feedback::password(&problem)).await,
    }
}

/// `POST /account/sessions/end-others`
pub async fn end_other_sessions(
    state: Data<AppState>,
    SignedInForm { user, session, .. }: SignedInForm<NoFields>,
    Client(client): Client,
) -> Result<HttpResponse, PageError> {
    let keep = session::public_id(&session);
    if keep.is_none() {
        return Err(PageError::BadRequest(
            "This session has no id; sign in again.".into(),
        ));
    }
    let ended = state.services.end_sessions(&user, keep, &client).await?;
    tracing::info!(user_id = user.id, ended, "other sessions ended");
    Ok(see_other("/account?notice=sessions-ended"))
}
