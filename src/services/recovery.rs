//! Account recovery by email: the heart of Latchkey.
//!
//! - A forgot request only queues a row (`reset_requests`), whatever the address, so the
//!   response is the same in status, body and timing for registered, unknown, disabled and
//!   throttled addresses.
//! - The worker turns a request into a token and an email in one transaction (the
//!   transactional outbox), applying the per-address cooldown and daily cap silently.
//! - Opening a link never consumes it (mail scanners prefetch links); the token is consumed
//!   by a conditional update in the same transaction that changes the password, after the
//!   new password has been validated, so a typo never burns the link.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::NaiveDateTime;

use crate::{
    db::{self, outbox, reset_requests, reset_tokens, sessions, users, users::UserRow},
    domain::{EmailAddress, NewPassword, PasswordProblem, ResetToken},
    mail::message::{RequestOrigin, reset_email},
};

use super::{
    ClientInfo, ServiceError, Services,
    audit::{self, Event, EventKind},
    limits::{LimitGroup, Verdict},
};

/// How many openings of one live link are audited; later ones are only counted.
pub const AUDITED_OPENINGS: i64 = 5;

/// The keyed hashes a token may be stored under (the current key's first, then the one
/// being rotated out): what a browser's reset cookie holds between opening the link and
/// submitting the form (the token itself leaves the address bar). Only the services make
/// one from a token, so nothing else needs the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(Vec<Vec<u8>>);

impl TokenHash {
    /// Hex of the stored hash, for the reset cookie (the link was opened, so the hash it
    /// is stored under is known).
    pub fn to_hex(&self) -> String {
        self.0
            .first()
            .map(|h| h.iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default()
    }

    /// Back from [`TokenHash::to_hex`]; `None` for anything that is not 32 bytes of hex.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
            .map(|h| Self(vec![h]))
    }
}

/// A queued request with what it needs if it turns out to deserve an email, made before
/// the worker's transaction.
struct Prepared {
    request: reset_requests::ResetRequestRow,
    token_hash: Vec<u8>,
    sealed: Vec<u8>,
}

/// What a reset attempt came to.
#[derive(Debug)]
pub enum ResetOutcome {
    /// The password was changed; every session and outstanding link of the account ended.
    Done,
    /// The link is unknown, used, expired, or was sent to an address the account no longer has.
    DeadLink,
    /// The new password was refused; the link stays usable.
    Refused(PasswordProblem),
}

/// The worker handles at most this many queued requests per transaction.
pub const REQUEST_BATCH: i64 = 100;

impl Services {
    /// Counts the request against the client's forgot limit and, unless it is over,
    /// queues it: the same statements, in one blocking hop, for every address.
    pub async fn request_reset(
        &self,
        email: &EmailAddress,
        client: &ClientInfo,
    ) -> Result<(), ServiceError> {
        let hit = self.pending_hit(LimitGroup::Forgot, client);
        let (email, ip, ua) = (
            email.as_str().to_owned(),
            client.ip.clone(),
            truncate(&client.user_agent, 512),
        );
        let verdict = db::run(&self.pool, move |c| {
            let verdict = match &hit {
                Some(hit) => hit.count(c)?,
                None => Verdict::Allowed,
            };
            if verdict == Verdict::Allowed {
                reset_requests::insert(c, &email, &ip, &ua, None)?;
            }
            Ok(verdict)
        })
        .await?;
        if verdict != Verdict::Allowed {
            return Err(self.refusal(LimitGroup::Forgot, client, verdict).await);
        }
        self.requests_wake.notify_one();
        Ok(())
    }

