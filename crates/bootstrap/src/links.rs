//! Signed decision links: a URL that lets one approver decide one approval request
//! without an API key or a console session (docs/notifications.md, "Decision links").
//!
//! A token is `v1.<key id>.<claims>.<mac>`: the claims (approval, subject, the role it is
//! addressed through, a digest of what the approver is shown, an expiry) in base64url
//! JSON, and an HMAC-SHA256 over everything before the MAC. The keys live in a file
//! (`<data-dir>/link.key` by default, owner-only) holding the current key and the keys
//! it replaced; a replaced key still verifies for the rotation overlap, then no more.
//! The file is re-read when it changes, so a rotation reaches a running server.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// What tells a changed key file: its modification time and (on Unix) its inode, which
/// every write changes, since a write renames a new file into place.
type Stamp = Option<(SystemTime, u64)>;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tollgate_model::records::{ApprovalRequest, Principal};
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// How long a rendered decision form may be submitted.
const FORM_LIFETIME: Duration = Duration::from_secs(3600);

/// Why the link keys could not be read, written or made.
#[derive(Debug, thiserror::Error)]
pub enum LinkKeyError {
    /// The file system refused.
    #[error("link key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The file is not a key file written by Tollgate.
    #[error("link key file {path} does not read: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// What a link grants: one decision on `approval_id`, as `subject`, while what the
/// approver is shown still has `digest`, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    /// The approval request.
    #[serde(rename = "a")]
    pub approval_id: Uuid,
    /// Who decides through it: a listed user, or the address a role's link was sent to.
    #[serde(rename = "s")]
    pub subject: String,
    /// The approver role it was sent for; `None` for a named user's link.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// [`digest`] of the request when the link was made.
    #[serde(rename = "d")]
    pub digest: String,
    /// Unix seconds after which it is refused.
    #[serde(rename = "e")]
    pub expires_at: i64,
}

impl LinkClaims {
    /// The principal that decides through the link: the subject, holding the role it was
    /// sent for (never any other role, never an administrator).
    pub fn principal(&self) -> Principal {
        Principal {
            subject: self.subject.clone(),
            roles: self.role.iter().cloned().collect(),
        }
    }

