//! API keys: kept only as argon2id hashes (PHC strings, one a line) in `DATA/auth/api_keys`, and
//! verified once per connection.
//!
//! Keys are 32 random bytes (64 hex digits), so the hash protects a key read from disk rather than
//! a guessable password; the argon2 cost is therefore modest (`ARGON2_*`), which keeps a connection
//! handshake cheap even in debug builds.

use super::IngressError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use std::path::{Path, PathBuf};

/// Memory cost in KiB.
const ARGON2_MEMORY_KIB: u32 = 8 * 1024;
/// Iterations.
const ARGON2_ITERATIONS: u32 = 1;
/// Lanes.
const ARGON2_LANES: u32 = 1;
/// Random bytes in a generated key.
const API_KEY_BYTES: usize = 32;
/// Longest API key accepted on the wire (longer ones are refused before hashing).
pub const MAX_API_KEY_BYTES: usize = 256;

fn hasher() -> Result<Argon2<'static>, IngressError> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES, None)
        .map_err(|e| IngressError::Auth(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The hashes of the accepted keys.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    hashes: Vec<String>,
}

/// The key store's file under a data dir.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("auth").join("api_keys")
}

/// A fresh random key.
pub fn generate_key() -> String {
    let mut bytes = [0u8; API_KEY_BYTES];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl ApiKeys {
    /// Loads the stored hashes; adds `extra` (a plaintext key, e.g. from `--api-key-file`) when it
    /// is not accepted yet; and when no key exists at all, generates one. Returns the store and
    /// the generated key, which is shown once and never stored in clear.
    pub fn load_or_init(
        data_dir: &Path,
        extra: Option<&str>,
    ) -> Result<(ApiKeys, Option<String>), IngressError> {
        let path = key_file(data_dir);
        let mut keys = match std::fs::read_to_string(&path) {
            Ok(text) => ApiKeys {
                hashes: text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ApiKeys { hashes: Vec::new() },
            Err(e) => return Err(IngressError::Auth(format!("{}: {e}", path.display()))),
        };
        let mut generated = None;
        let mut changed = false;
        if let Some(key) = extra {
            if key.is_empty() || key.len() > MAX_API_KEY_BYTES {
                return Err(IngressError::Auth(format!("an API key must be 1..={MAX_API_KEY_BYTES} bytes")));
            }
            if !keys.verify(key) {
                keys.hashes.push(hash(key)?);
                changed = true;
            }
        }
        if keys.hashes.is_empty() {
            let key = generate_key();
            keys.hashes.push(hash(&key)?);
            generated = Some(key);
            changed = true;
        }
        if changed {
            keys.save(&path)?;
        }
        Ok((keys, generated))
    }

    fn save(&self, path: &Path) -> Result<(), IngressError> {
        let mut text = self.hashes.join("\n");
        text.push('\n');
        super::private_file::write_private(path, text.as_bytes())
            .map_err(|e| IngressError::Auth(format!("{}: {e}", path.display())))
    }

    /// Whether `key` matches one of the stored hashes. Slow by design: call it off the async
    /// threads (`spawn_blocking`).
    pub fn verify(&self, key: &str) -> bool {
        if key.is_empty() || key.len() > MAX_API_KEY_BYTES {
            return false;
        }
        self.hashes.iter().any(|stored| match PasswordHash::new(stored) {
            // The parameters come from the stored hash, so a cost change keeps old hashes valid.
            Ok(parsed) => Argon2::default().verify_password(key.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        })
    }
}

fn hash(key: &str) -> Result<String, IngressError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()?
        .hash_password(key.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IngressError::Auth(e.to_string()))
}