    /// Worker step: turns up to a batch of queued requests into tokens and queued emails.
    /// Blocking; run it through `db::run`. Returns how many queued requests it read (a
    /// full batch means there may be more).
    ///
    /// A batch is one transaction of a handful of statements whatever its size (take the
    /// rows, look up their accounts, read their recent tokens, record the events), plus two
    /// inserts per email: a flood of requests for unknown addresses costs the worker little,
    /// so real reset emails do not wait behind it.
    pub fn process_reset_requests(
        &self,
        conn: &mut db::AnyConnection,
    ) -> Result<usize, db::DbError> {
        let requests = reset_requests::next_batch(conn, REQUEST_BATCH)?;
        let handled = requests.len();
        // Tokens, their hashes and sealed emails are made for every request before the
        // transaction: doing it inside would hold SQLite's write lock longer for
        // registered addresses, which a forgot request queued behind it could time.
        let mut prepared = Vec::with_capacity(requests.len());
        for request in requests {
            let token = ResetToken::generate();
            match self.reset_mail(&token, &request) {
                Ok(sealed) => prepared.push(Prepared {
                    token_hash: self.keys.token_hash(token.expose()),
                    request,
                    sealed,
                }),
                // Left queued; it is retried with the next batch.
                Err(e) => {
                    tracing::error!(request_id = request.id, error = %e, "reset email failed")
                }
            }
        }
        if prepared.is_empty() {
            return Ok(handled);
        }
        if let Err(e) = db::write_transaction(conn, |c| self.handle_batch(c, &prepared)) {
            // One request must not hold up the others: on failure, each goes alone, and
            // one that fails alone too is dropped (and audited) rather than retried forever.
            tracing::warn!(error = %e, "reset batch failed; handling its requests one by one");
            for one in &prepared {
                if let Err(e) =
                    db::write_transaction(conn, |c| self.handle_batch(c, std::slice::from_ref(one)))
                {
                    tracing::error!(request_id = one.request.id, error = %e, "reset request dropped");
                    self.drop_request(conn, &one.request)?;
                }
            }
        }
        Ok(handled)
    }

    /// Removes a request that cannot be handled, and says so in the audit trail.
    fn drop_request(
        &self,
        conn: &mut db::AnyConnection,
        request: &reset_requests::ResetRequestRow,
    ) -> Result<(), db::DbError> {
        let client = ClientInfo {
            ip: request.client_ip.clone(),
            user_agent: request.user_agent.clone(),
        };
        let mut event = Event::new(EventKind::ResetRequested)
            .client(&client)
            .at(request.created_at)
            .detail("could not be handled; nothing sent");
        if let Some(admin) = request.actor_id {
            event = event.actor(admin);
        }
        db::write_transaction(conn, |c| {
            reset_requests::take(c, &[request.id])?;
            audit::record(c, &event)
        })?;
        Ok(())
    }

    /// The transaction of [`Services::process_reset_requests`]; returns how many emails
    /// it queued.
    fn handle_batch(
        &self,
        c: &mut db::AnyConnection,
        prepared: &[Prepared],
    ) -> Result<usize, db::DbError> {
        let settings = &self.settings;
        // Taking the rows is the claim: rows another instance took (or is taking) are
        // skipped, and only the accounts of the rows taken are looked up and locked.
        let ids: Vec<i64> = prepared.iter().map(|p| p.request.id).collect();
        let taken: HashSet<i64> = reset_requests::take(c, &ids)?.into_iter().collect();
        let mine: Vec<&Prepared> = prepared
            .iter()
            .filter(|p| taken.contains(&p.request.id))
            .collect();
        if mine.is_empty() {
            return Ok(0);
        }
        let emails: Vec<&str> = mine.iter().map(|p| p.request.email.as_str()).collect();
        let users: HashMap<String, UserRow> = users::find_by_emails_locked(c, &emails)?
            .into_iter()
            .map(|u| (u.email.clone(), u))
            .collect();
        let user_ids: Vec<i64> = users.values().map(|u| u.id).collect();
        // Per account: tokens issued in the last day and the newest issue time. Updated as
        // this batch issues tokens, so repeated requests in one batch are throttled too.
        let mut issued: HashMap<i64, (u32, NaiveDateTime)> = HashMap::new();
        for (user_id, at) in
            reset_tokens::issued_since(c, &user_ids, db::now_minus(Duration::from_secs(86_400)))?
        {
            let entry = issued.entry(user_id).or_insert((0, at));
            entry.0 += 1;
            entry.1 = entry.1.max(at);
        }
        let mut queued = 0;
        // Recorded together at the end of the batch: one statement instead of two or three
        // per request.
        let mut trail: Vec<Event> = Vec::with_capacity(mine.len() * 2);
        for Prepared {
            request,
            token_hash,
            sealed,
        } in mine
        {
            let client = ClientInfo {
                ip: request.client_ip.clone(),
                user_agent: request.user_agent.clone(),
            };
            // The request's own time and origin: the worker may handle it a moment later.
            let mut requested = Event::new(EventKind::ResetRequested)
                .client(&client)
                .at(request.created_at);
            if let Some(admin) = request.actor_id {
                requested = requested.actor(admin);
            }
            let Some(user) = users.get(&request.email) else {
                trail.push(requested.detail("no account has this address; nothing sent"));
                continue;
            };
            let requested = requested.user(user.id, &user.email);
            if user.disabled {
                trail.push(requested.detail("account disabled; nothing sent"));
                continue;
            }
            let (today, newest) = issued.get(&user.id).copied().unwrap_or_default();
            let verdict = mail_verdict(
                today,
                newest,
                db::now(),
                settings.reset_cooldown,
                settings.reset_daily_cap,
            );
            if verdict != MailVerdict::Send {
                let limit = if verdict == MailVerdict::CoolingDown {
                    "a reset email was sent to this address moments ago"
                } else {
                    "this address had its daily number of reset emails"
                };
                trail.push(requested.clone().detail("throttled; nothing sent"));
                let throttled = Event::new(EventKind::Throttled)
                    .user(user.id, &user.email)
                    .client(&client)
                    .at(request.created_at)
                    .detail(limit);
                trail.push(throttled);
                continue;
            }
            let expires_at = db::now_plus(settings.reset_token_ttl);
            reset_tokens::insert(c, user.id, token_hash, &user.email, expires_at)?;
            outbox::insert(c, user.id, "reset", &user.email, sealed, Some(expires_at))?;
            trail.push(requested.detail("reset email queued"));
            issued.insert(user.id, (today + 1, db::now()));
            queued += 1;
        }
        audit::record_all(c, &trail)?;
        tracing::info!(handled = taken.len(), queued, "reset requests handled");
        Ok(queued)
    }

