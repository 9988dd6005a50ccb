//! Home, sign-up, sign-in and sign-out.

use actix_session::Session;
use actix_web::{
    HttpResponse,
    http::StatusCode,
    web::{Data, Query},
};
use askama::Template;
use serde::Deserialize;

use crate::{
    domain::{EmailAddress, NewPassword, PasswordProblem, SubmittedPassword},
    error::PageError,
    services::{accounts::SignUpProblem, limits::LimitGroup},
};

use super::{
    AppState,
    client::Client,
    csrf::{Csrf, CsrfForm},
    render::{Layout, page, see_other},
    session::{self, current_user, layout, safe_next},
};

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    l: Layout,
    email: Option<String>,
}

/// `GET /`
pub async fn home(
    state: Data<AppState>,
    session: Session,
    csrf: Csrf,
) -> Result<HttpResponse, PageError> {
    let user = current_user(&state, &session).await?;
    page(
        StatusCode::OK,
        &HomePage {
            l: layout(csrf.token(), user.as_ref()),
            email: user.map(|u| u.email),
        },
    )
}

/// Errors shown beside the fields of a password form.
#[derive(Debug, Default)]
pub struct FieldErrors {
    pub email: Option<String>,
    pub password: Option<String>,
    pub password_confirm: Option<String>,
}

impl FieldErrors {
    /// Puts a password problem beside the field it concerns.
    pub fn from_password(problem: &PasswordProblem) -> Self {
        let message = Some(problem.to_string());
        match problem {
            PasswordProblem::Mismatch => Self {
                password_confirm: message,
                ..Self::default()
            },
            _ => Self {
                password: message,
                ..Self::default()
            },
        }
    }
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    l: Layout,
    email: String,
    errors: FieldErrors,
    min_length: usize,
}

/// Fields of the sign-up form. Missing fields read as empty and fail validation (422),
/// not deserialisation.
#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

/// `GET /signup`
pub async fn signup_form(
    state: Data<AppState>,
    session: Session,
    csrf: Csrf,
) -> Result<HttpResponse, PageError> {
    if current_user(&state, &session).await?.is_some() {
        return Ok(see_other("/account"));
    }
    page(
        StatusCode::OK,
        &SignupPage {
            l: layout(csrf.token(), None),
            email: String::new(),
            errors: FieldErrors::default(),
            min_length: state.services.settings.password_min_length,
        },
    )
}

/// `POST /signup`
pub async fn signup(
    state: Data<AppState>,
    session: Session,
    CsrfForm(csrf, form): CsrfForm<SignupForm>,
    Client(client): Client,
) -> Result<HttpResponse, PageError> {
    let services = &state.services;
    services.throttle(LimitGroup::SignUp, &client).await?;
    let rerender = |errors: FieldErrors| {
        page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &SignupPage {
                l: layout(csrf.token(), None),
                email: form.email.chars().take(254).collect(),
                errors,
                min_length: services.settings.password_min_length,
            },
        )
    };
    let email = match EmailAddress::parse(&form.email) {
        Ok(e) => e,
        Err(e) => {
            return rerender(FieldErrors {
                email: Some(e.to_string()),
                ..FieldErrors::default()
            });
        }
    };
    let password = match NewPassword::parse(
        &form.password,
        Some(&form.password_confirm),
        services.policy(),
    ) {
        Ok(p) => p,
        Err(problem) => return rerender(FieldErrors::from_password(&problem)),
    };
    match services.sign_up(email, password, false, Some(&client)).await? {
        Ok(user) => {
            tracing::info!(user_id = user.id, "account created");
            session::sign_in(&session, &csrf, &user, &client)?;
            Ok(see_other("/account"))
        }
        Err(SignUpProblem::EmailTaken) => rerender(FieldErrors {
            email: Some("An account with this email address already exists. Sign in, or reset its password.".into()),
            ..FieldErrors::default()
        }),
        Err(SignUpProblem::Password(problem)) => rerender(FieldErrors::from_password(&problem)),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    l: Layout,
    email: String,
    next: String,
    error: Option<String>,
    notice: Option<String>,
}

/// Query of `GET /login`.
#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    notice: Option<String>,
}

/// `GET /login`
pub async fn login_form(
    state: Data<AppState>,
    session: Session,
    csrf: Csrf,
    query: Query<LoginQuery>,
) -> Result<HttpResponse, PageError> {
    let next = query.next.as_deref().and_then(safe_next);
    if current_user(&state, &session).await?.is_some() {
        return Ok(see_other(next.as_deref().unwrap_or("/account")));
    }
    let notice = match query.notice.as_deref() {
        Some("password-changed") => {
            Some("Your password has been changed. Sign in with your new password.".to_owned())
        }
        Some("credentials-changed") => Some(
            "Your password was changed or reset elsewhere meanwhile, so nothing was changed \
             here. Sign in again."
                .to_owned(),
        ),
        _ => None,
    };
    page(
        StatusCode::OK,
        &LoginPage {
            l: layout(csrf.token(), None),
            email: String::new(),
            next: next.unwrap_or_default(),
            error: None,
            notice,
        },
    )
}

/// Fields of the sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: one generic message for every failure, and the same work for each.
pub async fn login(
    state: Data<AppState>,
    session: Session,
    CsrfForm(csrf, form): CsrfForm<LoginForm>,
    Client(client): Client,
) -> Result<HttpResponse, PageError> {
    state.services.throttle(LimitGroup::Login, &client).await?;
    let email = EmailAddress::parse(&form.email).ok();
    let password = SubmittedPassword::parse(&form.password);
    let next = safe_next(&form.next);
    match state.services.sign_in(email, password, &client).await? {
        Some(user) => {
            tracing::info!(user_id = user.id, "signed in");
            session::sign_in(&session, &csrf, &user, &client)?;
            Ok(see_other(next.as_deref().unwrap_or("/account")))
        }
        None => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &LoginPage {
                l: layout(csrf.token(), None),
                email: form.email.chars().take(254).collect(),
                next: next.unwrap_or_default(),
                error: Some("That email and password do not match an account.".into()),
                notice: None,
            },
        ),
    }
}

/// The fields of a form that carries only its CSRF token (checked by [`CsrfForm`]).
#[derive(Deserialize)]
pub struct NoFields {}

/// `POST /logout`
pub async fn logout(
    state: Data<AppState>,
    session: Session,
    CsrfForm(_, NoFields {}): CsrfForm<NoFields>,
    Client(client): Client,
) -> Result<HttpResponse, PageError> {
    if let Some(user) = current_user(&state, &session).await? {
        state.services.signed_out(&user, &client).await?;
    }
    session::sign_out(&session);
    Ok(see_other("/login"))
}
