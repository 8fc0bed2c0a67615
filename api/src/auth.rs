//! Who is calling and what they may do: API keys (shown once, stored as argon2 hashes,
//! revocable, with expiry), users with argon2 passwords and TOTP (required for admin and
//! operator), sessions (cookie + CSRF token) and lockout after repeated failed logins; the roles
//! and the checks every endpoint makes.

use crate::error::{ApiError, ApiResult};
use crate::model::{ControlOp, ControlStore, Space};
use crate::totp;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Failed logins in a row before the account locks.
pub const MAX_FAILED_LOGINS: u32 = 5;
/// How long a lockout lasts.
pub const LOCKOUT_SECONDS: i64 = 15 * 60;
/// How long a session lives.
pub const SESSION_SECONDS: i64 = 12 * 3600;
/// Argon2 memory for passwords and keys, KiB (OWASP's minimum for argon2id).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
const ARGON2_ITERATIONS: u32 = 2;
/// Longest username, password or key accepted (longer ones are refused before hashing).
pub const MAX_SECRET_BYTES: usize = 256;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Cookie holding the session token.
pub const SESSION_COOKIE: &str = "settle_session";
/// Header carrying the session's CSRF token on every unsafe request made with the cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";
const KEY_PREFIX: &str = "sk_";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Auditor,
    Partner,
    Ingest,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "operator" => Role::Operator,
            "auditor" => Role::Auditor,
            "partner" => Role::Partner,
            "ingest" => Role::Ingest,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Partner => "partner",
            Role::Ingest => "ingest",
        }
    }

    /// Whether a user of this role must log in with a second factor.
    pub fn requires_totp(self) -> bool {
        matches!(self, Role::Admin | Role::Operator)
    }
}

/// How a principal was authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    Key,
    /// A browser session; unsafe requests must carry this CSRF token.
    Session {
        csrf: String,
        token_hash: String,
    },
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `user:NAME` or `key:ID`, as the audit trail names it.
    pub subject: String,
    pub role: Role,
    /// The partner a `partner` principal is bound to.
    pub partner: Option<String>,
    pub via: Via,
}

impl Principal {
    /// Reading everything (every partner, the audit trail, the dashboard).
    pub fn require_read_all(&self) -> ApiResult<()> {
        match self.role {
            Role::Admin | Role::Operator | Role::Auditor => Ok(()),
            _ => Err(ApiError::Forbidden(format!("role {} cannot read this", self.role.as_str()))),
        }
    }

    /// Reading one partner's data. A partner principal asking for another partner gets
    /// `not_found`, so that it cannot even learn which partners exist.
    pub fn require_partner(&self, partner: &str) -> ApiResult<()> {
        match self.role {
            Role::Admin | Role::Operator | Role::Auditor => Ok(()),
            Role::Partner if self.partner.as_deref() == Some(partner) => Ok(()),
            Role::Partner => Err(ApiError::NotFound(format!("no partner {partner:?}"))),
            Role::Ingest => Err(ApiError::Forbidden("role ingest can only submit transactions".into())),
        }
    }

    /// The partner every read must be restricted to, or `None` for read-all roles.
    pub fn scope(&self) -> ApiResult<Option<String>> {
        match self.role {
            Role::Admin | Role::Operator | Role::Auditor => Ok(None),
            Role::Partner => self
                .partner
                .clone()
                .map(Some)
                .ok_or_else(|| ApiError::Forbidden("this partner principal has no partner".into())),
            Role::Ingest => Err(ApiError::Forbidden("role ingest can only submit transactions".into())),
        }
    }

    /// The partner a list must be filtered to: the own partner for a partner principal (asking
    /// for another one is `not_found`), else what was asked (if anything).
    pub fn partner_filter(&self, asked: Option<&str>) -> ApiResult<Option<String>> {
        match (self.scope()?, asked) {
            (Some(own), Some(asked)) if asked != own => {
                Err(ApiError::NotFound(format!("no partner {asked:?}")))
            }
            (Some(own), _) => Ok(Some(own)),
            (None, asked) => Ok(asked.map(str::to_string)),
        }
    }

    /// Changing settlement configuration or the exception queue.
    pub fn require_operate(&self) -> ApiResult<()> {
        match self.role {
            Role::Admin | Role::Operator => Ok(()),
            _ => Err(ApiError::Forbidden(format!("role {} cannot change anything here", self.role.as_str()))),
        }
    }

