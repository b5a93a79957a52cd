//! One input record (a person or an event), its validation, and what it becomes on the wire.

use pacer_customerio::{check_attributes, check_event_id, check_identifier};
use serde_json::{json, Map, Value};

/// A person to add or update, or an event to record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A person: an `id` or an `email` (or both), and attributes.
    Person {
        /// The person's id.
        id: Option<String>,
        /// The person's email.
        email: Option<String>,
        /// Attributes to set.
        attributes: Map<String, Value>,
    },
    /// An event of a person.
    Event {
        /// The person's id or email.
        person: String,
        /// The event name.
        name: String,
        /// The dedupe id; derived from the input when absent.
        id: Option<String>,
        /// Unix seconds.
        timestamp: Option<u64>,
        /// Event data.
        data: Map<String, Value>,
    },
}

impl Record {
    /// Reads an NDJSON object:
    /// `{"type":"person","id":"42","email":"a@x.com","attributes":{"plan":"pro"}}` or
    /// `{"type":"event","person":"42","name":"signed_up","id":"…","timestamp":1700000000,"data":{…}}`.
    /// Without `type`, a line with a `name` is an event. Other top-level keys are attributes
    /// (people) or data (events).
    ///
    /// # Errors
    /// A message saying what is wrong, for the dead-letter file.
    pub fn from_json(line: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(line).map_err(|error| format!("invalid JSON: {error}"))?;
        let Value::Object(mut object) = value else {
            return Err("a record must be a JSON object".into());
        };
        let kind = match object.remove("type") {
            Some(Value::String(kind)) => kind,
            Some(_) => return Err("type must be \"person\" or \"event\"".into()),
            None if object.contains_key("name") => "event".into(),
            None => "person".into(),
        };
        let text = |object: &mut Map<String, Value>, key: &str| -> Result<Option<String>, String> {
            match object.remove(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) => Ok(Some(text)),
                Some(Value::Number(number)) => Ok(Some(number.to_string())),
                Some(_) => Err(format!("{key} must be a string")),
            }
        };
        let nested =
            |object: &mut Map<String, Value>, key: &str| -> Result<Map<String, Value>, String> {
                match object.remove(key) {
                    None | Some(Value::Null) => Ok(Map::new()),
                    Some(Value::Object(nested)) => Ok(nested),
                    Some(_) => Err(format!("{key} must be an object")),
                }
            };
        let record = match kind.as_str() {
            "person" => {
                let id = text(&mut object, "id")?;
                let email = text(&mut object, "email")?;
                let mut attributes = nested(&mut object, "attributes")?;
                attributes.extend(object);
                Record::Person {
                    id,
                    email,
                    attributes,
                }
            }
            "event" => {
                let person = text(&mut object, "person")?.ok_or("an event needs a person")?;
                let name = text(&mut object, "name")?.ok_or("an event needs a name")?;
                let id = text(&mut object, "id")?;
                let timestamp = match object.remove("timestamp") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(number)) => {
                        Some(number.as_u64().ok_or("timestamp must be unix seconds")?)
                    }
                    Some(_) => return Err("timestamp must be unix seconds".into()),
                };
                let mut data = nested(&mut object, "data")?;
                data.extend(object);
                Record::Event {
                    person,
                    name,
                    id,
                    timestamp,
                    data,
                }
            }
            other => {
                return Err(format!(
                    "type must be \"person\" or \"event\", not {other:?}"
                ))
            }
        };
        record.validate()?;
        Ok(record)
    }

    /// Reads a CSV row. Columns: `type` (`person`, the default, or `event`), `id`, `email`,
    /// `person` and `name` (events), `event_id`, `timestamp`; every other non-empty column is an
    /// attribute (people) or a data field (events), as a string.
    ///
    /// # Errors
    /// A message saying what is wrong, for the dead-letter file.
    pub fn from_csv(headers: &csv::StringRecord, row: &csv::StringRecord) -> Result<Self, String> {
        if row.len() != headers.len() {
            return Err(format!(
                "expected {} columns, found {}",
                headers.len(),
                row.len()
            ));
        }
        let mut object = Map::new();
        let mut kind = None;
        for (header, cell) in headers.iter().zip(row.iter()) {
            if cell.is_empty() {
                continue;
            }
            match header {
                "type" => kind = Some(cell.to_owned()),
                "event_id" => {
                    object.insert("id".into(), json!(cell));
                }
                "timestamp" => {
                    let seconds: u64 = cell
                        .parse()
                        .map_err(|_| format!("timestamp must be unix seconds, not {cell:?}"))?;
                    object.insert("timestamp".into(), json!(seconds));
                }
                _ => {
                    object.insert(header.to_owned(), json!(cell));
                }
            }
        }
        if let Some(kind) = kind {
            object.insert("type".into(), json!(kind));
        } else if !object.contains_key("type") {
            object.insert("type".into(), json!("person"));
        }
        // Person columns named `id` stay the person's id; an event's `id` came from `event_id`.
        Self::from_json(&Value::Object(object).to_string())
    }

    /// Customer.io's limits (shared with the client, in pacer-customerio) and what a record
    /// needs besides.
    fn validate(&self) -> Result<(), String> {
        match self {
            Record::Person {
                id,
                email,
                attributes,
            } => {
                if id.is_none() && email.is_none() {
                    return Err("a person needs an id or an email".into());
                }
                if let Some(id) = id {
                    check_identifier("id", id)?;
                }
                if let Some(email) = email {
                    check_identifier("email", email)?;
                }
                check_attributes(attributes)
            }
            Record::Event {
                person,
                name,
                id,
                timestamp,
                data,
            } => {
                check_identifier("person", person)?;
                if let Some(id) = id {
                    check_event_id(id)?;
                }
                if name.trim().is_empty() {
                    return Err("the event name is empty".into());
                }
                if timestamp.is_some_and(|t| t > 9_999_999_999) {
                    return Err("timestamp must be unix seconds (10 digits at most)".into());
                }
                check_attributes(data)
            }
        }
    }

    /// The event's dedupe id: its own, or one derived from its content and line number, so that
    /// re-sending it after a retry or a resume never records it twice.
    #[must_use]
    pub fn event_id(&self, line: u64) -> Option<String> {
        let Record::Event {
            person,
            name,
            id,
            timestamp,
            ..
        } = self
        else {
            return None;
        };
        if let Some(id) = id {
            return Some(id.clone());
        }
        let key = format!(
            "{line}\u{1f}{person}\u{1f}{name}\u{1f}{}",
            timestamp.unwrap_or(0)
        );
        Some(derived_ulid(
            timestamp.unwrap_or(0).saturating_mul(1000),
            key.as_bytes(),
        ))
    }

    /// A person's identifier (the `id` when there is one, else the `email`), its kind, and the
    /// attributes to send (the email among them when both are given); `None` for an event.
    #[must_use]
    pub fn person_identity(&self) -> Option<(&str, &'static str, Map<String, Value>)> {
        let Record::Person {
            id,
            email,
            attributes,
        } = self
        else {
            return None;
        };
        let mut attributes = attributes.clone();
        match (id, email) {
            (Some(id), Some(email)) => {
                attributes.insert("email".into(), json!(email));
                Some((id, "id", attributes))
            }
            (Some(id), None) => Some((id, "id", attributes)),
            (None, Some(email)) => Some((email, "email", attributes)),
            (None, None) => None,
        }
    }

    /// The Track v2 operation for `/api/v2/batch`.
    #[must_use]
    pub fn to_operation(&self, line: u64) -> Value {
        match self {
            Record::Person { .. } => {
                let (key, kind, attributes) = self.person_identity().unwrap_or_default();
                json!({"type": "person", "action": "identify", "identifiers": { kind: key }, "attributes": attributes})
            }
            Record::Event {
                person,
                name,
                timestamp,
                data,
                ..
            } => {
                let key = if person.contains('@') { "email" } else { "id" };
                let mut operation = json!({
                    "type": "person",
                    "action": "event",
                    "identifiers": { key: person },
                    "name": name,
                    "id": self.event_id(line),
                    "attributes": data,
                });
                if let Some(timestamp) = timestamp {
                    operation["timestamp"] = json!(timestamp);
                }
                operation
            }
        }
    }
}