    /// When the link stops working.
    pub fn expiry(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.expires_at, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// A digest of what an approver is shown on the decision page — the execution and
/// step, entity, reason, data and requester — so that a link made for one version of a
/// request does not decide a changed one. Object keys are sorted first: the digest
/// does not depend on how a backend orders a JSON object.
pub fn digest(approval: &ApprovalRequest) -> String {
    let shown = serde_json::json!({
        "execution_id": approval.execution_id,
        "step_id": approval.step_id,
        "visit": approval.visit,
        "entity_type": approval.entity_type,
        "entity_id": approval.entity_id,
        "reason": approval.reason,
        "data": approval.data,
        "requested_by": approval.requested_by,
    });
    let mut hasher = Sha256::new();
    hasher.update(canonical(&shown).to_string().as_bytes());
    b64(&hasher.finalize()[..16])
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// The key file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyFile {
    /// Oldest first; the last one not retired signs.
    keys: Vec<StoredKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    id: String,
    /// 32 random bytes, base64url.
    secret: String,
    created_at: DateTime<Utc>,
    /// When a rotation replaced it; it verifies for the overlap after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Key {
    id: String,
    secret: Vec<u8>,
    retired_at: Option<DateTime<Utc>>,
}

/// The keys read from the file at one moment.
#[derive(Debug)]
struct Ring {
    keys: Vec<Key>,
}

impl Ring {
    fn from_file(path: &Path, file: KeyFile) -> Result<Self, LinkKeyError> {
        let malformed = |why: String| LinkKeyError::Malformed {
            path: path.to_owned(),
            why,
        };
        let mut keys = Vec::with_capacity(file.keys.len());
        for stored in file.keys {
            let secret = unb64(&stored.secret)
                .filter(|s| s.len() >= 32)
                .ok_or_else(|| {
                    malformed(format!(
                        "key `{}`: the secret is not 32 base64url bytes",
                        stored.id
                    ))
                })?;
            keys.push(Key {
                id: stored.id,
                secret,
                retired_at: stored.retired_at,
            });
        }
        if !keys.iter().any(|k| k.retired_at.is_none()) {
            return Err(malformed("no current key (every key is retired)".into()));
        }
        Ok(Self { keys })
    }

    fn current(&self) -> Option<&Key> {
        self.keys.iter().rev().find(|k| k.retired_at.is_none())
    }
}

/// The link keys of a server: signs new links with the current key and verifies with it
/// and with the keys retired less than the overlap ago.
#[derive(Debug)]
pub struct LinkKeys {
    /// The key file; `None` for keys made in memory (they die with the process).
    path: Option<PathBuf>,
    overlap: Duration,
    loaded: Mutex<(Stamp, Arc<Ring>)>,
}

impl LinkKeys {
    /// The keys in `path`, made there (owner-only) on first use. `overlap`: how long a
    /// key replaced by [`rotate`] still verifies the links it signed.
    pub fn open(path: &Path, overlap: Duration) -> Result<Self, LinkKeyError> {
        if !path.exists() {
            write_file(
                path,
                &KeyFile {
                    keys: vec![new_key(Utc::now())?],
                },
            )?;
        }
        let (modified, ring) = read_ring(path)?;
        Ok(Self {
            path: Some(path.to_owned()),
            overlap,
            loaded: Mutex::new((modified, Arc::new(ring))),
        })
    }

    /// Keys that live in memory only: links made with them stop working when the process
    /// ends. For embedding and tests; a server uses [`Self::open`].
    pub fn ephemeral() -> Result<Self, LinkKeyError> {
        let ring = Ring::from_file(
            Path::new("(memory)"),
            KeyFile {
                keys: vec![new_key(Utc::now())?],
            },
        )?;
        Ok(Self {
            path: None,
            overlap: Duration::ZERO,
            loaded: Mutex::new((None, Arc::new(ring))),
        })
    }

    /// The ring, re-read when the file changed since the last read. A file that no
    /// longer reads keeps the ring read before (said in the log): a half-written edit
    /// must not stop every link.
    fn ring(&self) -> Arc<Ring> {
        // A panic while holding the lock leaves a ring that is whole: keep using it.
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(path) = &self.path {
            let modified = stamp(path);
            if modified != loaded.0 {
                match read_ring(path) {
                    Ok((modified, ring)) => *loaded = (modified, Arc::new(ring)),
                    Err(err) => {
                        tracing::error!(
                            "link keys not reloaded, the previous ones stay in use: {err}"
                        );
                        loaded.0 = modified;
                    }
                }
            }
        }
        loaded.1.clone()
    }

    /// A token for `claims`, signed with the current key.
    pub fn mint(&self, claims: &LinkClaims) -> String {
        let ring = self.ring();
        let Some(key) = ring.current() else {
            // `Ring::from_file` refuses a ring without a current key.
            return String::new();
        };
        let payload = b64(&serde_json::to_vec(claims).unwrap_or_default());
        let signed = format!("v1.{}.{payload}", key.id);
        let mac = b64(&mac(&key.secret, signed.as_bytes()));
        format!("{signed}.{mac}")
    }

    /// The claims of `token` when it was signed by a key still accepted at `now` and has
    /// not expired; `None` otherwise, whatever the reason (a caller learns nothing about
    /// why a forged token failed).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<LinkClaims> {
        let (signed, mac_part) = token.rsplit_once('.')?;
        let mut parts = signed.splitn(3, '.');
        let (version, key_id, payload) = (parts.next()?, parts.next()?, parts.next()?);
        if version != "v1" {
            return None;
        }
        let ring = self.ring();
        let key = ring.keys.iter().find(|k| k.id == key_id)?;
        if let Some(retired) = key.retired_at {
            let overlap = chrono::Duration::from_std(self.overlap).ok()?;
            if now > retired + overlap {
                return None;
            }
        }
        let given = unb64(mac_part)?;
        let mut check = HmacSha256::new_from_slice(&key.secret).ok()?;
        check.update(signed.as_bytes());
        check.verify_slice(&given).ok()?;
        let claims: LinkClaims = serde_json::from_slice(&unb64(payload)?).ok()?;
        (now.timestamp() <= claims.expires_at).then_some(claims)
    }

    /// A nonce for the decision form rendered for `token` at `now`: the form's POST must
    /// carry it, so that a decision comes from a page a person opened, within an hour.
    pub fn form_nonce(&self, token: &str, now: DateTime<Utc>) -> String {
        let ring = self.ring();
        let Some(key) = ring.current() else {
            return String::new();
        };
        let at = now.timestamp();
        format!(
            "{at}.{}",
            b64(&mac(&key.secret, format!("form.{at}.{token}").as_bytes()))
        )
    }

    /// Whether `nonce` is one [`Self::form_nonce`] gave for `token` less than an hour
    /// before `now` (with any accepted key: a rotation does not void open forms).
    pub fn check_nonce(&self, token: &str, nonce: &str, now: DateTime<Utc>) -> bool {
        let Some((at, given)) = nonce.split_once('.') else {
            return false;
        };
        let (Ok(at), Some(given)) = (at.parse::<i64>(), unb64(given)) else {
            return false;
        };
        let age = now.timestamp() - at;
        if !(-60..=FORM_LIFETIME.as_secs() as i64).contains(&age) {
            return false;
        }
        let ring = self.ring();
        ring.keys.iter().any(|key| {
            HmacSha256::new_from_slice(&key.secret).is_ok_and(|mut check| {
                check.update(format!("form.{at}.{token}").as_bytes());
                check.verify_slice(&given).is_ok()
            })
        })
    }
}

fn mac(secret: &[u8], message: &[u8]) -> Vec<u8> {
    match HmacSha256::new_from_slice(secret) {
        Ok(mut m) => {
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length.
        Err(_) => Vec::new(),
    }
}

fn new_key(now: DateTime<Utc>) -> Result<StoredKey, LinkKeyError> {
    let mut secret = [0u8; 32];
    let mut id = [0u8; 4];
    let random = |buf: &mut [u8]| {
        getrandom::getrandom(buf).map_err(|err| LinkKeyError::Io {
            path: PathBuf::from("(random source)"),
            source: std::io::Error::other(err.to_string()),
        })
    };
    random(&mut secret)?;
    random(&mut id)?;
    Ok(StoredKey {
        id: b64(&id),
        secret: b64(&secret),
        created_at: now,
        retired_at: None,
    })
}

/// The key file's [`Stamp`] now.
fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, inode))
}

