//! Keeping contact data out of logs.
//!
//! A phone number is personal data: log lines and metric labels only ever carry a masked form
//! that is enough to tell two recipients apart in a trace, not enough to call anyone.

/// How many trailing digits [`mask_phone`] keeps.
const VISIBLE_DIGITS: usize = 4;

/// `"919812345678"` → `"***5678"`; numbers too short to mask meaningfully become `"***"`.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 2 * VISIBLE_DIGITS {
        return "***".to_owned();
    }
    let tail: String = digits[digits.len() - VISIBLE_DIGITS..].iter().collect();
    format!("***{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_four_digits_survive() {
        assert_eq!(mask_phone("919812345678"), "***5678");
        assert_eq!(mask_phone("+91 98123-45678"), "***5678");
        assert_eq!(mask_phone("1234567"), "***");
        assert_eq!(mask_phone(""), "***");
        assert_eq!(mask_phone("not a number at all"), "***");
    }
}
