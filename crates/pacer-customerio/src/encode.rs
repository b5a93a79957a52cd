//! Path segments and event ids: percent-encoding by the `percent-encoding` crate (rust-url's),
//! ULIDs by the `ulid` crate (ulid-rs).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use ulid::Ulid;

thread_local! {
    /// Seeded once per thread from the OS: fast, and unpredictable enough for unique ids.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// What [`path_segment`] escapes: every byte but the RFC 3986 unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`); bytes outside ASCII always are.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `value` as one path segment: everything but the RFC 3986 unreserved
/// characters (`A-Z a-z 0-9 - . _ ~`), so `/`, `..`, `?`, `#`, `@` and `+` cannot change which
/// endpoint a request reaches. Customer.io's own libraries encode the same way.
#[must_use]
pub fn path_segment(value: &str) -> String {
    // "." and ".." are unreserved but mean something in a path: encode them whole.
    match value {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => utf8_percent_encode(value, SEGMENT).to_string(),
    }
}

/// A new ULID (48-bit millisecond time, 80 random bits, Crockford base32): the event `id`
/// Customer.io deduplicates on.
#[must_use]
pub fn ulid() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let mut random = [0_u8; 16];
    RNG.with(|rng| rng.borrow_mut().fill_bytes(&mut random));
    format_ulid(millis, u128::from_be_bytes(random))
}

/// A ULID from its parts: the low 48 bits of `millis` and the low 80 bits of `entropy`, in
/// Crockford base32. For ids derived from data (stable across runs) rather than drawn.
#[must_use]
pub fn format_ulid(millis: u64, entropy: u128) -> String {
    Ulid::from_parts(millis, entropy).to_string()
}

/// Whether `text` is a ULID as Customer.io requires of an event `id`: 26 characters of
/// Crockford base32 (either case), the first at most `7` (a ULID is 128 bits).
#[must_use]
pub fn is_ulid(text: &str) -> bool {
    // 26 characters carry 130 bits; ulid-rs drops the top two, so a first character over `7`
    // (a value that does not fit) is refused here.
    text.as_bytes().first().is_some_and(|&first| first <= b'7') && Ulid::from_string(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_are_recognised() {
        assert!(is_ulid(&ulid()));
        assert!(is_ulid(&format_ulid(u64::MAX, u128::MAX)));
        assert!(is_ulid("01arz3ndektsv4rrffq69g5fav"));
        for not in [
            "",
            "01ARZ3NDEKTSV4RRFFQ69G5FA",
            "81ARZ3NDEKTSV4RRFFQ69G5FAV",
            "01ARZ3NDEKTSV4RRFFQ69G5FAU",
            "01ARZ3NDEKTSV4RRFFQ69G5FAVé",
        ] {
            assert!(!is_ulid(not), "{not}");
        }
    }

    #[test]
    fn hostile_ids_stay_one_segment() {
        assert_eq!(
            path_segment("../../v1/send/email"),
            "..%2F..%2Fv1%2Fsend%2Femail"
        );
        assert_eq!(
            path_segment("jane+news@example.com"),
            "jane%2Bnews%40example.com"
        );
        assert_eq!(path_segment("a b?c#d%"), "a%20b%3Fc%23d%25");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("é"), "%C3%A9");
        assert_eq!(path_segment("Az09-._~"), "Az09-._~");
    }

    #[test]
    fn ulids_are_26_crockford_characters_and_unique() {
        let a = ulid();
        let b = ulid();
        assert_eq!(a.len(), 26);
        assert!(a
            .bytes()
            .all(|c| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&c)));
        assert_ne!(a, b);
        // The first character encodes the top 3 bits of the time: 0 until the year 10889.
        assert!(a.starts_with('0'));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any identifier becomes one path segment of unreserved characters and escapes, and
        /// decodes back to itself: no id can reach another endpoint or lose a character.
        #[test]
        fn path_segments_are_safe_and_lossless(id in any::<String>()) {
            let encoded = path_segment(&id);
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            prop_assert!(encoded != "." && encoded != "..");
            let decoded = percent_encoding::percent_decode_str(&encoded).decode_utf8();
            prop_assert_eq!(decoded.as_deref().ok(), Some(id.as_str()));
        }

        /// With the characters that matter in a URL over-represented: no `/`, `?` or `#` ever
        /// stays as it is, a `%` only starts an escape of two hex digits, and the crate's own
        /// decoder gives the id back.
        #[test]
        fn url_delimiters_never_survive_unescaped(id in prop_oneof![
            any::<String>(),
            "[/?#%.a-zA-Z0-9 +@~é]{0,24}",
        ]) {
            let encoded = path_segment(&id);
            prop_assert!(!encoded.contains(['/', '?', '#']), "{encoded}");
            let bytes = encoded.as_bytes();
            for (at, _) in encoded.match_indices('%') {
                prop_assert!(
                    bytes.len() >= at + 3 && bytes[at + 1..at + 3].iter().all(u8::is_ascii_hexdigit),
                    "a bare % at {at} in {encoded}"
                );
            }
            let decoded = percent_encoding::percent_decode_str(&encoded).decode_utf8();
            prop_assert_eq!(decoded.as_deref().ok(), Some(id.as_str()));
        }

        /// ulid-rs formats every (time, entropy) pair exactly as the hand-written encoder it
        /// replaced: ids an importer derived before the switch are derived again, byte for byte.
        #[test]
        fn ulids_format_as_before_the_crate(millis in any::<u64>(), entropy in any::<u128>()) {
            const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
            let value = (u128::from(millis & ((1 << 48) - 1)) << 80) | (entropy & ((1 << 80) - 1));
            let before: String = (0..26)
                .map(|position| ALPHABET[((value >> (125 - 5 * position)) & 31) as usize] as char)
                .collect();
            let formatted = format_ulid(millis, entropy);
            prop_assert!(is_ulid(&formatted));
            prop_assert_eq!(formatted, before);
        }

        #[test]
        fn error_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = crate::ApiError::parse(&body).to_string();
        }

        #[test]
        fn near_miss_error_bodies_never_panic(body in r#"\{"(meta|errors)":(\[|\{)("(error|errors|detail|reason|batch_index)":)?[0-9a-z"\[\]{},:]{0,40}"#) {
            let _ = crate::ApiError::parse(body.as_bytes()).to_string();
        }
    }
}
