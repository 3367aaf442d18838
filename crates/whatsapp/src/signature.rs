//! `X-Hub-Signature-256`: how a webhook proves it comes from Meta.
//!
//! Meta signs every webhook POST with `sha256=<hex>` where hex is HMAC-SHA256 keyed with the
//! app secret over the **exact bytes of the body**. Meta sends the body already escaped (`/` as
//! `\/`, non-ASCII as `\uXXXX`), so the only correct input is the raw bytes as received:
//! parsing and re-serialising the JSON changes them and the signature no longer matches (the
//! classic "works until a message contains a slash or an accent" bug). Verify before parsing,
//! and compare in constant time so a forger learns nothing from response timing.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header Meta puts the signature in.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

const PREFIX: &str = "sha256=";
const HMAC_SHA256_LEN: usize = 32;

/// Why a webhook's signature is refused. Each answers 401/403 without processing the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("malformed X-Hub-Signature-256 header")]
    Malformed,
    /// Well-formed, but not the HMAC of this body under our app secret.
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
    /// The configured app secret is empty: anyone could sign with it, so nothing is trusted.
    #[error("the app secret is empty; refusing to verify")]
    EmptySecret,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(app_secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (long keys are hashed), so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(app_secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    mac
}

/// Checks `header` (the value of `X-Hub-Signature-256`, if present) against `raw_body` as
/// received on the wire.
pub fn verify_signature(app_secret: &[u8], raw_body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    if app_secret.is_empty() {
        return Err(SignatureError::EmptySecret);
    }
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_digest = header
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .and_then(|_| header.get(PREFIX.len()..))
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    if expected.len() != HMAC_SHA256_LEN {
        return Err(SignatureError::Malformed);
    }
    mac(app_secret, raw_body).verify_slice(&expected).map_err(|_| SignatureError::Mismatch)
}

/// The `X-Hub-Signature-256` value Meta would send for `body` (`sha256=<lowercase hex>`).
/// Used by the sandbox and by tests; a consumer only ever verifies.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let digest = mac(app_secret, body).finalize().into_bytes();
    format!("{PREFIX}{}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"app-secret-for-tests";
    const BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;

    #[test]
    fn a_body_signed_with_the_secret_verifies() {
        let header = sign(SECRET, BODY);
        assert!(header.starts_with("sha256="));
        assert_eq!(header.len(), 7 + 64);
        assert_eq!(verify_signature(SECRET, BODY, Some(&header)), Ok(()));
        // Upper-case hex and surrounding whitespace are still the same signature.
        let upper = format!("sha256={}", header[7..].to_ascii_uppercase());
        assert_eq!(verify_signature(SECRET, BODY, Some(&upper)), Ok(()));
        assert_eq!(verify_signature(SECRET, BODY, Some(&format!(" {header} "))), Ok(()));
    }

    #[test]
    fn a_known_vector_matches() {
        // HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            sign(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn a_forged_signature_is_a_mismatch() {
        let forged = sign(b"another-secret", BODY);
        assert_eq!(verify_signature(SECRET, BODY, Some(&forged)), Err(SignatureError::Mismatch));
        let good = sign(SECRET, BODY);
        let mut tampered = BODY.to_vec();
        tampered[2] ^= 1;
        assert_eq!(verify_signature(SECRET, &tampered, Some(&good)), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_missing_header_is_missing() {
        assert_eq!(verify_signature(SECRET, BODY, None), Err(SignatureError::Missing));
    }

    #[test]
    fn malformed_headers_are_malformed() {
        let hex64 = "a".repeat(64);
        for header in [
            "",
            "sha256=",
            "sha1=abcdef",
            &hex64,
            &format!("sha256={}", "a".repeat(63)),
            &format!("sha256={}", "a".repeat(62)),
            &format!("sha256={}", "a".repeat(66)),
            &format!("sha256={}", "z".repeat(64)),
            "sha256=é",
            "é",
        ] {
            assert_eq!(verify_signature(SECRET, BODY, Some(header)), Err(SignatureError::Malformed), "{header:?}");
        }
    }

    #[test]
    fn an_empty_secret_is_refused_even_with_a_matching_signature() {
        let header = sign(b"", BODY);
        assert_eq!(verify_signature(b"", BODY, Some(&header)), Err(SignatureError::EmptySecret));
    }

    #[test]
    fn only_the_raw_bytes_verify_not_a_reserialised_body() {
        // What Meta sends: `/` escaped as `\/`, non-ASCII as `\uXXXX`.
        let raw = br#"{"entry":[{"text":{"body":"mang\u00e9 at 10\/11, see https:\/\/example.org"}}]}"#;
        let header = sign(SECRET, raw);
        assert_eq!(verify_signature(SECRET, raw, Some(&header)), Ok(()));

        // What a framework would hand over after parsing and serialising again.
        let value: serde_json::Value = serde_json::from_slice(raw).unwrap();
        let reserialised = serde_json::to_vec(&value).unwrap();
        assert_ne!(reserialised, raw.to_vec());
        assert!(String::from_utf8_lossy(&reserialised).contains("mangé at 10/11"));
        assert_eq!(verify_signature(SECRET, &reserialised, Some(&header)), Err(SignatureError::Mismatch));
    }
}