    /// Managing users and keys.
    pub fn require_admin(&self) -> ApiResult<()> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(ApiError::Forbidden(format!("role {} cannot manage users or keys", self.role.as_str()))),
        }
    }

    pub fn require_submit(&self) -> ApiResult<()> {
        match self.role {
            Role::Admin | Role::Operator | Role::Ingest => Ok(()),
            _ => Err(ApiError::Forbidden(format!("role {} cannot submit transactions", self.role.as_str()))),
        }
    }

    pub fn require_audit_read(&self) -> ApiResult<()> {
        match self.role {
            Role::Admin | Role::Auditor | Role::Operator => Ok(()),
            _ => Err(ApiError::Forbidden(format!("role {} cannot read the audit trail", self.role.as_str()))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub username: String,
    pub role: Role,
    pub partner: Option<String>,
    pub password_hash: String,
    /// Base32 TOTP secret; required for admin and operator.
    pub totp_secret: Option<String>,
    pub failed_logins: u32,
    pub locked_until: i64,
    /// The last TOTP step used (a code is accepted once).
    pub last_totp_step: u64,
    pub disabled: bool,
    pub created_at: i64,
}

impl UserRecord {
    /// The record without secrets, as the API shows it and the audit trail records it.
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "username": self.username, "role": self.role.as_str(), "partner": self.partner,
            "totp": self.totp_secret.is_some(), "disabled": self.disabled,
            "locked": self.locked_until > now_unix(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub partner: Option<String>,
    pub hash: String,
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl KeyRecord {
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "name": self.name, "role": self.role.as_str(), "partner": self.partner,
            "created_at": self.created_at, "created_by": self.created_by,
            "expires_at": self.expires_at, "revoked_at": self.revoked_at,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub username: String,
    pub role: Role,
    pub partner: Option<String>,
    pub csrf: String,
    pub expires_at: i64,
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Equality in time independent of where the inputs differ (for secrets and tokens).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Credentials and sessions over the control store.
pub struct Auth {
    control: Arc<dyn ControlStore>,
    argon2_memory_kib: u32,
    /// Key id -> SHA-256 of the secret once argon2 verified it, so that a key costs one argon2
    /// verification per process, not per request. Revocation and expiry are still read from
    /// the record on every request.
    verified_keys: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

fn to_json<T: Serialize>(v: &T) -> ApiResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ApiError::Internal(e.to_string()))
}

fn from_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Internal(format!("corrupt control record: {e}")))
}

/// A login's verdict: on success the record's bytes as read and the user to write; on failure
/// (when a failure is to be counted) the same, with the error to answer.
pub type LoginCheck = Result<(Vec<u8>, UserRecord), (Option<(Vec<u8>, UserRecord)>, ApiError)>;

/// A new user's one-time secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub totp_secret: Option<String>,
    pub otpauth_uri: Option<String>,
}

impl Auth {
    pub fn new(control: Arc<dyn ControlStore>, argon2_memory_kib: u32) -> Auth {
        Auth { control, argon2_memory_kib, verified_keys: Mutex::new(HashMap::new()) }
    }

    fn hasher(&self) -> ApiResult<Argon2<'static>> {
        let params = Params::new(self.argon2_memory_kib, ARGON2_ITERATIONS, 1, None)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    fn hash(&self, secret: &str) -> ApiResult<String> {
        let salt = SaltString::generate(&mut OsRng);
        Ok(self
            .hasher()?
            .hash_password(secret.as_bytes(), &salt)
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .to_string())
    }

    fn verify_hash(&self, secret: &str, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else { return false };
        self.hasher().is_ok_and(|h| h.verify_password(secret.as_bytes(), &parsed).is_ok())
    }

    pub fn user(&self, username: &str) -> ApiResult<Option<UserRecord>> {
        self.control.get(Space::Users, username)?.map(|b| from_json(&b)).transpose()
    }

    pub fn users(&self) -> ApiResult<Vec<UserRecord>> {
        self.control.scan(Space::Users)?.iter().map(|(_, v)| from_json(v)).collect()
    }

    pub fn keys(&self) -> ApiResult<Vec<KeyRecord>> {
        self.control.scan(Space::ApiKeys)?.iter().map(|(_, v)| from_json(v)).collect()
    }

    pub fn key(&self, id: &str) -> ApiResult<Option<KeyRecord>> {
        self.control.get(Space::ApiKeys, id)?.map(|b| from_json(&b)).transpose()
    }

    /// A user record as stored (its bytes, for a conditional write) and decoded.
    pub fn user_stored(&self, username: &str) -> ApiResult<Option<(Vec<u8>, UserRecord)>> {
        match self.control.get(Space::Users, username)? {
            Some(b) => {
                let user = from_json(&b)?;
                Ok(Some((b, user)))
            }
            None => Ok(None),
        }
    }

    /// The precondition that the user's record is still `before` (as read).
    pub fn expect_user_op(username: &str, before: Vec<u8>) -> ControlOp {
        ControlOp::Expect { space: Space::Users, key: username.to_string(), value: Some(before) }
    }

    pub fn put_user_op(record: &UserRecord) -> ApiResult<ControlOp> {
        Ok(ControlOp::Put { space: Space::Users, key: record.username.clone(), value: to_json(record)? })
    }

    pub fn put_key_op(record: &KeyRecord) -> ApiResult<ControlOp> {
        Ok(ControlOp::Put { space: Space::ApiKeys, key: record.id.clone(), value: to_json(record)? })
    }

    /// A new user record with a generated password (and TOTP secret where the role needs one
    /// or `with_totp`). The caller writes it (with its audit record).
    pub fn new_user(
        &self,
        username: &str,
        role: Role,
        partner: Option<String>,
        with_totp: bool,
    ) -> ApiResult<(UserRecord, NewUser)> {
        validate_name(username)?;
        if role == Role::Partner && partner.is_none() {
            return Err(ApiError::BadRequest("a partner user needs a partner".into()));
        }
        if role != Role::Partner && partner.is_some() {
            return Err(ApiError::BadRequest("only partner users are bound to a partner".into()));
        }
        let password = random_hex(12);
        let totp_secret = (with_totp || role.requires_totp()).then(|| {
            let mut secret = [0u8; totp::SECRET_BYTES];
            OsRng.fill_bytes(&mut secret);
            totp::base32_encode(&secret)
        });
        let record = UserRecord {
            username: username.to_string(),
            role,
            partner,
            password_hash: self.hash(&password)?,
            totp_secret: totp_secret.clone(),
            failed_logins: 0,
            locked_until: 0,
            last_totp_step: 0,
            disabled: false,
            created_at: now_unix(),
        };
        let otpauth_uri = totp_secret.as_deref().map(|s| totp::otpauth_uri("Settle", username, s));
        Ok((record, NewUser { username: username.to_string(), password, totp_secret, otpauth_uri }))
    }

    /// A new API key record and the key itself (shown once).
    pub fn new_key(
        &self,
        name: &str,
        role: Role,
        partner: Option<String>,
        expires_at: Option<i64>,
        created_by: &str,
    ) -> ApiResult<(KeyRecord, String)> {
        if name.is_empty() || name.len() > MAX_SECRET_BYTES {
            return Err(ApiError::BadRequest(format!("a key name must be 1..={MAX_SECRET_BYTES} bytes")));
        }
        if role == Role::Partner && partner.is_none() {
            return Err(ApiError::BadRequest("a partner key needs a partner".into()));
        }
        if role != Role::Partner && partner.is_some() {
            return Err(ApiError::BadRequest("only partner keys are bound to a partner".into()));
        }
        if expires_at.is_some_and(|e| e <= now_unix()) {
            return Err(ApiError::BadRequest("expires_at is in the past".into()));
        }
        let id = random_hex(8);
        let secret = random_hex(32);
        let record = KeyRecord {
            id: id.clone(),
            name: name.to_string(),
            role,
            partner,
            hash: self.hash(&secret)?,
            created_at: now_unix(),
            created_by: created_by.to_string(),
            expires_at,
            revoked_at: None,
        };
        Ok((record, format!("{KEY_PREFIX}{id}.{secret}")))
    }

    /// The principal of a bearer API key, or `unauthenticated`.
    pub fn authenticate_key(&self, presented: &str) -> ApiResult<Principal> {
        let bad = || ApiError::Unauthenticated("invalid API key".into());
        if presented.len() > MAX_SECRET_BYTES {
            return Err(bad());
        }
        let rest = presented.strip_prefix(KEY_PREFIX).ok_or_else(bad)?;
        let (id, secret) = rest.split_once('.').ok_or_else(bad)?;
        let record = self.key(id)?.ok_or_else(bad)?;
        if record.revoked_at.is_some() {
            return Err(ApiError::Unauthenticated("this API key was revoked".into()));
        }
        if record.expires_at.is_some_and(|e| e <= now_unix()) {
            return Err(ApiError::Unauthenticated("this API key has expired".into()));
        }
        let digest = sha256_hex(secret);
        let cached = self.verified_keys.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        let ok = match cached {
            Some(d) => ct_eq(d.as_bytes(), digest.as_bytes()),
            None => {
                let ok = self.verify_hash(secret, &record.hash);
                if ok {
                    self.verified_keys
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.to_string(), digest);
                }
                ok
            }
        };
        if !ok {
            return Err(bad());
        }
        Ok(Principal {
            subject: format!("key:{}", record.id),
            role: record.role,
            partner: record.partner,
            via: Via::Key,
        })
    }

    /// Checks a login. On success returns the updated user (failures reset, TOTP step used);
    /// on failure the updated user too (a failure counted, maybe a lockout), with the error.
    /// Each with the record's bytes as read, so that it is written only if still those.
    pub fn check_login(&self, username: &str, password: &str, code: Option<&str>) -> ApiResult<LoginCheck> {
        let invalid = || ApiError::Unauthenticated("invalid username, password or code".into());
        if username.len() > MAX_SECRET_BYTES || password.len() > MAX_SECRET_BYTES {
            return Ok(Err((None, invalid())));
        }
        let Some((before, mut user)) = self.user_stored(username)? else { return Ok(Err((None, invalid()))) };
        let now = now_unix();
        if user.locked_until > now {
            return Ok(Err((None, ApiError::Locked("too many failed logins; try again later".into()))));
        }
        if user.disabled {
            return Ok(Err((None, invalid())));
        }
        let password_ok = self.verify_hash(password, &user.password_hash);
        let totp_step = match (&user.totp_secret, code) {
            (None, _) => Some(0),
            (Some(_), None) => None,
            (Some(secret), Some(code)) => totp::base32_decode(secret)
                .and_then(|s| totp::verify(&s, code, u64::try_from(now).unwrap_or(0)))
                .filter(|step| *step > user.last_totp_step),
        };
        match (password_ok, totp_step) {
            (true, Some(step)) => {
                user.failed_logins = 0;
                user.locked_until = 0;
                if user.totp_secret.is_some() {
                    user.last_totp_step = step;
                }
                Ok(Ok((before, user)))
            }
            _ => {
                user.failed_logins = user.failed_logins.saturating_add(1);
                let error = if user.failed_logins >= MAX_FAILED_LOGINS {
                    user.failed_logins = 0;
                    user.locked_until = now.saturating_add(LOCKOUT_SECONDS);
                    ApiError::Locked("too many failed logins; the account is locked for a while".into())
                } else if password_ok && user.totp_secret.is_some() && code.is_none() {
                    ApiError::Unauthenticated("a TOTP code is required for this account".into())
                } else {
                    invalid()
                };
                Ok(Err((Some((before, user)), error)))
            }
        }
    }

    /// A new session for `user`: the cookie token (shown to the browser only) and the record.
    pub fn new_session(&self, user: &UserRecord) -> ApiResult<(String, SessionRecord, ControlOp)> {
        let token = random_hex(32);
        let record = SessionRecord {
            username: user.username.clone(),
            role: user.role,
            partner: user.partner.clone(),
            csrf: random_hex(16),
            expires_at: now_unix().saturating_add(SESSION_SECONDS),
        };
        let op = ControlOp::Put { space: Space::Sessions, key: sha256_hex(&token), value: to_json(&record)? };
        Ok((token, record, op))
    }

    pub fn authenticate_session(&self, token: &str) -> ApiResult<Option<Principal>> {
        if token.len() > MAX_SECRET_BYTES {
            return Ok(None);
        }
        let token_hash = sha256_hex(token);
        let Some(bytes) = self.control.get(Space::Sessions, &token_hash)? else { return Ok(None) };
        let record: SessionRecord = from_json(&bytes)?;
        if record.expires_at <= now_unix() {
            return Ok(None);
        }
        // A user disabled or removed since the login loses the session at once.
        match self.user(&record.username)? {
            Some(u) if !u.disabled && u.role == record.role => {}
            _ => return Ok(None),
        }
        Ok(Some(Principal {
            subject: format!("user:{}", record.username),
            role: record.role,
            partner: record.partner,
            via: Via::Session { csrf: record.csrf, token_hash },
        }))
    }

    pub fn delete_session_op(token_hash: &str) -> ControlOp {
        ControlOp::Delete { space: Space::Sessions, key: token_hash.to_string() }
    }

    /// Whether a key's record exists here (`false` also for a string that is not a key).
    pub fn key_record_exists(&self, presented: &str) -> ApiResult<bool> {
        let id = presented.strip_prefix(KEY_PREFIX).and_then(|r| r.split_once('.')).map(|(id, _)| id);
        match id {
            Some(id) if presented.len() <= MAX_SECRET_BYTES => {
                Ok(self.control.get(Space::ApiKeys, id)?.is_some())
            }
            _ => Ok(false),
        }
    }

    /// Whether a session's record exists here.
    pub fn session_record_exists(&self, token: &str) -> ApiResult<bool> {
        if token.len() > MAX_SECRET_BYTES {
            return Ok(false);
        }
        Ok(self.control.get(Space::Sessions, &sha256_hex(token))?.is_some())
    }

    /// Forgets the cached verification of a key (on revocation).
    pub fn forget_key(&self, id: &str) {
        self.verified_keys.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

fn validate_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest("a username is 1..=64 of letters, digits, - _ . @".into()))
    }
}