fn read_ring(path: &Path) -> Result<(Stamp, Ring), LinkKeyError> {
    let io = |source| LinkKeyError::Io {
        path: path.to_owned(),
        source,
    };
    let modified = stamp(path);
    let text = std::fs::read_to_string(path).map_err(io)?;
    let file: KeyFile = serde_json::from_str(&text).map_err(|err| LinkKeyError::Malformed {
        path: path.to_owned(),
        why: err.to_string(),
    })?;
    Ok((modified, Ring::from_file(path, file)?))
}

/// Writes `file` to `path` whole or not at all (a sibling `.new` file, then a rename),
/// readable by its owner only.
fn write_file(path: &Path, file: &KeyFile) -> Result<(), LinkKeyError> {
    let io = |source| LinkKeyError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
    }
    let pending = path.with_extension("key.new");
    let text = serde_json::to_string_pretty(file).map_err(|err| LinkKeyError::Malformed {
        path: path.to_owned(),
        why: err.to_string(),
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    {
        use std::io::Write;
        let mut out = options.open(&pending).map_err(io)?;
        out.write_all(text.as_bytes()).map_err(io)?;
        out.sync_all().map_err(io)?;
    }
    std::fs::rename(&pending, path).map_err(io)
}

/// Replaces the current key of the file at `path` with a new one (made there when
/// missing). The replaced key keeps verifying for `overlap` after `now`; keys retired
/// longer ago than that are dropped from the file. Returns the new key's id.
pub fn rotate(path: &Path, overlap: Duration, now: DateTime<Utc>) -> Result<String, LinkKeyError> {
    let mut file = if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|source| LinkKeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str::<KeyFile>(&text).map_err(|err| LinkKeyError::Malformed {
            path: path.to_owned(),
            why: err.to_string(),
        })?
    } else {
        KeyFile { keys: Vec::new() }
    };
    let overlap = chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::MAX);
    file.keys
        .retain(|k| k.retired_at.is_none_or(|retired| now <= retired + overlap));
    for key in &mut file.keys {
        key.retired_at.get_or_insert(now);
    }
    let key = new_key(now)?;
    let id = key.id.clone();
    file.keys.push(key);
    write_file(path, &file)?;
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claims(expires_at: i64) -> LinkClaims {
        LinkClaims {
            approval_id: Uuid::now_v7(),
            subject: "ann".into(),
            role: None,
            digest: "d".into(),
            expires_at,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn a_token_verifies_until_it_expires_and_not_once_changed() {
        let keys = LinkKeys::ephemeral().unwrap();
        let c = claims(2_000);
        let token = keys.mint(&c);
        assert_eq!(keys.verify(&token, at(1_999)), Some(c.clone()));
        assert_eq!(keys.verify(&token, at(2_000)), Some(c.clone()));
        assert_eq!(keys.verify(&token, at(2_001)), None, "expired");
        // Any changed character of the claims or the MAC fails.
        let (signed, mac) = token.rsplit_once('.').unwrap();
        let mut other = c.clone();
        other.subject = "eve".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        let parts: Vec<&str> = signed.split('.').collect();
        let forged = format!("{}.{}.{forged_payload}.{mac}", parts[0], parts[1]);
        assert_eq!(keys.verify(&forged, at(1_000)), None, "claims changed");
        let flipped = format!(
            "{signed}.{}",
            mac.replacen(&mac[..1], if &mac[..1] == "A" { "B" } else { "A" }, 1)
        );
        assert_eq!(keys.verify(&flipped, at(1_000)), None, "mac changed");
        assert_eq!(keys.verify("v1.x.y", at(1_000)), None);
        assert_eq!(keys.verify("", at(1_000)), None);
        // Another server's keys do not verify it.
        assert_eq!(
            LinkKeys::ephemeral().unwrap().verify(&token, at(1_000)),
            None
        );
    }

    #[test]
    fn a_rotated_key_verifies_for_the_overlap_then_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.key");
        let overlap = Duration::from_secs(3_600);
        let keys = LinkKeys::open(&path, overlap).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "owner-only");
        }
        let old = keys.mint(&claims(i64::MAX));
        let rotated_at = Utc::now();
        rotate(&path, overlap, rotated_at).unwrap();
        let new = keys.mint(&claims(i64::MAX));
        assert_ne!(
            old.split('.').nth(1),
            new.split('.').nth(1),
            "signed with the new key"
        );
        assert!(keys
            .verify(&old, rotated_at + chrono::Duration::minutes(59))
            .is_some());
        assert!(keys
            .verify(&old, rotated_at + chrono::Duration::minutes(61))
            .is_none());
        assert!(keys
            .verify(&new, rotated_at + chrono::Duration::days(30))
            .is_some());
        // A second rotation after the overlap drops the first key from the file.
        rotate(&path, overlap, rotated_at + chrono::Duration::hours(2)).unwrap();
        let file: KeyFile = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(file.keys.len(), 2);
    }

    #[test]
    fn a_form_nonce_is_bound_to_its_token_and_lasts_an_hour() {
        let keys = LinkKeys::ephemeral().unwrap();
        let nonce = keys.form_nonce("tok", at(10_000));
        assert!(keys.check_nonce("tok", &nonce, at(10_000 + 3_599)));
        assert!(!keys.check_nonce("tok", &nonce, at(10_000 + 3_601)));
        assert!(!keys.check_nonce("other", &nonce, at(10_001)));
        assert!(!keys.check_nonce("tok", "10000.AAAA", at(10_001)));
        assert!(!keys.check_nonce("tok", "garbage", at(10_001)));
    }

    #[test]
    fn the_digest_follows_what_is_shown_not_key_order() {
        let mut a: ApprovalRequest = serde_json::from_value(serde_json::json!({
            "id": Uuid::nil(), "execution_id": Uuid::nil(), "step_id": "s", "visit": 1,
            "entity_type": "order", "entity_id": "1", "approver_roles": ["m"], "approver_users": [],
            "required": 1, "status": "pending", "reason": "big", "data": {"a": 1, "b": 2},
            "decisions": [], "requested_by": "shop", "allow_self_approval": false,
            "requested_at": "2026-12-02T10:00:00Z", "expires_at": null, "decided_at": null,
        }))
        .unwrap();
        let before = digest(&a);
        a.data = serde_json::json!({"b": 2, "a": 1});
        assert_eq!(digest(&a), before, "key order does not count");
        a.approver_roles.push("director".into());
        assert_eq!(digest(&a), before, "approvers are not what is shown");
        a.data = serde_json::json!({"a": 1, "b": 3});
        assert_ne!(digest(&a), before);
    }
}
