//! Customer.io's documented size limits, and the checks built on them: one place for the
//! client (which checks before it sends) and the bulk importer (which checks each record, so a
//! bad one is dead-lettered alone rather than refused with its whole batch).
//!
//! Sources: the Track API reference's "Customer limits" and "v2 API Limits", the Pipelines API
//! reference's request limits, and the App API reference's "Transactional Message Limits".

use serde_json::{Map, Value};

use crate::encode::is_ulid;

/// An identifier (a person's `id` or `email`, an object id): 150 bytes at most ("Customer
/// limits": "ID ≤ 150 bytes").
pub const MAX_ID_BYTES: usize = 150;
/// One attribute value: 1000 bytes at most ("Customer limits"); Customer.io answers a longer
/// one with 400 "value for attribute '…' cannot be longer than 1000 bytes".
pub const MAX_VALUE_BYTES: usize = 1000;
/// Unique attributes per person or per identify call: 300 at most ("Customer limits").
pub const MAX_ATTRIBUTES: usize = 300;
/// One Track v2 operation (`/api/v2/entity`, or one entry of a batch) or one Pipelines call:
/// under 32 KB ("v2 API Limits": "smaller than 32kb").
pub const MAX_OPERATION_BYTES: usize = 32 * 1024;
/// One Track v2 or Pipelines batch request: under 500 KB ("v2 API Limits"; Pipelines says the
/// same, and answers 200 without processing a larger one).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// The operations one Track v2 batch request holds, in bytes, each counted with the comma after
/// it: [`MAX_BATCH_BYTES`] less the `{"batch":[` … `]}` envelope. Operations packed under it
/// go out as one request of [`Requests::batch_encoded`](crate::Requests::batch_encoded).
pub const MAX_BATCH_OPERATIONS_BYTES: usize = MAX_BATCH_BYTES - envelope_bytes("batch");
/// A transactional message without attachments: 1 MB at most ("Transactional Message
/// Limits").
pub const MAX_TRANSACTIONAL_BYTES: usize = 1024 * 1024;

/// The bytes of `{"<field>":[` and `]}` around a batch's entries.
pub(crate) const fn envelope_bytes(field: &str) -> usize {
    field.len() + 7
}

/// Checks an identifier against Customer.io's limits and against what URL handling would
/// change: not empty, not whitespace only, no control characters, not `.` or `..`, at most
/// [`MAX_ID_BYTES`]. The one rule for the client (before it sends), the bulk importer (per
/// record) and anything else that builds requests from ids.
///
/// `.` and `..` are refused rather than escaped: servers and proxies decode `%2E` and then
/// normalise the path (RFC 3986 §5.2.4), so `/customers/%2E%2E` can reach `/customers` or
/// another route. Control characters and blank ids are refused because no real person has one
/// and a proxy or log line would mangle them.
///
/// # Errors
/// Why Customer.io would refuse it (or another route would get it), naming it `what` (`"id"`,
/// `"email"`, …).
pub fn check_identifier(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        Err(format!("{what} is empty"))
    } else if id.len() > MAX_ID_BYTES {
        Err(format!(
            "{what} is {} bytes, over Customer.io's {MAX_ID_BYTES}-byte limit",
            id.len()
        ))
    } else {
        check_path_segment(what, id)
    }
}

/// The part of [`check_identifier`] that any value put in a URL path needs, whatever its length
/// (a device token may be longer than an id): not empty, not whitespace only, no control
/// characters, not `.` or `..`.
///
/// # Errors
/// Why the value cannot be one path segment, naming it `what`.
pub fn check_path_segment(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err(format!("{what} is empty"))
    } else if value == "." || value == ".." {
        Err(format!(
            "{what} is {value:?}, a path step that URL normalisation would resolve to another route"
        ))
    } else if value.chars().any(char::is_control) {
        Err(format!("{what} contains a control character"))
    } else if value.chars().all(char::is_whitespace) {
        Err(format!("{what} is only whitespace"))
    } else {
        Ok(())
    }
}