    fn reset_mail(
        &self,
        token: &ResetToken,
        request: &reset_requests::ResetRequestRow,
    ) -> Result<Vec<u8>, ServiceError> {
        let mut link = self
            .settings
            .base_url
            .join("reset")
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        link.query_pairs_mut().append_pair("token", token.expose());
        let origin = match request.actor_id {
            Some(_) => RequestOrigin::admin(),
            None => RequestOrigin::new(&request.client_ip, &request.user_agent),
        };
        let message = reset_email(
            link.as_str(),
            self.settings.reset_token_ttl,
            &origin,
            &self.url("forgot"),
        )?;
        Ok(message.seal(&self.keys))
    }

    /// The hashes a token from a link or the API may be stored under.
    pub fn token_hash(&self, token: &ResetToken) -> TokenHash {
        TokenHash(self.keys.token_hashes(token.expose()))
    }

    /// Checks a token from a link; the hash it is stored under if it is live. Never
    /// consumes it. Records the opening, and why the link was dead if it was, but only so
    /// many: the first [`AUDITED_OPENINGS`] openings of a live link, within the client's
    /// budget for live links (dead links have their own), so nobody can fill the trail by
    /// opening links in a loop. Openings are never refused: a cross-site page could then
    /// spend a victim's budget with hidden images.
    pub async fn open_reset_link(
        &self,
        token: &ResetToken,
        client: &ClientInfo,
    ) -> Result<Option<TokenHash>, ServiceError> {
        let hashes = self.token_hash(token).0;
        let opened = Event::new(EventKind::ResetLinkOpened).client(client);
        let budget = self.pending_hit(LimitGroup::LiveLinks, client);
        // A live link's opening is counted and recorded in the same blocking hop as the
        // lookup.
        let state = db::run(&self.pool, move |c| {
            let state = link_state(c, &hashes)?;
            if let LinkState::Live { token, user } = &state {
                let openings = reset_tokens::count_opening(c, token.id)?;
                let audited = openings <= AUDITED_OPENINGS
                    && match &budget {
                        None => true,
                        Some(hit) => hit.count(c)? == Verdict::Allowed,
                    };
                if audited {
                    audit::record(c, &opened.user(user.id, &user.email))?;
                }
            }
            Ok(state)
        })
        .await?;
        match state {
            LinkState::Live { token, .. } => Ok(Some(TokenHash(vec![token.token_hash]))),
            LinkState::Dead { user, why } => {
                self.dead_link_opened(user.as_ref(), why, client).await?;
                Ok(None)
            }
        }
    }

