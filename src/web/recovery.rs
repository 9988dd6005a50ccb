//! The recovery pages: ask for a link, open it, set a new password.

use actix_session::Session;
use actix_web::{
    HttpResponse,
    http::StatusCode,
    web::{Data, Query},
};
use askama::Template;
use serde::Deserialize;

use crate::{
    domain::{EmailAddress, NewPassword, ResetToken},
    error::PageError,
    services::{limits::LimitGroup, recovery::ResetOutcome},
};

use super::{
    AppState,
    auth::FieldErrors,
    client::Client,
    csrf::{Csrf, CsrfForm},
    render::{Layout, page, see_other},
    reset_cookie::OpenedLink,
    session::{current_user, layout},
};

/// The answer to every valid forgot request, registered address or not.
pub const FORGOT_SENT: &str = "If an account exists for that address, we have sent it a link to reset the password. \
     Check your inbox and spam folder; the link expires in";

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    l: Layout,
    email: String,
    error: Option<String>,
    sent: Option<String>,
}

/// `GET /forgot`
pub async fn forgot_form(
    state: Data<AppState>,
    session: Session,
    csrf: Csrf,
) -> Result<HttpResponse, PageError> {
    let user = current_user(&state, &session).await?;
    page(
        StatusCode::OK,
        &ForgotPage {
            l: layout(csrf.token(), user.as_ref()),
            email: String::new(),
            error: None,
            sent: None,
        },
    )
}

/// Fields of the forgot form.
#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
}

/// The sentence shown after a forgot request, with the link lifetime in words.
pub fn sent_message(state: &AppState) -> String {
    format!(
        "{FORGOT_SENT} {}.",
        crate::words::lifetime_in_words(state.services.settings.reset_token_ttl)
    )
}

/// `POST /forgot`: the same page for every syntactically valid address. The work on the
/// request path is one insert, whatever the address; the worker does the rest.
pub async fn forgot(
    state: Data<AppState>,
    CsrfForm(csrf, form): CsrfForm<ForgotForm>,
    Client(client): Client,
) -> Result<HttpResponse, PageError> {
    let l = layout(csrf.token(), None);
    match EmailAddress::parse(&form.email) {
        // An invalid address counts against the limit too; a valid one is counted by
        // `request_reset`, in the same hop as its queueing.
        Err(e) => {
            state.services.throttle(LimitGroup::Forgot, &client).await?;
            page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ForgotPage {
                    l,
                    email: form.email.chars().take(254).collect(),
                    error: Some(e.to_string()),
                    sent: None,
                },
            )
        }
        Ok(email) => {
            state.services.request_reset(&email, &client).await?;
            page(
                StatusCode::OK,
                &ForgotPage {
                    l,
                    email: String::new(),
                    error: None,
                    sent: Some(sent_message(&state)),
                },
            )
        }
    }
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    l: Layout,
    email: String,
    errors: FieldErrors,
    min_length: usize,
}

#[derive(Template)]
#[template(path = "reset_dead.html")]
struct ResetDeadPage {
    l: Layout,
}

fn dead_link(csrf: &Csrf) -> Result<HttpResponse, PageError> {
    page(
        StatusCode::BAD_REQUEST,
        &ResetDeadPage {
            l: layout(csrf.token(), None),
        },
    )
}

/// Query of `GET /reset`.
#[derive(Deserialize)]
pub struct ResetQuery {
    token: Option<String>,
}

/// `GET /reset?token=T` moves a live token's hash into the reset cookie and redirects to
/// `/reset`, so the token leaves the address bar (and Referer, history, screenshots).
/// `GET /reset` shows the form while the cookie names a live token. Neither consumes the
/// token.
pub async fn reset_form(
    state: Data<AppState>,
    link: OpenedLink,
    csrf: Csrf,
    Client(client): Client,
    query: Query<ResetQuery>,
) -> Result<HttpResponse, PageError> {
    if let Some(raw) = &query.token {
        let Some(token) = ResetToken::parse(raw) else {
            state
                .services
                .dead_link_opened(None, "malformed link", &client)
                .await?;
            return dead_link(&csrf);
        };
        return match state.services.open_reset_link(&token, &client).await? {
            Some(hash) => {
                let mut res = see_other("/reset");
                link.remember(&mut res, &hash)?;
                Ok(res)
            }
            None => dead_link(&csrf),
        };
    }
    let Some(hash) = link.hash() else {
        return dead_link(&csrf);
    };
    match state.services.reset_target(hash).await? {
        Some(email) => page(
            StatusCode::OK,
            &ResetPage {
                l: layout(csrf.token(), None),
                email,
                errors: FieldErrors::default(),
                min_length: state.services.settings.password_min_length,
            },
        ),
        None => forgotten(dead_link(&csrf)?, &link),
    }
}

/// The response, with the reset cookie removed.
fn forgotten(mut res: HttpResponse, link: &OpenedLink) -> Result<HttpResponse, PageError> {
    link.forget(&mut res)?;
    Ok(res)
}

/// Fields of the reset form.
#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

/// `POST /reset`: validates, then consumes the token and changes the password at once.
/// Success ends at the sign-in page; nobody is signed in by a reset link.
pub async fn reset(
    state: Data<AppState>,
    link: OpenedLink,
    CsrfForm(csrf, form): CsrfForm<ResetForm>,
    Client(client): Client,
) -> Result<HttpResponse, PageError> {
    state.services.throttle(LimitGroup::Reset, &client).await?;
    let Some(hash) = link.hash() else {
        state
            .services
            .reset_refused("no reset link was opened in this browser", &client)
            .await?;
        return dead_link(&csrf);
    };
    let services = &state.services;
    let password = NewPassword::parse(
        &form.password,
        Some(&form.password_confirm),
        services.policy(),
    );
    match services
        .reset_password(hash, password, None::<&EmailAddress>, &client)
        .await?
    {
        ResetOutcome::Done => forgotten(see_other("/login?notice=password-changed"), &link),
        ResetOutcome::DeadLink => forgotten(dead_link(&csrf)?, &link),
        ResetOutcome::Refused(problem) => {
            let email = services.reset_target(hash).await?.unwrap_or_default();
            page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ResetPage {
                    l: layout(csrf.token(), None),
                    email,
                    errors: FieldErrors::from_password(&problem),
                    min_length: services.settings.password_min_length,
                },
            )
        }
    }
}
