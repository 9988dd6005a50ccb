//! Who may use a page, as types. A handler that takes [`SignedIn`] or [`Admin`] (pages) or
//! [`SignedInForm`] / [`AdminForm`] (form POSTs) cannot run for anyone else, so no handler
//! has a gate of its own to remember, and a new POST cannot forget its CSRF check: the form
//! types check the token first, then the role, in that order every time (a signed-out or
//! non-admin visitor with a forged form learns only that the form expired).
//!
//! Whoever may not: signed out → 303 to the sign-in form, which comes back afterwards (to
//! this page for a GET, to the page the form was on for a POST); signed in without the
//! admin role → 403.

use actix_session::{Session, SessionExt};
use actix_web::{Error, FromRequest, HttpRequest, dev::Payload, web::Data};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::{error::PageError, services::accounts::Account};

use super::{
    AppState,
    csrf::{Csrf, CsrfForm},
    session::current_user,
};

/// The signed-in account of a page.
pub struct SignedIn {
    pub user: Account,
    pub session: Session,
}

/// The signed-in admin of an admin page.
pub struct Admin {
    pub admin: Account,
}

/// A form POST from a signed-in account: its CSRF token checked, then the account.
pub struct SignedInForm<T> {
    pub user: Account,
    pub session: Session,
    pub csrf: Csrf,
    pub form: T,
}

/// A form POST from an admin: its CSRF token checked, then the role.
pub struct AdminForm<T> {
    pub admin: Account,
    pub form: T,
}

/// Who must be signed in, and whether as an admin.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Admin,
}

/// The account of the request's session if it has `role`, else the answer for anyone
/// else, coming back to `next` after signing in.
async fn check(
    state: Option<Data<AppState>>,
    session: &Session,
    role: Role,
    next: String,
) -> Result<Account, Error> {
    let state = state.ok_or_else(|| PageError::internal("gate", "no application state"))?;
    match current_user(&state, session).await? {
        None => Err(PageError::SignInRequired { next }.into()),
        Some(user) if role == Role::Admin && !user.is_admin => Err(PageError::AdminsOnly.into()),
        Some(user) => Ok(user),
    }
}

/// The path and query of a GET request, to come back to after signing in. A very long
/// one (search terms) would be refused as `next`: the path alone then.
fn this_page(req: &HttpRequest) -> String {
    let page = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| req.path().to_owned());
    if page.len() <= 500 {
        page
    } else {
        req.path().to_owned()
    }
}

/// The page a form POST was sent from, to come back to after signing in (a POST cannot
/// be repeated by a redirect). Every form's action is a path under its page's.
fn page_of_action(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["admin", "users", id, ..] if id.parse::<i64>().is_ok() => format!("/admin/users/{id}"),
        ["admin", "users", ..] => "/admin/users".to_owned(),
        ["admin", "outbox", ..] => "/admin/outbox?status=failed".to_owned(),
        ["admin", ..] => "/admin".to_owned(),
        _ => "/account".to_owned(),
    }
}

/// The account behind the request if it has `role`: the session is looked up only once
/// `before` (the CSRF-checked form, for a POST) has been read, so the refusals always
/// come in the same order.
fn gated<B: 'static>(
    req: &HttpRequest,
    role: Role,
    next: String,
    before: LocalBoxFuture<'static, Result<B, Error>>,
) -> LocalBoxFuture<'static, Result<(Account, Session, B), Error>> {
    let (state, session) = (req.app_data::<Data<AppState>>().cloned(), req.get_session());
    Box::pin(async move {
        let before = before.await?;
        let user = check(state, &session, role, next).await?;
        Ok((user, session, before))
    })
}

/// Nothing to read first (a page).
fn nothing() -> LocalBoxFuture<'static, Result<(), Error>> {
    Box::pin(std::future::ready(Ok(())))
}

impl FromRequest for SignedIn {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let gate = gated(req, Role::User, this_page(req), nothing());
        Box::pin(async move {
            let (user, session, ()) = gate.await?;
            Ok(SignedIn { user, session })
        })
    }
}

impl FromRequest for Admin {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let gate = gated(req, Role::Admin, this_page(req), nothing());
        Box::pin(async move {
            let (admin, ..) = gate.await?;
            Ok(Admin { admin })
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for SignedInForm<T> {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let form = CsrfForm::<T>::from_request(req, payload);
        let gate = gated(req, Role::User, page_of_action(req.path()), form);
        Box::pin(async move {
            let (user, session, CsrfForm(csrf, form)) = gate.await?;
            Ok(SignedInForm {
                user,
                session,
                csrf,
                form,
            })
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for AdminForm<T> {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let form = CsrfForm::<T>::from_request(req, payload);
        let gate = gated(req, Role::Admin, page_of_action(req.path()), form);
        Box::pin(async move {
            let (admin, _, CsrfForm(_, form)) = gate.await?;
            Ok(AdminForm { admin, form })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::page_of_action;

    #[test]
    fn a_form_comes_back_to_the_page_it_was_on() {
        assert_eq!(page_of_action("/account/password"), "/account");
        assert_eq!(page_of_action("/account/sessions/end-others"), "/account");
        assert_eq!(page_of_action("/admin/users/7/disable"), "/admin/users/7");
        assert_eq!(page_of_action("/admin/users/x/disable"), "/admin/users");
        assert_eq!(
            page_of_action("/admin/outbox/3/retry"),
            "/admin/outbox?status=failed"
        );
    }
}
