//! Console sessions: an opaque id in an `HttpOnly`, `SameSite=Strict` cookie, the
//! session itself on the server.
//!
//! A session remembers which API key signed in (its hash, never the key) and a CSRF
//! token. Every request looks the key up again, so revoking the key ends its sessions at
//! once, and role changes apply immediately.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::HttpRequest;
use subtle::ConstantTimeEq;
use tollgate_model::records::Principal;

use crate::auth::{generate_key, hash_key};
use crate::state::AppState;

/// The session cookie.
pub const COOKIE: &str = "tg_session";
/// The cookie that carries the sign-in form's CSRF token (before a session exists).
pub const SIGN_IN_COOKIE: &str = "tg_signin";
/// How long a session lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone)]
struct Session {
    key_hash: String,
    csrf: String,
    expires: Instant,
}

/// Sessions of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct User {
    /// Who, with the roles of their key now.
    pub principal: Principal,
    /// The token every form of this session carries.
    pub csrf: String,
}

impl Sessions {
    /// Starts a session for a key (by its hash); returns the session id.
    pub fn start(&self, key_hash: String) -> Option<String> {
        let id = generate_key().ok()?;
        let csrf = generate_key().ok()?;
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.insert(
            hash_key(&id),
            Session {
                key_hash,
                csrf,
                expires: now + LIFETIME,
            },
        );
        Some(id)
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&hash_key(id));
    }

    fn find(&self, id: &str) -> Option<Session> {
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        let key = hash_key(id);
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }
}

/// The signed-in user of `req`, if its session is valid and its key still exists.
pub async fn current(req: &HttpRequest, state: &AppState) -> Option<User> {
    let id = req.cookie(COOKIE)?.value().to_owned();
    let session = state.sessions.find(&id)?;
    match state.store.find_api_key(&session.key_hash).await {
        Ok(Some(key)) => Some(User {
            principal: key.principal(),
            csrf: session.csrf,
        }),
        _ => {
            state.sessions.end(&id);
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
