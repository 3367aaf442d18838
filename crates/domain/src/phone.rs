//! E.164 phone numbers, validated against the numbering plan of their country.
//!
//! A phone number is contact data: it never appears in logs or metrics. Use [`Phone::log_id`]
//! where a log line needs to tell two recipients apart.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Why a string is not a phone number Careline can message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number must be in E.164 form: '+' followed by 8 to 15 digits, country code first")]
    NotE164,
    #[error("phone number is not a valid number for its country")]
    Invalid,
}

/// A validated phone number in E.164 form (`+919812345678`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(String);

impl Phone {
    /// Parses a number written in E.164 (`+` and digits; spaces, dots, dashes and brackets are
    /// tolerated) and checks it against libphonenumber's metadata.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let trimmed = input.trim();
        if !trimmed.starts_with('+') {
            return Err(PhoneError::NotE164);
        }
        let digits: String = trimmed[1..].chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
        if digits.len() < 8
            || digits.len() > 15
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(PhoneError::NotE164);
        }
        let e164 = format!("+{digits}");
        let parsed = phonenumber::parse(None, &e164).map_err(|_| PhoneError::Invalid)?;
        if !phonenumber::is_valid(&parsed) {
            return Err(PhoneError::Invalid);
        }
        Ok(Self(parsed.format().mode(phonenumber::Mode::E164).to_string()))
    }

    /// Builds a phone from the digits-only form WhatsApp uses (`wa_id`, `from`).
    pub fn from_wa_id(wa_id: &str) -> Result<Self, PhoneError> {
        Self::parse(&format!("+{}", wa_id.trim_start_matches('+')))
    }

    /// `+919812345678`
    pub fn e164(&self) -> &str {
        &self.0
    }

    /// `919812345678`: what the Cloud API's `to` and `wa_id` carry.
    pub fn wa_id(&self) -> &str {
        &self.0[1..]
    }

    /// A stable, non-reversible-at-a-glance tag for logs: the first 12 hex digits of SHA-256.
    pub fn log_id(&self) -> String {
        log_id_of(&self.0)
    }
}

/// The log tag of any identifier that must not be logged in clear.
pub fn log_id_of(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    hex::encode(&digest[..6])
}

impl fmt::Debug for Phone {
    // Debug output ends up in logs; never print the number itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.log_id())
    }
}

impl Serialize for Phone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Phone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Phone::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_mobile_numbers_from_several_countries() {
        for n in ["+919812345678", "+14155552671", "+4915123456789", "+34612345678", "+5511987654321"] {
            assert_eq!(Phone::parse(n).unwrap().e164(), n, "{n}");
        }
    }

    #[test]
    fn normalises_separators() {
        assert_eq!(Phone::parse(" +91 98123-45678 ").unwrap().e164(), "+919812345678");
    }

    #[test]
    fn refuses_what_is_not_e164() {
        assert_eq!(Phone::parse("09812345678"), Err(PhoneError::NotE164));
        assert_eq!(Phone::parse("+12"), Err(PhoneError::NotE164));
        assert_eq!(Phone::parse("+91abc"), Err(PhoneError::NotE164));
        assert_eq!(Phone::parse(""), Err(PhoneError::NotE164));
    }

    #[test]
    fn refuses_numbers_invalid_for_their_country() {
        assert_eq!(Phone::parse("+9100000000"), Err(PhoneError::Invalid));
    }

    #[test]
    fn debug_output_hides_the_number() {
        let p = Phone::parse("+919812345678").unwrap();
        assert!(!format!("{p:?}").contains("9812345678"));
        assert_eq!(Phone::from_wa_id("919812345678").unwrap(), p);
    }
}
