//! The admin area's use cases (SPEC §10): what the dashboard counts, the users, events and
//! outbox lists, and the actions an admin takes on an account or a failed email. Every
//! action is written in one transaction with its audit event, which names the admin as
//! its actor. Nothing here returns a password hash, a token or a mail body.

use std::{collections::HashMap, time::Duration};

use chrono::{Datelike, NaiveDate, NaiveDateTime};

use crate::db::{
    self,
    events::{EventFilter, EventKey, EventRow},
    keyset::{Keyset, Page},
    outbox::{self, OutboxSummary},
    reset_requests, reset_tokens, sessions,
    users::{self, UserSummary},
};

use super::{
    ClientInfo, ServiceError, Services,
    accounts::{Account, SessionInfo},
    audit::{self, Event, EventKind},
};

/// Rows per page on every admin list.
pub const PAGE_SIZE: usize = 50;

/// Events shown on the dashboard and on an account's page.
pub const LATEST_EVENTS: usize = 20;

/// An email fragment matching at most this many accounts filters the audit log through
/// their ids (an index lookup per account); a more common one is matched against the
/// events' addresses as the log is walked, which finds a page quickly precisely because
/// the fragment is common.
const FRAGMENT_ACCOUNTS: usize = 200;

/// Counts over the last day and the last week.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub day: i64,
    pub week: i64,
}

/// What the dashboard shows.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub users: i64,
    pub requested: Window,
    pub completed: Window,
    pub refused: Window,
    pub mail_queued: i64,
    pub mail_sent: i64,
    pub mail_failed: i64,
    pub latest: Vec<EventEntry>,
}

/// An audit event with the address of the admin who caused it, if one did.
#[derive(Debug, Clone)]
pub struct EventEntry {
    pub event: EventRow,
    pub actor_email: Option<String>,
}

/// An account's page.
#[derive(Debug, Clone)]
pub struct UserDetail {
    pub user: UserSummary,
    pub sessions: Vec<SessionInfo>,
    pub events: Vec<EventEntry>,
}

/// An outbox row, and whether an admin may send it again.
#[derive(Debug, Clone)]
pub struct MailEntry {
    pub mail: OutboxSummary,
    pub retryable: bool,
}

/// The audit log's filters, parsed.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub kind: Option<EventKind>,
    /// A fragment of the account's address.
    pub email: Option<String>,
    /// An exact client address.
    pub ip: Option<String>,
    /// First day shown (UTC), inclusive.
    pub from: Option<NaiveDate>,
    /// Last day shown (UTC), inclusive.
    pub to: Option<NaiveDate>,
    pub user: Option<i64>,
}

/// What an admin action came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOutcome {
    Done,
    /// No such account or message.
    NotFound,
    /// The action does not apply (a disabled account's reset, disabling oneself, a message
    /// that can no longer be sent); nothing changed.
    Refused,
    /// The account was already in the state asked for; nothing changed or was recorded.
    Unchanged,
}

fn start_of(day: NaiveDate) -> NaiveDateTime {
    day.and_hms_opt(0, 0, 0).unwrap_or_default()
}

