//! The dev mailbox at `/dev/mail`: every email "sent" while `SMTP_URL` is unset. It exists
//! only then, and start-up refuses a public listen address without SMTP.

use actix_session::Session;
use actix_web::{HttpResponse, http::StatusCode, web::Data};
use askama::Template;

use crate::error::PageError;

use super::{
    AppState,
    csrf::Csrf,
    render::{Layout, page},
    session::{current_user, layout},
};

/// One message as the page shows it.
pub struct MailView {
    pub to: String,
    pub subject: String,
    pub sent_at: String,
    pub text: String,
    pub links: Vec<String>,
}

#[derive(Template)]
#[template(path = "dev_mail.html")]
struct DevMailPage {
    l: Layout,
    mails: Vec<MailView>,
}

/// `GET /dev/mail`
pub async fn mailbox(
    state: Data<AppState>,
    session: Session,
    csrf: Csrf,
) -> Result<HttpResponse, PageError> {
    let Some(mailbox) = &state.dev_mailbox else {
        return Err(PageError::NotFound);
    };
    let user = current_user(&state, &session).await?;
    let base = state.services.settings.base_url.to_string();
    let mails = mailbox
        .list()
        .into_iter()
        .map(|m| MailView {
            links: m
                .message
                .text
                .split_whitespace()
                .filter(|w| w.starts_with(&base))
                .map(str::to_owned)
                .collect(),
            to: m.to,
            subject: m.message.subject,
            sent_at: m.sent_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            text: m.message.text,
        })
        .collect();
    page(
        StatusCode::OK,
        &DevMailPage {
            l: layout(csrf.token(), user.as_ref()),
            mails,
        },
    )
}
