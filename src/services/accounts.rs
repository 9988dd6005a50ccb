//! Sign-up, sign-in, password change and the sessions of an account.

use crate::{
    db::{
        self, outbox, reset_tokens, sessions,
        users::{self, PasswordSet, UserRow},
    },
    domain::{EmailAddress, NewPassword, PasswordProblem, SubmittedPassword},
    mail::message::{RequestOrigin, password_changed_email},
};

use super::{
    ClientInfo, ServiceError, Services,
    audit::{self, Event, EventKind},
};

/// An account as handlers and the CLI see it: never the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub email: String,
    pub is_admin: bool,
    /// The credential generation this account was read at (see `users::PasswordSet`).
    pub credential_generation: i64,
}

impl From<UserRow> for Account {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            is_admin: row.is_admin,
            credential_generation: row.credential_generation,
        }
    }
}

/// A signed-in session as its owner sees it (never its key).
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub public_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: chrono::NaiveDateTime,
}

impl From<sessions::SessionRow> for SessionInfo {
    fn from(s: sessions::SessionRow) -> Self {
        Self {
            public_id: s.public_id,
            client_ip: s.client_ip,
            user_agent: s.user_agent,
            created_at: s.created_at,
        }
    }
}

/// Why a sign-up was refused.
#[derive(Debug)]
pub enum SignUpProblem {
    EmailTaken,
    Password(PasswordProblem),
}

/// Why a password change was refused.
#[derive(Debug)]
pub enum ChangeProblem {
    WrongCurrentPassword,
    Password(PasswordProblem),
    /// A reset, another change or a disable won while this one was checked: nothing was
    /// written, and this session is no longer good.
    CredentialsChanged,
}

