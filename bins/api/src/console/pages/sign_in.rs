//! Signing in with an API key and out again.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use maud::html;

use super::{check_csrf, internal, see_other, Form, Page};
use crate::auth::hash_key;
use crate::console::{page, session, Section};
use crate::state::AppState;

/// `GET /sign-in`.
pub async fn sign_in_form(req: HttpRequest) -> Page {
    let token = crate::auth::generate_key().unwrap_or_default();
    let mut res = sign_in_page(StatusCode::OK, &token, None);
    let _ = res.add_cookie(&session::cookie(
        &req,
        session::SIGN_IN_COOKIE,
        token,
        std::time::Duration::from_secs(3600),
    ));
    res
}

pub(super) fn sign_in_page(status: StatusCode, token: &str, error: Option<&str>) -> Page {
    page(
        status,
        "Sign in",
        None,
        Section::None,
        html! {
            section.card.narrow {
                h1 { "Sign in" }
                p.muted { "Paste your Tollgate API key. It is checked once; the console keeps only a session." }
                @if let Some(error) = error { p.error role="alert" { (error) } }
                form method="post" action="/sign-in" {
                    input type="hidden" name="_csrf" value=(token);
                    label for="key" { "API key" }
                    input #key type="password" name="key" autocomplete="off" required placeholder="tg_…";
                    button.primary type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// `POST /sign-in`.
pub async fn sign_in(req: HttpRequest, state: web::Data<AppState>, form: web::Form<Form>) -> Page {
    let expected = req
        .cookie(session::SIGN_IN_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    if !session::tokens_match(&expected, &form.csrf) {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            &expected,
            Some("The sign-in form expired. Please try again."),
        );
    }
    let hash = hash_key(form.key.trim());
    match state.store.find_api_key(&hash).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return sign_in_page(
                StatusCode::UNAUTHORIZED,
                &expected,
                Some("That key is unknown or revoked."),
            );
        }
        Err(err) => return internal(None, err),
    }
    let Some(id) = session::start(&state, hash).await else {
        return internal(None, "no randomness for a session id");
    };
    let mut res = see_other("/");
    let _ = res.add_cookie(&session::cookie(
        &req,
        session::COOKIE,
        id,
        session::LIFETIME,
    ));
    let _ = res.add_removal_cookie(&session::removal(session::SIGN_IN_COOKIE));
    res
}

/// `POST /sign-out`.
pub async fn sign_out(req: HttpRequest, state: web::Data<AppState>, form: web::Form<Form>) -> Page {
    let user = signed_in!(req, state);
    if let Err(refused) = check_csrf(&user, &form) {
        return *refused;
    }
    if let Some(cookie) = req.cookie(session::COOKIE) {
        session::end(&state, cookie.value()).await;
    }
    let mut res = see_other("/sign-in");
    let _ = res.add_removal_cookie(&session::removal(session::COOKIE));
    res
}
