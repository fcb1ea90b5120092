//! Console sessions: an opaque id in an `HttpOnly`, `SameSite=Strict` cookie, the
//! session itself in the database (only the id's hash).
//!
//! A session remembers which API key signed in (its hash, never the key) and a CSRF
//! token. Every request looks the key up again, so revoking the key ends its sessions at
//! once, and role changes apply immediately.

use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::HttpRequest;
use subtle::ConstantTimeEq;
use tollgate_model::records::{ConsoleSession, Principal};

use crate::auth::{generate_key, hash_key};
use crate::state::AppState;

/// The session cookie.
pub const COOKIE: &str = "tg_session";
/// The cookie that carries the sign-in form's CSRF token (before a session exists).
pub const SIGN_IN_COOKIE: &str = "tg_signin";
/// How long a session lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct User {
    /// Who, with the roles of their key now.
    pub principal: Principal,
    /// The token every form of this session carries.
    pub csrf: String,
}

/// Starts a session for a key (by its hash) and returns the id for the cookie. Sessions
/// are kept in the database: every API process of a deployment sees the same ones, and a
/// restart signs nobody out.
pub async fn start(state: &AppState, key_hash: String) -> Option<String> {
    let id = generate_key().ok()?;
    let csrf = generate_key().ok()?;
    let now = state.engine.clock().now();
    let lifetime = chrono::TimeDelta::from_std(LIFETIME).ok()?;
    let session = ConsoleSession {
        id_hash: hash_key(&id),
        key_hash,
        csrf,
        created_at: now,
        expires_at: now + lifetime,
    };
    match state.store.create_session(session, now).await {
        Ok(()) => Some(id),
        Err(err) => {
            tracing::error!("cannot store a console session: {err}");
            None
        }
    }
}

/// Ends a session.
pub async fn end(state: &AppState, id: &str) {
    if let Err(err) = state.store.delete_session(&hash_key(id)).await {
        tracing::warn!("cannot delete a console session: {err}");
    }
}

/// The signed-in user of `req`, if its session is valid and its key still exists.
pub async fn current(req: &HttpRequest, state: &AppState) -> Option<User> {
    let id = req.cookie(COOKIE)?.value().to_owned();
    let now = state.engine.clock().now();
    let session = state.store.get_session(&hash_key(&id), now).await.ok()??;
    match state.store.find_api_key(&session.key_hash).await {
        Ok(Some(key)) => Some(User {
            principal: key.principal(),
            csrf: session.csrf,
        }),
        _ => {
            end(state, &id).await;
            None
        }
    }
}

/// Whether `submitted` is `expected` (constant time).
pub fn tokens_match(expected: &str, submitted: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes()))
}

/// A cookie with the console's attributes: `HttpOnly`, `SameSite=Strict`, path `/`, and
/// `Secure` when the request came over TLS (directly or via a proxy that says so).
pub fn cookie(
    req: &HttpRequest,
    name: &'static str,
    value: String,
    max_age: Duration,
) -> Cookie<'static> {
    let secure = req.connection_info().scheme() == "https";
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(actix_web::cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ))
        .finish()
}

/// A cookie that deletes `name`.
pub fn removal(name: &'static str) -> Cookie<'static> {
    let mut c = Cookie::build(name, "").path("/").finish();
    c.make_removal();
    c
}
