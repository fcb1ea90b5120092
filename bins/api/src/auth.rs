//! API keys and permissions.
//!
//! A key is `tg_` followed by 64 hex digits of operating-system randomness (256 bits);
//! only its SHA-256 is stored. Requests carry it as `Authorization: Bearer <key>`. The
//! key's name is the caller's subject; its roles decide what it may do (docs/api.md
//! "Conventions"): `admin` everything, `operator` write workflows, execute, send events
//! and control executions, `service` send events, `viewer` read; any other role is an
//! approver role, checked by the approval itself.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_model::records::Principal;

use crate::error::ApiError;
use crate::state::AppState;

/// Roles with a built-in meaning; every other role name is an approver role.
pub const BUILT_IN_ROLES: [&str; 4] = ["admin", "operator", "service", "viewer"];

/// A fresh random key.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(format!("tg_{}", hex(&bytes)))
}

/// The stored form of a key: lowercase hex SHA-256.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

pub use tollgate_model::records::Permission;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// `Forbidden` unless one of the caller's roles grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.0.may(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "key `{}` may not {}",
                self.0.subject,
                permission.describe()
            )))
        }
    }

    /// The caller's subject (its key's name).
    pub fn subject(&self) -> &str {
        &self.0.subject
    }
}

/// The API key of a request's `Authorization: Bearer <key>` header (not yet checked
/// against the store); `Unauthorized` saying what is wrong with the header otherwise.
pub fn bearer_key(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <api key>` header"))?
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => Ok(key.trim().to_owned()),
        _ => Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <api key>`",
        )),
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let key = bearer_key(req);
        Box::pin(async move {
            let Some(state) = state else {
                return Err(ApiError::internal("application state missing"));
            };
            let key = key?;
            let hash = hash_key(&key);
            // The cache is keyed by the hash too: a timing difference in its lookup can
            // only reveal hash prefixes, as the store's own index would.
            if let Some(principal) = state.keys.get(&hash) {
                return Ok(Caller(principal));
            }
            let _turn = state.keys.lookup_turn(&hash).await;
            if let Some(principal) = state.keys.get(&hash) {
                return Ok(Caller(principal));
            }
            let seen = state.keys.generation();
            match state.store.find_api_key(&hash).await? {
                // The lookup is by hash, so a timing difference can only reveal hash
                // prefixes; the comparison is constant-time all the same.
                Some(found) if bool::from(found.key_hash.as_bytes().ct_eq(hash.as_bytes())) => {
                    let principal = found.principal();
                    state.keys.put(hash, principal.clone(), seen);
                    Ok(Caller(principal))
                }
                _ => Err(ApiError::unauthorized("unknown or revoked API key")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashes_stable() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 67);
        assert!(a.starts_with("tg_"));
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_eq!(hash_key(&a).len(), 64);
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn built_in_roles_grant_what_the_contract_says() {
        let caller = |roles: &[&str]| {
            Caller(Principal {
                subject: "k".into(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            })
        };
        use Permission::*;
        let all = [
            WriteWorkflows,
            Execute,
            SendEvents,
            ControlExecutions,
            ManageKeys,
            MakeLinks,
        ];
        for p in all {
            assert!(caller(&["admin"]).require(p).is_ok());
            assert!(caller(&["viewer"]).require(p).is_err());
            assert!(caller(&["sales_manager"]).require(p).is_err());
            assert_eq!(caller(&["operator"]).require(p).is_ok(), p != ManageKeys);
            assert_eq!(caller(&["service"]).require(p).is_ok(), p == SendEvents);
        }
    }
}