/// Checks attributes (of a person, or an event's data) against Customer.io's limits: at most
/// [`MAX_ATTRIBUTES`], each value at most [`MAX_VALUE_BYTES`] (a string's bytes, any other
/// value's JSON text).
///
/// # Errors
/// Why Customer.io would refuse them, naming the attribute at fault.
pub fn check_attributes(attributes: &Map<String, Value>) -> Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "{} attributes, over Customer.io's limit of {MAX_ATTRIBUTES}",
            attributes.len()
        ));
    }
    for (name, value) in attributes {
        let size = value
            .as_str()
            .map_or_else(|| value.to_string().len(), str::len);
        if size > MAX_VALUE_BYTES {
            return Err(format!(
                "value of {name:?} is {size} bytes, over Customer.io's {MAX_VALUE_BYTES}-byte limit"
            ));
        }
    }
    Ok(())
}

/// Checks an event's deduplication `id`: Customer.io requires a ULID (see
/// [`is_ulid`](crate::is_ulid)).
///
/// # Errors
/// Why Customer.io would refuse it.
pub fn check_event_id(id: &str) -> Result<(), String> {
    if is_ulid(id) {
        Ok(())
    } else {
        Err(format!(
            "event id {id:?} is not a ULID (26 characters of Crockford base32), which Customer.io requires"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_limit_is_the_last_size_accepted() {
        assert!(check_identifier("id", &"x".repeat(MAX_ID_BYTES)).is_ok());
        let long = check_identifier("id", &"x".repeat(MAX_ID_BYTES + 1)).unwrap_err();
        assert!(long.contains("150-byte"), "{long}");
        assert_eq!(check_identifier("email", "").unwrap_err(), "email is empty");
        for normalised in [".", ".."] {
            let why = check_identifier("id", normalised).unwrap_err();
            assert!(why.contains("normalisation"), "{why}");
        }
        for blank in [" ", "\t", "\u{3000}", " \u{a0} "] {
            let why = check_identifier("id", blank).unwrap_err();
            assert!(
                why.contains("whitespace") || why.contains("control"),
                "{why}"
            );
        }
        for control in ["a\nb", "a\u{0}", "\u{7f}x", "x\u{85}"] {
            let why = check_identifier("id", control).unwrap_err();
            assert!(why.contains("control character"), "{why}");
        }
        assert!(check_identifier("id", "...").is_ok());
        assert!(check_identifier("id", " jane ").is_ok());

        let at_limit = json!({"bio": "x".repeat(MAX_VALUE_BYTES), "age": 3});
        assert!(check_attributes(at_limit.as_object().unwrap()).is_ok());
        let over = json!({"bio": "x".repeat(MAX_VALUE_BYTES + 1)});
        let over = check_attributes(over.as_object().unwrap()).unwrap_err();
        assert!(
            over.contains("\"bio\"") && over.contains("1000-byte"),
            "{over}"
        );
        let many: Map<String, Value> = (0..=MAX_ATTRIBUTES)
            .map(|n| (format!("a{n}"), json!(n)))
            .collect();
        assert!(check_attributes(&many)
            .unwrap_err()
            .contains("301 attributes"));

        assert!(check_event_id("01ARZ3NDEKTSV4RRFFQ69G5FAV").is_ok());
        assert!(check_event_id("MINE").unwrap_err().contains("ULID"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Whatever the id, an accepted one is non-empty, within the size limit, free of
        /// control characters, not blank, and not a path step; and every id that is all of
        /// those is accepted.
        #[test]
        fn accepted_ids_are_exactly_the_safe_ones(id in proptest::prop_oneof![
            proptest::prelude::any::<String>(),
            "[. \t\n\r\u{0}\u{7f}\u{85}\u{a0}\u{2028}\u{3000}a]{0,4}",
        ]) {
            let safe = !id.is_empty()
                && id.len() <= MAX_ID_BYTES
                && id != "."
                && id != ".."
                && !id.chars().any(char::is_control)
                && !id.trim().is_empty();
            proptest::prop_assert_eq!(check_identifier("id", &id).is_ok(), safe, "{:?}", id);
        }
    }

    #[test]
    fn the_batch_envelope_is_what_join_writes() {
        assert_eq!(envelope_bytes("batch"), br#"{"batch":[]}"#.len());
        assert_eq!(MAX_BATCH_OPERATIONS_BYTES, 500 * 1024 - 12);
    }
}