impl Services {
    /// Creates an account (optionally an admin) after the strength check, and records it
    /// (`client`: none from the CLI). A taken address is said before the password is
    /// judged: a strength check and a hash for an account that cannot be made would only
    /// spend the hashing pool. (The form says it either way, so this tells nothing new.)
    pub async fn sign_up(
        &self,
        email: EmailAddress,
        password: NewPassword,
        admin: bool,
        client: Option<&ClientInfo>,
    ) -> Result<Result<Account, SignUpProblem>, ServiceError> {
        let lookup = email.as_str().to_owned();
        if db::run(&self.pool, move |c| users::find_by_email(c, &lookup))
            .await?
            .is_some()
        {
            return Ok(Err(SignUpProblem::EmailTaken));
        }
        let hash = match self
            .hasher
            .check_and_hash(password, email.as_str().to_owned(), client)
            .await?
        {
            Ok(hash) => hash,
            Err(problem) => return Ok(Err(SignUpProblem::Password(problem))),
        };
        let mut created = Event::new(EventKind::AccountCreated);
        if let Some(client) = client {
            created = created.client(client);
        }
        let result = db::run(&self.pool, move |c| {
            db::write_transaction(c, |c| {
                let user = users::insert(c, email.as_str(), &hash, admin)?;
                audit::record(c, &created.user(user.id, &user.email))?;
                Ok(user)
            })
        })
        .await;
        match result {
            Ok(user) => Ok(Ok(user.into())),
            Err(e) if e.is_unique_violation() => Ok(Err(SignUpProblem::EmailTaken)),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks credentials. Always runs exactly one argon2 verification, whether the
    /// account exists, is disabled, or the address is malformed, and writes one audit
    /// event either way, so timing tells nothing.
    pub async fn sign_in(
        &self,
        email: Option<EmailAddress>,
        password: Option<SubmittedPassword>,
        client: &ClientInfo,
    ) -> Result<Option<Account>, ServiceError> {
        let user = match &email {
            Some(email) => {
                let email = email.as_str().to_owned();
                db::run(&self.pool, move |c| users::find_by_email(c, &email)).await?
            }
            None => None,
        };
        let password = password.unwrap_or_else(SubmittedPassword::absent);
        // A disabled account is checked against the dummy hash, like a missing one: its
        // real hash would tell a right password (rehashed, so slower) from a wrong one.
        let stored = user
            .as_ref()
            .filter(|u| !u.disabled)
            .map(|u| u.password_hash.clone());
        let verification = self.hasher.verify(password, stored, Some(client)).await?;
        let failed = Event::new(EventKind::SignInFailed).client(client);
        let (event, signed_in) = match user {
            None => (failed.detail("no account has this address"), None),
            Some(u) if u.disabled => (failed.user(u.id, &u.email).detail("account disabled"), None),
            Some(u) if !verification.matches => {
                (failed.user(u.id, &u.email).detail("wrong password"), None)
            }
            Some(u) => (
                Event::new(EventKind::SignedIn)
                    .user(u.id, &u.email)
                    .client(client),
                Some(u),
            ),
        };
        let rehashed = verification.rehashed;
        let update = signed_in.as_ref().map(|u| (u.id, u.password_hash.clone()));
        db::run(&self.pool, move |c| {
            if let Some((id, old)) = update {
                if let Some(new) = rehashed {
                    users::rehash(c, id, &old, &new)?;
                }
                users::touch_login(c, id)?;
            }
            audit::record(c, &event)
        })
        .await?;
        Ok(signed_in.map(Account::from))
    }

    /// Records that a user signed out.
    pub async fn signed_out(
        &self,
        account: &Account,
        client: &ClientInfo,
    ) -> Result<(), ServiceError> {
        self.record(
            Event::new(EventKind::SignedOut)
                .user(account.id, &account.email)
                .client(client),
        )
        .await
    }

    /// The account behind a session, if it still exists and may sign in.
    pub async fn active_user(&self, id: i64) -> Result<Option<Account>, ServiceError> {
        let user = db::run(&self.pool, move |c| users::find(c, id)).await?;
        Ok(user.filter(|u| !u.disabled).map(Account::from))
    }

    /// Changes the password of a signed-in user, after checking the current one. Ends every
    /// other session, kills outstanding reset links and queues the "password changed" email,
    /// all in one transaction.
    pub async fn change_password(
        &self,
        account: &Account,
        current: Option<SubmittedPassword>,
        new: NewPassword,
        keep_session: Option<String>,
        client: &ClientInfo,
    ) -> Result<Result<(), ChangeProblem>, ServiceError> {
        // Checked against the hash as it is now, not as it was when the page loaded.
        let id = account.id;
        let Some(user) = db::run(&self.pool, move |c| users::find(c, id)).await? else {
            return Ok(Err(ChangeProblem::WrongCurrentPassword));
        };
        let refused = Event::new(EventKind::PasswordChangeRefused)
            .user(user.id, &user.email)
            .client(client);
        let verified = self
            .hasher
            .verify(
                current.unwrap_or_else(SubmittedPassword::absent),
                Some(user.password_hash.clone()),
                Some(client),
            )
            .await?;
        if !verified.matches {
            self.record(refused.clone().detail("wrong current password"))
                .await?;
            return Ok(Err(ChangeProblem::WrongCurrentPassword));
        }
        let hash = match self
            .hasher
            .check_and_hash(new, user.email.clone(), Some(client))
            .await?
        {
            Ok(hash) => hash,
            Err(problem) => return Ok(Err(ChangeProblem::Password(problem))),
        };
        let sealed = self.password_changed_mail(client)?;
        let (id, email, generation) = (user.id, user.email.clone(), user.credential_generation);
        let changed = Event::new(EventKind::PasswordChanged)
            .user(id, &email)
            .client(client);
        let written = db::run(&self.pool, move |c| {
            db::write_transaction(c, |c| {
                // The account first, as a reset does, then the write, only if nothing
                // changed the credentials since the current password was checked.
                users::lock(c, id)?;
                if !users::set_password(c, id, &hash, PasswordSet::Change { generation })? {
                    return Ok(false);
                }
                reset_tokens::revoke_for_user(c, id)?;
                outbox::drop_reset_mail(c, id)?;
                sessions::delete_for_user_except(c, id, keep_session.as_deref())?;
                if let Some(keep) = &keep_session {
                    sessions::set_generation(c, id, keep, generation + 1)?;
                }
                outbox::insert(c, id, "password_changed", &email, &sealed, None)?;
                audit::record(c, &changed)?;
                Ok(true)
            })
        })
        .await?;
        if !written {
            let why = "a reset, another change or a disable came first";
            self.record(refused.detail(why)).await?;
            return Ok(Err(ChangeProblem::CredentialsChanged));
        }
        self.mail_wake.notify_one();
        Ok(Ok(()))
    }

    /// The sealed "your password was changed" message.
    pub(crate) fn password_changed_mail(
        &self,
        client: &ClientInfo,
    ) -> Result<Vec<u8>, ServiceError> {
        let origin = RequestOrigin::new(&client.ip, &client.user_agent);
        let message = password_changed_email(db::now(), &origin, &self.url("forgot"))?;
        Ok(message.seal(&self.keys))
    }

    /// A user's live signed-in sessions.
    pub async fn sessions_of(&self, user_id: i64) -> Result<Vec<SessionInfo>, ServiceError> {
        let rows = db::run(&self.pool, move |c| sessions::for_user(c, user_id)).await?;
        Ok(rows.into_iter().map(SessionInfo::from).collect())
    }

    /// Ends every session of a user but the one named (or all, with `None`), and records
    /// it.
    pub async fn end_sessions(
        &self,
        account: &Account,
        keep: Option<String>,
        client: &ClientInfo,
    ) -> Result<usize, ServiceError> {
        let ended = Event::new(EventKind::SessionsEnded)
            .user(account.id, &account.email)
            .client(client);
        let user_id = account.id;
        Ok(db::run(&self.pool, move |c| {
            db::write_transaction(c, |c| {
                let n = sessions::delete_for_user_except(c, user_id, keep.as_deref())?;
                let which = if keep.is_some() { "other " } else { "" };
                audit::record(c, &ended.detail(format!("{n} {which}session(s) ended")))?;
                Ok(n)
            })
        })
        .await?)
    }

    /// Grants the admin role (CLI); returns whether the account exists.
    pub async fn promote(&self, email: EmailAddress) -> Result<bool, ServiceError> {
        Ok(db::run(&self.pool, move |c| users::promote(c, email.as_str())).await?)
    }
}