/// A ULID-formatted id from a time (milliseconds) and a hash of `key` (two FNV-1a 64-bit hashes
/// with different offsets): stable across runs and versions, unlike `std`'s hasher.
fn derived_ulid(millis: u64, key: &[u8]) -> String {
    let fnv = |offset: u64| {
        key.iter().fold(offset, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let entropy =
        u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64 | u128::from(fnv(0x8422_2325_cbf2_9ce4));
    pacer_customerio::format_ulid(millis, entropy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_people_and_events() {
        let person = Record::from_json(
            r#"{"id":"42","email":"a@x.com","attributes":{"plan":"pro"},"age":3}"#,
        )
        .unwrap();
        let Record::Person { attributes, .. } = &person else {
            panic!()
        };
        assert_eq!(attributes["plan"], "pro");
        assert_eq!(attributes["age"], 3);
        let event = Record::from_json(r#"{"person":"42","name":"paid","data":{"usd":9}}"#).unwrap();
        assert!(matches!(event, Record::Event { .. }));
        let operation = event.to_operation(7);
        assert_eq!(operation["action"], "event");
        assert_eq!(operation["identifiers"]["id"], "42");
        assert_eq!(operation["id"].as_str().unwrap().len(), 26);
    }

    #[test]
    fn refuses_what_customerio_would_refuse() {
        for (line, why) in [
            ("[]", "object"),
            ("{", "invalid JSON"),
            (r#"{"attributes":{}}"#, "id or an email"),
            (r#"{"type":"event","name":"x"}"#, "needs a person"),
            (
                r#"{"type":"event","person":"1","name":"  "}"#,
                "name is empty",
            ),
            (r#"{"type":"thing","id":"1"}"#, "type must be"),
            (r#"{"id":""}"#, "id is empty"),
            // Ids a server would normalise into another path (`/customers/..`): the client's
            // one rule, applied to the input too.
            (r#"{"id":".."}"#, "id"),
            (r#"{"id":"."}"#, "id"),
            (r#"{"id":"   "}"#, "id"),
            (r#"{"id":"a\u0000b"}"#, "id"),
            (r#"{"type":"event","person":"..","name":"x"}"#, "person"),
        ] {
            let error = Record::from_json(line).unwrap_err();
            assert!(error.contains(why), "{line}: {error}");
        }
        let long_id = format!(r#"{{"id":"{}"}}"#, "x".repeat(151));
        assert!(Record::from_json(&long_id)
            .unwrap_err()
            .contains("150-byte"));
        let long_value = format!(r#"{{"id":"1","bio":"{}"}}"#, "x".repeat(1001));
        assert!(Record::from_json(&long_value)
            .unwrap_err()
            .contains("1000-byte"));
    }

    #[test]
    fn derived_event_ids_are_stable_and_distinct() {
        let event =
            Record::from_json(r#"{"person":"1","name":"x","timestamp":1700000000}"#).unwrap();
        assert_eq!(event.event_id(3), event.event_id(3));
        assert_ne!(event.event_id(3), event.event_id(4));
        let id = event.event_id(3).unwrap();
        assert_eq!(id.len(), 26);
        // Pinned: a change here would make a resume re-send events under new ids.
        assert_eq!(id, "01HF7YAT005JBF7KK4BNR49YE7");
        let given = r#"{"person":"1","name":"x","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}"#;
        let given = Record::from_json(given).unwrap();
        assert_eq!(
            given.event_id(3).as_deref(),
            Some("01ARZ3NDEKTSV4RRFFQ69G5FAV")
        );
        // Customer.io deduplicates on ULIDs only: anything else is refused, not sent.
        for id in ["MINE", ""] {
            let line = format!(r#"{{"person":"1","name":"x","id":"{id}"}}"#);
            assert!(
                Record::from_json(&line).unwrap_err().contains("ULID"),
                "{id:?}"
            );
        }
    }

    #[test]
    fn csv_rows_map_to_records() {
        let headers = csv::StringRecord::from(vec![
            "type", "id", "email", "person", "name", "event_id", "plan",
        ]);
        let person = csv::StringRecord::from(vec!["", "42", "a@x.com", "", "", "", "pro, annual"]);
        let Record::Person { id, attributes, .. } = Record::from_csv(&headers, &person).unwrap()
        else {
            panic!()
        };
        assert_eq!(id.as_deref(), Some("42"));
        assert_eq!(attributes["plan"], "pro, annual");
        let event = csv::StringRecord::from(vec![
            "event",
            "",
            "",
            "42",
            "paid",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "pro",
        ]);
        let Record::Event { id, data, .. } = Record::from_csv(&headers, &event).unwrap() else {
            panic!()
        };
        assert_eq!(id.as_deref(), Some("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert_eq!(data["plan"], "pro");
        let short = csv::StringRecord::from(vec!["person", "1"]);
        assert!(Record::from_csv(&headers, &short)
            .unwrap_err()
            .contains("columns"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any line is a valid record or a reason, never a panic; a valid record respects
        /// Customer.io's limits and encodes to an operation.
        #[test]
        fn any_line_is_a_record_or_a_reason(line in prop_oneof![
            any::<String>(),
            r#"\{("(type|id|email|person|name|data|attributes|timestamp)":("[a-z@.]{0,8}"|[0-9]{1,12}|null|\{\}|\[\]),?){0,6}\}"#,
        ]) {
            if let Ok(record) = Record::from_json(&line) {
                let operation = record.to_operation(1);
                prop_assert_eq!(operation["type"].as_str(), Some("person"));
                if let Record::Event { .. } = record {
                    prop_assert_eq!(record.event_id(1).map(|id| id.len()), Some(26));
                }
            }
        }
    }
}
