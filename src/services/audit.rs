//! The audit trail (SPEC §9): every recovery and sign-in event, with its time, account,
//! client address and user agent, so an operator can answer "who asked for this link, and
//! what happened to it?". Never a token, a password or a session id: an event says what
//! happened, not how to repeat it.
//!
//! Events that belong to a change (a reset, a password change) are written in the change's
//! own transaction with [`record`]; the rest go through [`Services::record`].

use chrono::NaiveDateTime;

use crate::db::{self, events};

use super::{ClientInfo, ServiceError, Services};

/// What happened. The stored names are stable: admins filter on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Someone asked for a reset link (recorded when the worker handles the request, with
    /// the request's own time, address and browser).
    ResetRequested,
    /// An email went out (`detail`: which one).
    MailSent,
    /// An email could not be delivered (`detail`: which one, and whether it is retried).
    MailFailed,
    /// A reset link was opened (`detail` says why it was dead, when it was).
    ResetLinkOpened,
    /// A password was set through a reset link.
    ResetDone,
    /// A reset was refused (`detail`: why).
    ResetRefused,
    /// A limit held a request back (`detail`: which limit).
    Throttled,
    SignedIn,
    /// A sign-in failed (`detail`: why; never shown to the person signing in).
    SignInFailed,
    SignedOut,
    /// An account was made (by sign-up, or from the CLI without a client).
    AccountCreated,
    /// A signed-in user changed their password.
    PasswordChanged,
    /// A password change was refused (`detail`: why, e.g. a wrong current password: a
    /// guess by someone holding a stolen session).
    PasswordChangeRefused,
    /// Sessions were ended on request (`detail`: how many).
    SessionsEnded,
    /// An admin asked for a reset email for the account (the worker's `reset_requested`
    /// event, also naming the admin, says what came of it).
    AdminResetRequested,
    /// An admin disabled the account (its sessions and reset links ended with it).
    AccountDisabled,
    /// An admin enabled the account again.
    AccountEnabled,
    /// An admin put a failed email back in the queue (`detail`: which one).
    MailRetried,
}

impl EventKind {
    /// Every kind, in the order admins see them listed.
    pub const ALL: [EventKind; 18] = [
        Self::ResetRequested,
        Self::MailSent,
        Self::MailFailed,
        Self::ResetLinkOpened,
        Self::ResetDone,
        Self::ResetRefused,
        Self::Throttled,
        Self::SignedIn,
        Self::SignInFailed,
        Self::SignedOut,
        Self::AccountCreated,
        Self::PasswordChanged,
        Self::PasswordChangeRefused,
        Self::SessionsEnded,
        Self::AdminResetRequested,
        Self::AccountDisabled,
        Self::AccountEnabled,
        Self::MailRetried,
    ];

    /// The name stored in `events.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResetRequested => "reset_requested",
            Self::MailSent => "mail_sent",
            Self::MailFailed => "mail_failed",
            Self::ResetLinkOpened => "reset_link_opened",
            Self::ResetDone => "reset_done",
            Self::ResetRefused => "reset_refused",
            Self::Throttled => "throttled",
            Self::SignedIn => "signed_in",
            Self::SignInFailed => "sign_in_failed",
            Self::SignedOut => "signed_out",
            Self::AccountCreated => "account_created",
            Self::PasswordChanged => "password_changed",
            Self::PasswordChangeRefused => "password_change_refused",
            Self::SessionsEnded => "sessions_ended",
            Self::AdminResetRequested => "admin_reset_requested",
            Self::AccountDisabled => "account_disabled",
            Self::AccountEnabled => "account_enabled",
            Self::MailRetried => "mail_retried",
        }
    }

    /// The kind stored under `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// An event to record. Built with [`Event::new`] and the setters below.
#[derive(Debug, Clone)]
pub struct Event {
    kind: EventKind,
    user_id: Option<i64>,
    actor_id: Option<i64>,
    email: Option<String>,
    detail: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
    at: Option<NaiveDateTime>,
}

impl Event {
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            user_id: None,
            actor_id: None,
            email: None,
            detail: None,
            client_ip: None,
            user_agent: None,
            at: None,
        }
    }

    /// The account concerned, with its address at the time.
    pub fn user(mut self, id: i64, email: &str) -> Self {
        self.user_id = Some(id);
        self.email = Some(email.to_owned());
        self
    }

    /// Who did it, when that is not the account itself (an admin).
    pub fn actor(mut self, id: i64) -> Self {
        self.actor_id = Some(id);
        self
    }

    /// Why, or which: a short phrase for people, never a secret.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Where the request came from.
    pub fn client(mut self, client: &ClientInfo) -> Self {
        self.client_ip = Some(client.ip.clone());
        self.user_agent = Some(client.user_agent.clone());
        self
    }

    /// When it happened, if not now (a queued request handled later).
    pub fn at(mut self, at: NaiveDateTime) -> Self {
        self.at = Some(at);
        self
    }
}

impl Event {
    /// The row this event is stored as.
    fn row(&self) -> events::NewEvent<'_> {
        events::NewEvent {
            kind: self.kind.as_str(),
            user_id: self.user_id,
            actor_id: self.actor_id,
            email: self.email.as_deref(),
            detail: self.detail.as_deref(),
            client_ip: self.client_ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            created_at: self.at.unwrap_or_else(db::now),
        }
    }
}

/// Writes an event on `conn` (inside the caller's transaction, when there is one).
pub fn record(conn: &mut db::AnyConnection, event: &Event) -> Result<(), db::DbError> {
    events::insert(conn, &event.row())
}

/// Writes several events at once, in order (the worker's batches).
pub fn record_all(conn: &mut db::AnyConnection, events: &[Event]) -> Result<(), db::DbError> {
    let rows: Vec<events::NewEvent<'_>> = events.iter().map(Event::row).collect();
    events::insert_all(conn, &rows)
}

impl Services {
    /// Records an event on its own.
    pub async fn record(&self, event: Event) -> Result<(), ServiceError> {
        Ok(db::run(&self.pool, move |c| record(c, &event)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn every_kind_round_trips_through_its_stored_name() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("nonsense"), None);
    }
}