    /// Records the opening of a dead link (one whose token is not even well formed, too),
    /// up to the reset limit per client.
    pub async fn dead_link_opened(
        &self,
        user: Option<&UserRow>,
        why: &'static str,
        client: &ClientInfo,
    ) -> Result<(), ServiceError> {
        if self.within_budget(LimitGroup::DeadLinks, client).await? {
            let opened = Event::new(EventKind::ResetLinkOpened).client(client);
            self.record(with_user(opened, user).detail(why)).await?;
        }
        Ok(())
    }

    /// Records a reset refused before any link was looked up (a malformed token, or a
    /// form sent from a browser that opened no link). The caller was already counted
    /// against the reset limit.
    pub async fn reset_refused(
        &self,
        why: &'static str,
        client: &ClientInfo,
    ) -> Result<(), ServiceError> {
        self.record(
            Event::new(EventKind::ResetRefused)
                .client(client)
                .detail(why),
        )
        .await
    }

    /// The address of the account a live token resets (for the form's hidden username).
    pub async fn reset_target(&self, hash: &TokenHash) -> Result<Option<String>, ServiceError> {
        let hashes = hash.0.clone();
        Ok(
            match db::run(&self.pool, move |c| link_state(c, &hashes)).await? {
                LinkState::Live { user, .. } => Some(user.email),
                LinkState::Dead { .. } => None,
            },
        )
    }

    /// Sets a new password with a token: checks the link is live, validates the password
    /// (policy and strength) while the link stays alive, hashes it, then consumes the token
    /// and changes the password in one transaction. Of concurrent attempts exactly one wins.
    /// Every outcome is recorded in the audit trail.
    pub async fn reset_password(
        &self,
        hash: &TokenHash,
        password: Result<NewPassword, PasswordProblem>,
        expected_email: Option<&EmailAddress>,
        client: &ClientInfo,
    ) -> Result<ResetOutcome, ServiceError> {
        let hashes = hash.0.clone();
        let refused = Event::new(EventKind::ResetRefused).client(client);
        let (token, user) = match db::run(&self.pool, move |c| link_state(c, &hashes)).await? {
            LinkState::Live { token, user } => (token, user),
            LinkState::Dead { user, why } => {
                self.record(with_user(refused, user.as_ref()).detail(why))
                    .await?;
                return Ok(ResetOutcome::DeadLink);
            }
        };
        let refused = refused.user(user.id, &user.email);
        if expected_email.is_some_and(|e| e.as_str() != user.email) {
            self.record(refused.detail("the email given is not the link's address"))
                .await?;
            return Ok(ResetOutcome::DeadLink);
        }
        let checked = match password {
            Ok(password) => {
                self.hasher
                    .check_and_hash(password, user.email.clone(), Some(client))
                    .await?
            }
            Err(problem) => Err(problem),
        };
        let new_hash = match checked {
            Ok(h) => h,
            Err(problem) => {
                self.record(refused.detail(problem.label())).await?;
                return Ok(ResetOutcome::Refused(problem));
            }
        };
        let sealed = self.password_changed_mail(client)?;
        let done = Event::new(EventKind::ResetDone)
            .user(user.id, &user.email)
            .client(client);
        let won = db::run(&self.pool, move |c| {
            let won = db::write_transaction(c, |c| {
                // The account first, as a password change or a disable takes it before the
                // account's tokens: taking the token first could deadlock with them.
                users::lock(c, user.id)?;
                // Then the consume: it is the write that decides the race.
                if !reset_tokens::consume(c, &token.token_hash)? {
                    return Ok(false);
                }
                users::set_password(c, user.id, &new_hash, users::PasswordSet::Reset)?;
                reset_tokens::revoke_for_user(c, user.id)?;
                outbox::drop_reset_mail(c, user.id)?;
                sessions::delete_for_user_except(c, user.id, None)?;
                outbox::insert(c, user.id, "password_changed", &user.email, &sealed, None)?;
                audit::record(c, &done)?;
                Ok(true)
            })?;
            if !won {
                audit::record(c, &refused.detail("link used by another request meanwhile"))?;
            }
            Ok(won)
        })
        .await?;
        if !won {
            return Ok(ResetOutcome::DeadLink);
        }
        self.mail_wake.notify_one();
        tracing::info!("password reset completed");
        Ok(ResetOutcome::Done)
    }
}

