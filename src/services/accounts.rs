//! Sign-up, sign-in, password change and the sessions of an account.

use crate::{
    db::{self, outbox, reset_tokens, sessions, users, users::UserRow},
    domain::{EmailAddress, NewPassword, PasswordProblem, SubmittedPassword},
    mail::message::{RequestOrigin, password_changed_email},
};

use super::{ClientInfo, ServiceError, Services};

/// An account as handlers and the CLI see it: never the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub email: String,
    pub is_admin: bool,
}

impl From<UserRow> for Account {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            is_admin: row.is_admin,
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
}

impl Services {
    /// Creates an account (optionally an admin) after the strength check.
    pub async fn sign_up(
        &self,
        email: EmailAddress,
        password: NewPassword,
        admin: bool,
    ) -> Result<Result<Account, SignUpProblem>, ServiceError> {
        let hash = match self
            .hasher
            .check_and_hash(password, email.as_str().to_owned())
            .await?
        {
            Ok(hash) => hash,
            Err(problem) => return Ok(Err(SignUpProblem::Password(problem))),
        };
        let result = db::run(&self.pool, move |c| {
            users::insert(c, email.as_str(), &hash, admin)
        })
        .await;
        match result {
            Ok(user) => Ok(Ok(user.into())),
            Err(e) if e.is_unique_violation() => Ok(Err(SignUpProblem::EmailTaken)),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks credentials. Always runs exactly one argon2 verification, whether the
    /// account exists, is disabled, or the address is malformed, so timing tells nothing.
    pub async fn sign_in(
        &self,
        email: Option<EmailAddress>,
        password: Option<SubmittedPassword>,
    ) -> Result<Option<Account>, ServiceError> {
        let user = match &email {
            Some(email) => {
                let email = email.as_str().to_owned();
                db::run(&self.pool, move |c| users::find_by_email(c, &email)).await?
            }
            None => None,
        };
        let password = password.unwrap_or_else(SubmittedPassword::absent);
        let verification = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
            .await?;
        let Some(user) = user.filter(|u| verification.matches && !u.disabled) else {
            return Ok(None);
        };
        let (id, old) = (user.id, user.password_hash.clone());
        let rehashed = verification.rehashed;
        db::run(&self.pool, move |c| {
            if let Some(new) = rehashed {
                users::rehash(c, id, &old, &new)?;
            }
            users::touch_login(c, id)
        })
        .await?;
        Ok(Some(user.into()))
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
        let Some(current) = current else {
            return Ok(Err(ChangeProblem::WrongCurrentPassword));
        };
        // Checked against the hash as it is now, not as it was when the page loaded.
        let id = account.id;
        let Some(user) = db::run(&self.pool, move |c| users::find(c, id)).await? else {
            return Ok(Err(ChangeProblem::WrongCurrentPassword));
        };
        let verified = self
            .hasher
            .verify(current, Some(user.password_hash.clone()))
            .await?;
        if !verified.matches {
            return Ok(Err(ChangeProblem::WrongCurrentPassword));
        }
        let hash = match self.hasher.check_and_hash(new, user.email.clone()).await? {
            Ok(hash) => hash,
            Err(problem) => return Ok(Err(ChangeProblem::Password(problem))),
        };
        let sealed = self.password_changed_mail(client)?;
        let (id, email) = (user.id, user.email.clone());
        db::run(&self.pool, move |c| {
            db::write_transaction(c, |c| {
                users::set_password(c, id, &hash)?;
                reset_tokens::revoke_for_user(c, id)?;
                sessions::delete_for_user_except(c, id, keep_session.as_deref())?;
                outbox::insert(c, "password_changed", &email, &sealed, None)
            })
        })
        .await?;
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
        Ok(rows
            .into_iter()
            .map(|s| SessionInfo {
                public_id: s.public_id,
                client_ip: s.client_ip,
                user_agent: s.user_agent,
                created_at: s.created_at,
            })
            .collect())
    }

    /// Ends every session of a user but the one named (or all, with `None`).
    pub async fn end_sessions(
        &self,
        user_id: i64,
        keep: Option<String>,
    ) -> Result<usize, ServiceError> {
        Ok(db::run(&self.pool, move |c| {
            sessions::delete_for_user_except(c, user_id, keep.as_deref())
        })
        .await?)
    }

    /// Grants the admin role (CLI); returns whether the account exists.
    pub async fn promote(&self, email: EmailAddress) -> Result<bool, ServiceError> {
        Ok(db::run(&self.pool, move |c| users::promote(c, email.as_str())).await?)
    }
}
