//! TOTP (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits) and the base32 its secrets are written in.

use ring::hmac;

/// Seconds per TOTP step.
pub const STEP_SECONDS: u64 = 30;
/// Steps accepted on either side of the current one (clock skew of a phone).
pub const SKEW_STEPS: u64 = 1;
/// Secret length in bytes (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;
const DIGITS_MOD: u32 = 1_000_000;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes base32 (case-insensitive, padding and spaces ignored); `None` for other characters.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for c in text.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())?;
        buffer = (buffer << 5) | v as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// The code of time step `step`.
pub fn code_at_step(secret: &[u8], step: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0f);
    let word = mac.get(offset..offset + 4).map_or(0, |b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]));
    format!("{:06}", word % DIGITS_MOD)
}

/// The code at unix time `unix_seconds`.
pub fn code(secret: &[u8], unix_seconds: u64) -> String {
    code_at_step(secret, unix_seconds / STEP_SECONDS)
}

/// The step `given` matches at `unix_seconds` (within the skew), if any. Comparison in constant
/// time per candidate.
pub fn verify(secret: &[u8], given: &str, unix_seconds: u64) -> Option<u64> {
    let now = unix_seconds / STEP_SECONDS;
    let given = given.trim();
    (now.saturating_sub(SKEW_STEPS)..=now.saturating_add(SKEW_STEPS))
        .find(|step| crate::auth::ct_eq(code_at_step(secret, *step).as_bytes(), given.as_bytes()))
}

/// The `otpauth://` URI authenticator apps read (usually from a QR code).
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits=6&period={STEP_SECONDS}",
        enc(issuer),
        enc(account),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vectors() {
        // RFC 6238 appendix B, SHA1, truncated to 6 digits.
        let secret = b"12345678901234567890";
        assert_eq!(code(secret, 59), "287082");
        assert_eq!(code(secret, 1_111_111_109), "081804");
        assert_eq!(code(secret, 1_234_567_890), "005924");
        assert_eq!(code(secret, 2_000_000_000), "279037");
    }

    #[test]
    fn base32_round_trip() {
        for len in 0..25 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base32_encode(&bytes);
            assert_eq!(base32_decode(&text).unwrap(), bytes);
        }
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert!(base32_decode("not*base32").is_none());
    }

    #[test]
    fn skew_is_bounded() {
        let secret = b"12345678901234567890";
        let at = 1_000_000_000;
        assert!(verify(secret, &code(secret, at - 30), at).is_some());
        assert!(verify(secret, &code(secret, at + 30), at).is_some());
        assert!(verify(secret, &code(secret, at - 90), at).is_none());
    }
}
