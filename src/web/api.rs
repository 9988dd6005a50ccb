//! The JSON API, compatible with the Novel boilerplate: `POST /auth/forgot` and
//! `POST /auth/reset`. Every error is the JSON envelope of `crate::error::ApiError`.

use actix_web::{
    HttpResponse,
    web::{Data, Json},
};
use serde::{Deserialize, Serialize};

use crate::{
    domain::{EmailAddress, NewPassword, ResetToken},
    error::ApiError,
    services::{limits::LimitGroup, recovery::ResetOutcome},
};

use super::{AppState, client::Client, recovery::sent_message};

/// Body of `POST /auth/forgot`.
#[derive(Deserialize)]
pub struct ForgotRequest {
    email: String,
}

#[derive(Serialize)]
struct ForgotResponse {
    ok: bool,
    message: String,
}

/// `POST /auth/forgot`: 200 with the same body for every valid address.
pub async fn forgot(
    state: Data<AppState>,
    Client(client): Client,
    body: Json<ForgotRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = match EmailAddress::parse(&body.email) {
        Ok(email) => email,
        Err(e) => {
            // Counted against the limit too; a valid address is counted by
            // `request_reset`, in the same hop as its queueing.
            state.services.throttle(LimitGroup::Forgot, &client).await?;
            return Err(e.into());
        }
    };
    state.services.request_reset(&email, &client).await?;
    Ok(HttpResponse::Ok().json(ForgotResponse {
        ok: true,
        message: sent_message(&state),
    }))
}

/// Body of `POST /auth/reset`.
#[derive(Deserialize)]
pub struct ResetRequest {
    token: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Serialize)]
struct OkResponse {
    ok: bool,
}

/// `POST /auth/reset`: 200 on success; 400 for a dead token or an email that does not
/// match it; 422 when the password is refused (the token stays usable).
pub async fn reset(
    state: Data<AppState>,
    Client(client): Client,
    body: Json<ResetRequest>,
) -> Result<HttpResponse, ApiError> {
    state.services.throttle(LimitGroup::Reset, &client).await?;
    let services = &state.services;
    let Some(token) = ResetToken::parse(&body.token) else {
        services.reset_refused("malformed link", &client).await?;
        return Err(ApiError::invalid_token());
    };
    // An address that is not even valid cannot be the one the link was sent to.
    let email = match body.email.as_deref().map(EmailAddress::parse) {
        Some(Ok(email)) => Some(email),
        Some(Err(_)) => {
            services
                .reset_refused("the email given is not a valid address", &client)
                .await?;
            return Err(ApiError::invalid_token());
        }
        None => None,
    };
    let hash = services.token_hash(&token);
    let password = NewPassword::parse(&body.password, None, services.policy());
    match services
        .reset_password(&hash, password, email.as_ref(), &client)
        .await?
    {
        ResetOutcome::Done => Ok(HttpResponse::Ok().json(OkResponse { ok: true })),
        ResetOutcome::DeadLink => Err(ApiError::invalid_token()),
        ResetOutcome::Refused(problem) => Err(problem.into()),
    }
}