/// Names the admins behind a page of events, in the same connection.
fn with_actors(
    c: &mut db::AnyConnection,
    events: Vec<EventRow>,
) -> Result<Vec<EventEntry>, db::DbError> {
    let mut ids: Vec<i64> = events.iter().filter_map(|e| e.actor_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let names: HashMap<i64, String> = users::emails_of(c, &ids)?.into_iter().collect();
    Ok(events
        .into_iter()
        .map(|event| EventEntry {
            actor_email: event.actor_id.and_then(|id| names.get(&id).cloned()),
            event,
        })
        .collect())
}

impl Services {
    /// The dashboard's counts and latest events.
    pub async fn dashboard(&self) -> Result<Dashboard, ServiceError> {
        let day = db::now_minus(Duration::from_secs(86_400));
        let week = db::now_minus(Duration::from_secs(7 * 86_400));
        Ok(db::run(&self.pool, move |c| {
            let mut window = |kind: EventKind| -> Result<Window, db::DbError> {
                Ok(Window {
                    day: db::events::count_since(c, kind.as_str(), day)?,
                    week: db::events::count_since(c, kind.as_str(), week)?,
                })
            };
            let requested = window(EventKind::ResetRequested)?;
            let completed = window(EventKind::ResetDone)?;
            let refused = window(EventKind::ResetRefused)?;
            let latest =
                db::events::page(c, &EventFilter::default(), Keyset::First, LATEST_EVENTS)?;
            Ok(Dashboard {
                users: users::count(c)?,
                requested,
                completed,
                refused,
                mail_queued: outbox::count_status(c, outbox::status::QUEUED)?,
                mail_sent: outbox::count_status(c, outbox::status::SENT)?,
                mail_failed: outbox::count_status(c, outbox::status::FAILED)?,
                latest: with_actors(c, latest.rows)?,
            })
        })
        .await?)
    }

    /// A page of accounts, newest first, optionally those whose address contains `fragment`.
    pub async fn admin_users(
        &self,
        fragment: Option<String>,
        keyset: Keyset<i64>,
    ) -> Result<Page<UserSummary, i64>, ServiceError> {
        Ok(db::run(&self.pool, move |c| {
            users::page(c, fragment.as_deref(), keyset, PAGE_SIZE)
        })
        .await?)
    }

    /// An account with its sessions and latest events, in one blocking hop.
    pub async fn admin_user(&self, id: i64) -> Result<Option<UserDetail>, ServiceError> {
        Ok(db::run(&self.pool, move |c| {
            let Some(user) = users::summary(c, id)? else {
                return Ok(None);
            };
            let filter = EventFilter {
                user_ids: Some(vec![id]),
                ..EventFilter::default()
            };
            let events = db::events::page(c, &filter, Keyset::First, LATEST_EVENTS)?;
            let sessions = sessions::for_user(c, id)?;
            Ok(Some(UserDetail {
                user,
                sessions: sessions.into_iter().map(SessionInfo::from).collect(),
                events: with_actors(c, events.rows)?,
            }))
        })
        .await?)
    }

    /// A page of the audit log, newest first.
    pub async fn admin_events(
        &self,
        query: EventQuery,
        keyset: Keyset<EventKey>,
    ) -> Result<Page<EventEntry, EventKey>, ServiceError> {
        Ok(db::run(&self.pool, move |c| {
            let mut filter = EventFilter {
                kind: query.kind.map(|k| k.as_str().to_owned()),
                user_ids: query.user.map(|id| vec![id]),
                client_ip: query.ip,
                from: query.from.map(start_of),
                // The day after 9999-12-31 would be written `+10000-…`, which SQLite's text
                // comparison puts before every real time: no upper bound then.
                until: query
                    .to
                    .and_then(|d| d.succ_opt())
                    .filter(|d| d.year() <= 9999)
                    .map(start_of),
                ..EventFilter::default()
            };
            if let Some(fragment) = query.email {
                let ids = users::ids_matching(c, &fragment, FRAGMENT_ACCOUNTS + 1)?;
                if ids.len() > FRAGMENT_ACCOUNTS {
                    filter.email_fragment = Some(fragment);
                } else {
                    let ids = match filter.user_ids {
                        Some(only) => ids.into_iter().filter(|id| only.contains(id)).collect(),
                        None => ids,
                    };
                    if ids.is_empty() {
                        return Ok(Page {
                            rows: Vec::new(),
                            older: None,
                            newer: None,
                        });
                    }
                    filter.user_ids = Some(ids);
                }
            }
            let page = db::events::page(c, &filter, keyset, PAGE_SIZE)?;
            Ok(Page {
                rows: with_actors(c, page.rows)?,
                older: page.older,
                newer: page.newer,
            })
        })
        .await?)
    }

    /// A page of the outbox, newest first, optionally of one status.
    pub async fn admin_outbox(
        &self,
        status: Option<&'static str>,
        keyset: Keyset<i64>,
    ) -> Result<Page<MailEntry, i64>, ServiceError> {
        let page = db::run(&self.pool, move |c| {
            outbox::page(c, status, keyset, PAGE_SIZE)
        })
        .await?;
        let now = db::now();
        Ok(Page {
            rows: page
                .rows
                .into_iter()
                .map(|(mail, has_body)| MailEntry {
                    retryable: outbox::retryable(&mail, has_body, now),
                    mail,
                })
                .collect(),
            older: page.older,
            newer: page.newer,
        })
    }

    /// Queues a reset email for an account through the public path (the worker applies
    /// the cooldown and daily cap, and records the request with the admin as its actor).
    /// A disabled account gets none.
    pub async fn admin_send_reset(
        &self,
        admin: &Account,
        user_id: i64,
        client: &ClientInfo,
    ) -> Result<AdminOutcome, ServiceError> {
        let (admin_id, ip, ua) = (admin.id, client.ip.clone(), client.user_agent.clone());
        let asked = Event::new(EventKind::AdminResetRequested)
            .actor(admin.id)
            .client(client);
        let outcome = db::run(&self.pool, move |c| {
            db::write_transaction(c, |c| {
                let Some(user) = users::summary(c, user_id)? else {
                    return Ok(AdminOutcome::NotFound);
                };
                if user.disabled {
                    return Ok(AdminOutcome::Refused);
                }
                let ua: String = ua.chars().take(512).collect();
                reset_requests::insert(c, &user.email, &ip, &ua, Some(admin_id))?;
                audit::record(c, &asked.user(user.id, &user.email))?;
                Ok(AdminOutcome::Done)
            })
        })
        .await?;
        if outcome == AdminOutcome::Done {
            self.requests_wake.notify_one();
        }
        Ok(outcome)
    }

    /// Ends every session of an account.
    pub async fn admin_end_sessions(
        &self,
        admin: &Account,
        user_id: i64,
        client: &ClientInfo,
    ) -> Result<AdminOutcome, ServiceError> {
        let event = Event::new(EventKind::SessionsEnded)
            .actor(admin.id)
            .client(client);
        Ok(db::run(&self.pool, move |c| {
            db::write_transaction(c, |c| {
                let Some(user) = users::summary(c, user_id)? else {
                    return Ok(AdminOutcome::NotFound);
                };
                let n = sessions::delete_for_user_except(c, user_id, None)?;
                let event = event
                    .user(user.id, &user.email)
                    .detail(format!("{n} session(s) ended by an admin"));
                audit::record(c, &event)?;
                Ok(AdminOutcome::Done)
            })
        })
        .await?)
    }

    /// Disables an account (ending its sessions and reset links with it) or enables it
    /// again. An admin cannot disable their own account, nor the last enabled admin (two
    /// admins disabling each other at the same moment would otherwise both succeed).
    pub async fn admin_set_disabled(
        &self,
        admin: &Account,
        user_id: i64,
        disabled: bool,
        client: &ClientInfo,
    ) -> Result<AdminOutcome, ServiceError> {
        if disabled && admin.id == user_id {
            return Ok(AdminOutcome::Refused);
        }
        let kind = if disabled {
            EventKind::AccountDisabled
        } else {
            EventKind::AccountEnabled
        };
        let event = Event::new(kind).actor(admin.id).client(client);
        Ok(db::run(&self.pool, move |c| {
            db::write_transaction(c, |c| {
                let Some(user) = users::summary(c, user_id)? else {
                    return Ok(AdminOutcome::NotFound);
                };
                if disabled && user.is_admin {
                    let admins = users::enabled_admins_locked(c)?;
                    if admins.iter().all(|id| *id == user_id) {
                        return Ok(AdminOutcome::Refused);
                    }
                }
                if !users::set_disabled(c, user_id, disabled)? {
                    return Ok(AdminOutcome::Unchanged);
                }
                let mut event = event.user(user.id, &user.email);
                if disabled {
                    let ended = sessions::delete_for_user_except(c, user_id, None)?;
                    let revoked = reset_tokens::revoke_for_user(c, user_id)?;
                    outbox::drop_reset_mail(c, user_id)?;
                    event = event.detail(format!(
                        "{ended} session(s) ended, {revoked} reset link(s) revoked"
                    ));
                }
                audit::record(c, &event)?;
                Ok(AdminOutcome::Done)
            })
        })
        .await?)
    }

    /// Puts a failed email back in the queue, if it can still be sent.
    pub async fn admin_retry_mail(
        &self,
        admin: &Account,
        mail_id: i64,
        client: &ClientInfo,
    ) -> Result<AdminOutcome, ServiceError> {
        let event = Event::new(EventKind::MailRetried)
            .actor(admin.id)
            .client(client);
        let outcome = db::run(&self.pool, move |c| {
            db::write_transaction(c, |c| {
                let Some(mail) = outbox::summary(c, mail_id)? else {
                    return Ok(AdminOutcome::NotFound);
                };
                if !outbox::requeue_failed(c, mail_id)? {
                    return Ok(AdminOutcome::Refused);
                }
                let mut event = event.detail(format!(
                    "{} email #{} queued again after {} attempt(s)",
                    mail.kind, mail.id, mail.attempts
                ));
                if let Some(user_id) = mail.user_id {
                    event = event.user(user_id, &mail.recipient);
                }
                audit::record(c, &event)?;
                Ok(AdminOutcome::Done)
            })
        })
        .await?;
        if outcome == AdminOutcome::Done {
            self.mail_wake.notify_one();
        }
        Ok(outcome)
    }
}