/// Where a link stands.
enum LinkState {
    /// Unused, unexpired, its account enabled and still at the address it was sent to.
    Live {
        token: reset_tokens::ResetTokenRow,
        user: UserRow,
    },
    /// Anything else, with the account when known and why, for the audit trail.
    Dead {
        user: Option<UserRow>,
        why: &'static str,
    },
}

fn link_state(conn: &mut db::AnyConnection, hashes: &[Vec<u8>]) -> Result<LinkState, db::DbError> {
    let Some((token, user)) = reset_tokens::find_with_user(conn, hashes)? else {
        return Ok(LinkState::Dead {
            user: None,
            why: "unknown link",
        });
    };
    let why = if token.used_at.is_some() {
        "link already used, or ended by a password change"
    } else if token.expires_at <= db::now() {
        "link expired"
    } else if user.disabled {
        "account disabled"
    } else if user.email != token.sent_to {
        "the account's address changed since the link was sent"
    } else {
        return Ok(LinkState::Live { token, user });
    };
    Ok(LinkState::Dead {
        user: Some(user),
        why,
    })
}

fn with_user(event: Event, user: Option<&UserRow>) -> Event {
    match user {
        Some(u) => event.user(u.id, &u.email),
        None => event,
    }
}

/// Whether a reset email may go to an account now (SPEC §8): not within the cooldown of
/// the last one, and not past the daily cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailVerdict {
    Send,
    /// One was sent less than the cooldown ago (checked first: it is what a person who
    /// asks twice in a row runs into).
    CoolingDown,
    /// The account had its cap of reset emails in the last 24 hours.
    DailyCapReached,
}

/// The cooldown and daily-cap rule, by the account's recent history: `issued_today`
/// reset tokens in the last 24 hours, the newest issued at `newest` (meaningless when
/// none was).
pub fn mail_verdict(
    issued_today: u32,
    newest: NaiveDateTime,
    now: NaiveDateTime,
    cooldown: Duration,
    daily_cap: u32,
) -> MailVerdict {
    let since = chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::MAX);
    let cooling = issued_today > 0 && now.signed_duration_since(newest) < since;
    if cooling {
        MailVerdict::CoolingDown
    } else if issued_today >= daily_cap {
        MailVerdict::DailyCapReached
    } else {
        MailVerdict::Send
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::NaiveDateTime;

    use super::{MailVerdict, TokenHash, mail_verdict};

    fn at(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0)
            .unwrap()
            .naive_utc()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_first_reset_email_of_the_day_goes() {
        assert_eq!(mail_verdict(0, at(0), at(0), MINUTE, 5), MailVerdict::Send);
    }

    #[test]
    fn a_second_within_the_cooldown_waits_and_after_it_goes() {
        assert_eq!(
            mail_verdict(1, at(0), at(59), MINUTE, 5),
            MailVerdict::CoolingDown
        );
        assert_eq!(mail_verdict(1, at(0), at(60), MINUTE, 5), MailVerdict::Send);
    }

    #[test]
    fn the_daily_cap_holds_once_the_cooldown_is_over() {
        assert_eq!(
            mail_verdict(5, at(0), at(3600), MINUTE, 5),
            MailVerdict::DailyCapReached
        );
        assert_eq!(
            mail_verdict(5, at(0), at(10), MINUTE, 5),
            MailVerdict::CoolingDown,
            "the cooldown is said first"
        );
        assert_eq!(
            mail_verdict(4, at(0), at(3600), MINUTE, 5),
            MailVerdict::Send
        );
    }

    #[test]
    fn no_cooldown_means_only_the_cap_counts() {
        assert_eq!(
            mail_verdict(3, at(0), at(0), Duration::ZERO, 5),
            MailVerdict::Send
        );
        assert_eq!(
            mail_verdict(5, at(0), at(0), Duration::ZERO, 5),
            MailVerdict::DailyCapReached
        );
    }

    #[test]
    fn token_hashes_round_trip_through_hex_and_junk_is_refused() {
        let h = TokenHash(vec![(0u8..32).collect()]);
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(TokenHash::from_hex("zz"), None);
        assert_eq!(TokenHash::from_hex(&"0".repeat(62)), None);
    }
}
