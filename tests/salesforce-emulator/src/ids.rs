//! Salesforce record ids.
//!
//! A record id is 15 case-sensitive characters: a 3-character key prefix naming
//! the object (`00T` Task, `003` Contact…), an instance part and a base-62
//! record number. The API answers with the 18-character form, which appends a
//! checksum of the letter case so that case-insensitive tools keep ids apart.
//! Clients may send either form; the emulator stores and answers the 18-character
//! one, as Salesforce does.

/// Digits of the base-62 record number, in ASCII order so that ids of one length
/// sort in creation order.
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Characters of the 3-character case checksum.
const SUFFIX: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The instance part of every id the emulator makes (pod `5g`, reserved `0`).
const INSTANCE: &str = "5g0";

/// Builds the 18-character id with the given key prefix and record number.
pub(crate) fn make(key_prefix: &str, number: u64) -> String {
    let mut digits = [b'0'; 9];
    let mut n = number;
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    let mut id = String::with_capacity(18);
    id.push_str(key_prefix);
    id.push_str(INSTANCE);
    id.extend(digits.iter().map(|&b| b as char));
    let suffix = checksum(&id);
    id.push_str(&suffix);
    id
}

/// Returns the 18-character form of `text` when it is a well-formed 15- or
/// 18-character id (an 18-character id must carry the right checksum), or
/// `None` when it is not an id at all.
pub(crate) fn normalize(text: &str) -> Option<String> {
    if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match text.len() {
        15 => Some(format!("{text}{}", checksum(text))),
        18 => {
            let (base, given) = text.split_at(15);
            (checksum(base).eq_ignore_ascii_case(given))
                .then(|| format!("{base}{}", checksum(base)))
        }
        _ => None,
    }
}

/// The key prefix (first three characters) of a normalised id.
pub(crate) fn key_prefix(id: &str) -> &str {
    id.get(..3).unwrap_or("")
}

/// The case checksum of a 15-character id.
fn checksum(base: &str) -> String {
    base.as_bytes()
        .chunks(5)
        .take(3)
        .map(|chunk| {
            let flags = chunk
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_ascii_uppercase())
                .fold(0usize, |acc, (i, _)| acc | (1 << i));
            SUFFIX[flags] as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_a_known_salesforce_id() {
        // Chunks 001A0, 00000, 6Vm9r have capitals at 1<<3, none, 1<<1: I, A, C.
        assert_eq!(
            normalize("001A0000006Vm9r").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
    }

    #[test]
    fn made_ids_are_18_characters_with_prefix_and_sort_in_order() {
        let a = make("00T", 1);
        let b = make("00T", 61);
        let c = make("00T", 62);
        assert_eq!(a.len(), 18);
        assert!(a.starts_with("00T5g0"));
        assert!(a[..15] < b[..15] && b[..15] < c[..15]);
        assert_eq!(normalize(&a).as_deref(), Some(a.as_str()));
        assert_eq!(normalize(&a[..15]).as_deref(), Some(a.as_str()));
    }

    #[test]
    fn rejects_malformed_ids() {
        assert_eq!(normalize("abc"), None);
        assert_eq!(normalize("001A0000006Vm9rXXX"), None);
        assert_eq!(normalize("001A0000006Vm9-"), None);
        assert_eq!(key_prefix("00Q5g0000000001"), "00Q");
    }
}
