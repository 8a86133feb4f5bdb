//! Caller numbers as a CRM holds them.
//!
//! Trunks present a caller as `+14155550100`, `14155550100`,
//! `4155550100` or `004420…`; people type the same number into Salesforce
//! as `(415) 555-0100`, `+1 415 555 0100` or `020 7946 0018`, and a phone
//! search there compares the digits as typed. So a caller is read once,
//! with libphonenumber's metadata and the deployment's home region, into
//! its E.164 form, and searched under every digit string a person in the
//! org may have typed for it: international, national with its trunk
//! prefix, and the bare national number.
//!
//! Pure functions, no I/O.

use phonenumber::country;
use phonenumber::Mode;

/// A caller number understood as a telephone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerNumber {
    /// `+14155550100`: the cache key and what the agent is shown.
    pub e164: String,
    /// Digit strings to search for, most specific first, without
    /// duplicates (`14155550100`, `4155550100`).
    pub search_digits: Vec<String>,
}

/// Why a caller is not looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("the caller withheld its number")]
    Withheld,
    #[error("`{0}` is not a telephone number (an extension, a SIP name, or too short)")]
    NotANumber(String),
}

/// The home region (`US`, `GB`, `DE`…) numbers without a country code are
/// read in; `None` for a code libphonenumber does not know.
pub fn region(code: &str) -> Option<country::Id> {
    code.trim().to_ascii_uppercase().parse().ok()
}

/// Reads a presented caller (`From` user part, P-Asserted-Identity…) as a
/// number of `home` unless it says otherwise.
pub fn normalise(raw: &str, home: country::Id) -> Result<CallerNumber, NumberError> {
    let trimmed = raw.trim();
    let lower = trimmed.to_ascii_lowercase();
    if trimmed.is_empty()
        || lower == "anonymous"
        || lower == "unknown"
        || lower == "restricted"
        || lower == "private"
    {
        return Err(NumberError::Withheld);
    }
    let cleaned: String = trimmed
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
        .collect();
    let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
    // Extensions and short codes are users of the company, not customers;
    // E.164 allows at most 15 digits.
    if digits.len() < 6 || digits.len() > 17 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NumberError::NotANumber(raw.to_owned()));
    }
    let parsed = if cleaned.starts_with('+') {
        phonenumber::parse(None, &cleaned)
            .ok()
            .filter(phonenumber::is_valid)
    } else {
        // National (or with the international prefix), else international
        // digits a trunk sent without their `+`.
        phonenumber::parse(Some(home), &cleaned)
            .ok()
            .filter(phonenumber::is_valid)
            .or_else(|| {
                phonenumber::parse(None, format!("+{cleaned}"))
                    .ok()
                    .filter(phonenumber::is_valid)
            })
    };
    let Some(number) = parsed else {
        return Err(NumberError::NotANumber(raw.to_owned()));
    };
    let e164 = number.format().mode(Mode::E164).to_string();
    let mut search_digits = Vec::with_capacity(3);
    let mut add = |s: String| {
        if s.len() >= 6 && !search_digits.contains(&s) {
            search_digits.push(s);
        }
    };
    add(only_digits(&e164));
    add(only_digits(
        &number.format().mode(Mode::National).to_string(),
    ));
    let national = number.national();
    add(format!(
        "{}{}",
        "0".repeat(national.zeros() as usize),
        national.value()
    ));
    Ok(CallerNumber {
        e164,
        search_digits,
    })
}

fn only_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> country::Id {
        region("us").expect("US is a region")
    }

    #[test]
    fn every_form_of_a_us_caller_is_the_same_number() {
        for raw in [
            "+14155550100",
            "14155550100",
            "4155550100",
            "(415) 555-0100",
            "+1 415 555 0100",
            "011 1 415 555 0100",
        ] {
            let n = normalise(raw, us()).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(n.e164, "+14155550100", "{raw}");
            assert_eq!(n.search_digits, vec!["14155550100", "4155550100"], "{raw}");
        }
    }

    #[test]
    fn a_foreign_caller_is_searched_with_its_own_trunk_prefix() {
        let n = normalise("+442079460018", us()).expect("a London number");
        assert_eq!(n.e164, "+442079460018");
        assert_eq!(
            n.search_digits,
            vec!["442079460018", "02079460018", "2079460018"]
        );
        // From a UK trunk, nationally and internationally dialled.
        let gb = region("GB").expect("GB");
        assert_eq!(
            normalise("020 7946 0018", gb).expect("national").e164,
            "+442079460018"
        );
        assert_eq!(
            normalise("00442079460018", gb)
                .expect("international prefix")
                .e164,
            "+442079460018"
        );
        // International digits without their `+`, read in another home.
        assert_eq!(
            normalise("442079460018", us()).expect("no plus").e164,
            "+442079460018"
        );
    }

    #[test]
    fn withheld_callers_extensions_and_garbage_are_not_looked_up() {
        assert_eq!(normalise("anonymous", us()), Err(NumberError::Withheld));
        assert_eq!(normalise("", us()), Err(NumberError::Withheld));
        for raw in [
            "1001",
            "alice",
            "+1555",
            "12345678901234567890",
            "415-555-01x0",
            "+999999999",
        ] {
            assert!(
                matches!(normalise(raw, us()), Err(NumberError::NotANumber(_))),
                "{raw}"
            );
        }
        assert!(region("ZZ").is_none());
    }
}
