//! Track v2 batches, typed: [`Operation`] values (validated and encoded once), a [`Packer`]
//! that fills one `/api/v2/batch` request up to Customer.io's limits, and [`BatchOutcome`], what
//! became of each entry of a sent request. The bulk importer and the outbox share them.
//!
//! The JSON schema of each operation is on [`Operation`].

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Map, Value};
use tower::BoxError;

use crate::client::Client;
use crate::encode::ulid;
use crate::error::{ApiError, EntryError, Error};
use crate::limits::{
    check_attributes, check_event_id, check_identifier, MAX_BATCH_OPERATIONS_BYTES,
    MAX_OPERATION_BYTES,
};
use crate::requests::{BatchEntries, Event, EventKind, Identifier};
use crate::response::Answer;

/// One Track v2 operation, validated and encoded as JSON once (cheap to clone: the bytes are
/// shared), for [`Packer`] and [`Client::send_packed`].
///
/// # The JSON
///
/// Each constructor writes one person operation of the Track v2 API (Customer.io's Track API
/// reference, `/api/v2/batch`, "person operations"):
///
/// | constructor | JSON |
/// |---|---|
/// | [`Operation::identify`] | `{"type":"person","action":"identify","identifiers":{"id":"42"},"attributes":{…}}` |
/// | [`Operation::event`] | `{"type":"person","action":"event","identifiers":{…},"name":"signed_up","id":"<ULID>","timestamp":unix,"attributes":{…}}` (`page`/`screen` for [`EventKind::Page`]/[`EventKind::Screen`]) |
/// | [`Operation::anonymous_event`] | as an event, with `"anonymous_id":"…"` instead of `identifiers` |
/// | [`Operation::delete`], [`Operation::suppress`], [`Operation::unsuppress`] | `{"type":"person","action":"delete","identifiers":{…}}` |
/// | [`Operation::add_device`] | `{"type":"person","action":"add_device","identifiers":{…},"device":{"token":"…","platform":"ios"}}` |
/// | [`Operation::delete_device`] | `{"type":"person","action":"delete_device","identifiers":{…},"device":{"token":"…"}}` |
/// | [`Operation::merge`] | `{"type":"person","action":"merge","primary":{…},"secondary":{…}}` |
///
/// `identifiers` is exactly one of `{"id":…}`, `{"email":…}` or `{"cio_id":…}`. In v2 an
/// event's data is `attributes` (v1's `data`). Every event, page and screen carries its `id`, a
/// ULID fixed when the operation is built, so a redelivered operation is deduplicated by
/// Customer.io. [`Operation::from_value`] takes any other operation (objects, deliveries,
/// relationships) as JSON: an object with a `type` and an `action`, at most 32 KB; Customer.io
/// validates the rest.
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct Operation {
    encoded: Bytes,
    event_id: Option<String>,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation")
            .field("bytes", &self.encoded.len())
            .field("event_id", &self.event_id)
            .finish()
    }
}

impl Operation {
    /// Adds or updates `person` with `attributes`: any JSON object (`json!`, a `Map`, a struct
    /// that serializes to one), as [`Client::identify`] takes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an identifier or attributes over Customer.io's limits, or
    /// attributes that are not an object; [`Error::PayloadTooLarge`] over 32 KB.
    pub fn identify(
        person: &Identifier,
        attributes: &(impl serde::Serialize + ?Sized),
    ) -> Result<Self, Error> {
        let attributes = match serde_json::to_value(attributes) {
            Ok(Value::Object(attributes)) => attributes,
            Ok(_) => {
                return Err(Error::InvalidInput(
                    "a person's attributes must be a JSON object".into(),
                ))
            }
            Err(error) => {
                return Err(Error::InvalidInput(format!(
                    "the attributes do not serialize: {error}"
                )))
            }
        };
        check_attributes(&attributes).map_err(Error::InvalidInput)?;
        let mut operation = person_operation("identify", person)?;
        operation.insert("attributes".into(), Value::Object(attributes));
        Self::encode(operation, None)
    }

    /// Records `event` for `person` (a page or screen view by its [`EventKind`]). The event's
    /// `id` is kept when it is a ULID, or a fresh ULID when it has none.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad identifier, an empty name, a non-ULID id, data that is
    /// not an object or over the attribute limits; [`Error::PayloadTooLarge`] over 32 KB.
    pub fn event(person: &Identifier, event: Event) -> Result<Self, Error> {
        let action = action_of(event.kind);
        let operation = person_operation(action, person)?;
        Self::with_event(operation, event)
    }

    /// Records `event` for a person not identified yet, by their `anonymous_id`.
    ///
    /// # Errors
    /// As [`event`](Self::event).
    pub fn anonymous_event(anonymous_id: &str, event: Event) -> Result<Self, Error> {
        check_identifier("anonymous_id", anonymous_id).map_err(Error::InvalidInput)?;
        let mut operation = Map::new();
        operation.insert("type".into(), json!("person"));
        operation.insert("action".into(), json!(action_of(event.kind)));
        operation.insert("anonymous_id".into(), json!(anonymous_id));
        Self::with_event(operation, event)
    }

    /// Deletes `person`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad identifier.
    pub fn delete(person: &Identifier) -> Result<Self, Error> {
        Self::encode(person_operation("delete", person)?, None)
    }

    /// Suppresses `person` (deletes them and blocks the identifier).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad identifier.
    pub fn suppress(person: &Identifier) -> Result<Self, Error> {
        Self::encode(person_operation("suppress", person)?, None)
    }

    /// Unsuppresses `person`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad identifier.
    pub fn unsuppress(person: &Identifier) -> Result<Self, Error> {
        Self::encode(person_operation("unsuppress", person)?, None)
    }

    /// Adds (or updates) device `token` on `platform` (`ios`, `android`) for `person`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad identifier or an empty token or platform.
    pub fn add_device(person: &Identifier, token: &str, platform: &str) -> Result<Self, Error> {
        check_identifier("the device token", token).map_err(Error::InvalidInput)?;
        if platform.is_empty() {
            return Err(Error::InvalidInput("the device platform is empty".into()));
        }
        let mut operation = person_operation("add_device", person)?;
        operation.insert(
            "device".into(),
            json!({"token": token, "platform": platform}),
        );
        Self::encode(operation, None)
    }

    /// Removes device `token` from `person`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad identifier or an empty token.
    pub fn delete_device(person: &Identifier, token: &str) -> Result<Self, Error> {
        check_identifier("the device token", token).map_err(Error::InvalidInput)?;
        let mut operation = person_operation("delete_device", person)?;
        operation.insert("device".into(), json!({ "token": token }));
        Self::encode(operation, None)
    }

    /// Merges `secondary` into `primary`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad identifier.
    pub fn merge(primary: &Identifier, secondary: &Identifier) -> Result<Self, Error> {
        let mut operation = Map::new();
        operation.insert("type".into(), json!("person"));
        operation.insert("action".into(), json!("merge"));
        operation.insert("primary".into(), identifier_json(primary)?);
        operation.insert("secondary".into(), identifier_json(secondary)?);
        Self::encode(operation, None)
    }

    /// Any other v2 operation (objects, deliveries, relationships), as JSON: it must be an
    /// object with a `type` and an `action`, and at most 32 KB. A person event without an `id`
    /// is given one (a ULID); Customer.io validates the rest.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when it is not such an object or its `id` is not a ULID;
    /// [`Error::PayloadTooLarge`] over 32 KB.
    pub fn from_value(operation: Value) -> Result<Self, Error> {
        let Value::Object(mut operation) = operation else {
            return Err(Error::InvalidInput(
                "an operation must be a JSON object".into(),
            ));
        };
        for field in ["type", "action"] {
            if !operation.get(field).is_some_and(Value::is_string) {
                return Err(Error::InvalidInput(format!(
                    "an operation needs a string {field:?}"
                )));
            }
        }
        let is_event = matches!(
            operation.get("action").and_then(Value::as_str),
            Some("event" | "page" | "screen")
        );
        let event_id = match operation.get("id") {
            _ if !is_event => None,
            None => {
                let id = ulid();
                operation.insert("id".into(), json!(id));
                Some(id)
            }
            Some(Value::String(id)) => {
                check_event_id(id).map_err(Error::InvalidInput)?;
                Some(id.clone())
            }
            Some(_) => return Err(Error::InvalidInput("an event id must be a string".into())),
        };
        Self::encode(operation, event_id)
    }

    /// An operation already encoded by one of the constructors (read back from a store), not
    /// checked again. `event_id` is what [`event_id`](Self::event_id) reports.
    pub fn from_encoded(encoded: Bytes, event_id: Option<String>) -> Self {
        Self { encoded, event_id }
    }

    /// The JSON, as sent in a batch.
    #[must_use]
    pub fn encoded(&self) -> &Bytes {
        &self.encoded
    }

    /// The JSON, owned.
    #[must_use]
    pub fn into_encoded(self) -> Bytes {
        self.encoded
    }

    /// An event's deduplication id (a ULID); `None` for other operations.
    #[must_use]
    pub fn event_id(&self) -> Option<&str> {
        self.event_id.as_deref()
    }

    /// The encoded size in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.encoded.len()
    }

    /// Never true: an operation is at least `{}`; here for clippy's `len_without_is_empty`.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }

    fn with_event(mut operation: Map<String, Value>, event: Event) -> Result<Self, Error> {
        if event.name.trim().is_empty() {
            return Err(Error::InvalidInput("the event name is empty".into()));
        }
        let id = match event.id {
            Some(id) => {
                check_event_id(&id).map_err(Error::InvalidInput)?;
                id
            }
            None => ulid(),
        };
        operation.insert("name".into(), json!(event.name));
        operation.insert("id".into(), json!(id));
        if let Some(timestamp) = event.timestamp {
            operation.insert("timestamp".into(), json!(timestamp));
        }
        match event.data {
            None | Some(Value::Null) => {}
            Some(Value::Object(data)) => {
                check_attributes(&data).map_err(Error::InvalidInput)?;
                operation.insert("attributes".into(), Value::Object(data));
            }
            Some(_) => {
                return Err(Error::InvalidInput(
                    "event data must be a JSON object (v2 sends it as `attributes`)".into(),
                ))
            }
        }
        Self::encode(operation, Some(id))
    }

    fn encode(operation: Map<String, Value>, event_id: Option<String>) -> Result<Self, Error> {
        let encoded = serde_json::to_vec(&operation).expect("JSON values serialize");
        if encoded.len() > MAX_OPERATION_BYTES {
            return Err(Error::PayloadTooLarge {
                size: encoded.len(),
                limit: MAX_OPERATION_BYTES,
            });
        }
        Ok(Self {
            encoded: Bytes::from(encoded),
            event_id,
        })
    }
}

fn action_of(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Page => "page",
        EventKind::Screen => "screen",
        _ => "event",
    }
}

fn identifier_json(person: &Identifier) -> Result<Value, Error> {
    let (field, value) = match person {
        Identifier::Id(id) => ("id", id),
        Identifier::Email(email) => ("email", email),
        Identifier::CioId(cio_id) => ("cio_id", cio_id),
    };
    check_identifier(field, value).map_err(Error::InvalidInput)?;
    Ok(json!({ field: value }))
}

fn person_operation(action: &str, person: &Identifier) -> Result<Map<String, Value>, Error> {
    let mut operation = Map::new();
    operation.insert("type".into(), json!("person"));
    operation.insert("action".into(), json!(action));
    operation.insert("identifiers".into(), identifier_json(person)?);
    Ok(operation)
}

/// What [`Packer::push`] did with an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Pushed {
    /// It is in the request being packed.
    Packed,
    /// The request is full: send it ([`Packer::take`]), then push this one again.
    Full(Bytes),
    /// Over [`MAX_OPERATION_BYTES`]: no request can carry it.
    TooLarge(Bytes),
}

/// Fills one `/api/v2/batch` request: operations are added while the request stays under
/// [`MAX_BATCH_OPERATIONS_BYTES`] (500 KB with its envelope) and, if set, a number of
/// operations. What it takes out goes out as exactly one request of
/// [`Client::send_packed`].
#[derive(Debug, Default)]
#[must_use]
pub struct Packer {
    operations: Vec<Bytes>,
    bytes: usize,
    max_operations: Option<usize>,
}

impl Packer {
    /// An empty packer with Customer.io's size limits and no count limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also closes a request at `max` operations.
    pub fn max_operations(mut self, max: usize) -> Self {
        self.max_operations = Some(max.max(1));
        self
    }

    /// Adds `operation` if it fits. An empty packer takes any operation up to
    /// [`MAX_OPERATION_BYTES`].
    pub fn push(&mut self, operation: Bytes) -> Pushed {
        if operation.len() > MAX_OPERATION_BYTES {
            return Pushed::TooLarge(operation);
        }
        if !self.fits(operation.len()) {
            return Pushed::Full(operation);
        }
        // Each operation is counted with the comma after it, as the limit is defined.
        self.bytes += operation.len() + 1;
        self.operations.push(operation);
        Pushed::Packed
    }

    /// Whether an operation of `len` bytes would still go into this request.
    #[must_use]
    pub fn fits(&self, len: usize) -> bool {
        let count_ok = self
            .max_operations
            .is_none_or(|max| self.operations.len() < max);
        count_ok && self.bytes + len < MAX_BATCH_OPERATIONS_BYTES
    }

    /// Whether no other operation of the smallest useful size (64 bytes) would fit.
    #[must_use]
    pub fn is_full(&self) -> bool {
        !self.fits(64)
    }

    /// Operations packed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether nothing is packed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Bytes packed (each operation with its comma).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How full the request is by size, 0 to 1.
    #[must_use]
    pub fn fill(&self) -> f64 {
        self.bytes as f64 / MAX_BATCH_OPERATIONS_BYTES as f64
    }

    /// Takes the packed operations out, leaving the packer empty.
    #[must_use]
    pub fn take(&mut self) -> Vec<Bytes> {
        self.bytes = 0;
        std::mem::take(&mut self.operations)
    }
}

/// What became of one entry of a sent batch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryOutcome {
    /// Customer.io accepted it.
    Delivered,
    /// Customer.io refused it for a reason that may pass (see [`is_retryable_entry`]): send it
    /// again.
    Retry(EntryError),
    /// Customer.io refused it for good (validation): dead-letter it with this reason.
    Refused(EntryError),
}

/// Whether a refused entry may pass when sent again. Customer.io documents a 207's entries as
/// validation failures (permanent); transient conditions come back as a non-2xx status for the
/// whole request. Reasons that name a transient condition (`rate_limited`, `internal`,
/// `timeout`, `unavailable`) are still treated as retryable, so that a server that does answer
/// them per entry loses nothing.
#[must_use]
pub fn is_retryable_entry(entry: &EntryError) -> bool {
    matches!(
        entry.reason.as_str(),
        "rate_limited" | "internal" | "internal_error" | "timeout" | "unavailable"
    )
}

/// What became of each entry of one sent batch request, in the order they were sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOutcome {
    /// One outcome per operation sent.
    pub entries: Vec<EntryOutcome>,
}

impl BatchOutcome {
    /// Maps a successful answer to a request of `sent` operations. A 200 (or 204) delivered
    /// them all; a 207 refused the entries its body lists by `batch_index`.
    ///
    /// # Errors
    /// A 207 whose body cannot be read (not JSON, no `errors` list, an entry without a
    /// `batch_index` or with one out of range) is [`Error::Api`]: nothing can be known
    /// delivered, so the caller must send the request again rather than count it delivered.
    pub fn from_answer(answer: &Answer, sent: usize) -> Result<Self, Error> {
        let mut entries = vec![EntryOutcome::Delivered; sent];
        if answer.status != StatusCode::MULTI_STATUS {
            return Ok(Self { entries });
        }
        let unreadable = |why: &str| Error::Api {
            status: answer.status,
            error: ApiError {
                messages: vec![format!(
                    "unreadable 207 answer ({why}); nothing counted delivered"
                )],
                ..ApiError::default()
            },
        };
        let listed = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|body| body.get("errors").and_then(Value::as_array).map(Vec::len))
            .ok_or_else(|| unreadable("no errors list"))?;
        // The entries `read` parsed (and `Client::send` redacted), not the raw body again.
        let errors = answer.rejected.clone();
        if errors.len() != listed || errors.is_empty() {
            return Err(unreadable("entries without a reason"));
        }
        for entry in errors {
            let index = entry
                .batch_index
                .filter(|index| *index < sent)
                .ok_or_else(|| unreadable("an entry's batch_index is missing or out of range"))?;
            entries[index] = if is_retryable_entry(&entry) {
                EntryOutcome::Retry(entry)
            } else {
                EntryOutcome::Refused(entry)
            };
        }
        Ok(Self { entries })
    }

    /// Entries delivered.
    #[must_use]
    pub fn delivered(&self) -> usize {
        self.entries
            .iter()
            .filter(|entry| matches!(entry, EntryOutcome::Delivered))
            .count()
    }
}

impl<RB> Client<RB>
where
    RB: http_body::Body + Send + 'static,
    RB::Error: Into<BoxError>,
{
    /// Sends encoded operations (as a [`Packer`] filled them: one request; more are split
    /// under the limits like [`batch_encoded`](Self::batch_encoded)) through the stack, each
    /// request spending one Track slot in the [bulk](pacer_limit::Priority::Bulk) lane (the
    /// importer's and the outbox's way: a backlog that may wait, behind interactive calls on
    /// the same quota but never starved by them), and says what became of each entry.
    ///
    /// # Errors
    /// See [`Error`]; an unreadable 207 is an error (see [`BatchOutcome::from_answer`]). The
    /// first failing request ends the call; entries of requests before it were delivered, so
    /// send one packed request per call to know exactly what was.
    pub async fn send_packed(&self, operations: &[Bytes]) -> Result<BatchOutcome, Error> {
        let mut outcome = BatchOutcome::default();
        for mut request in self.requests().batch_encoded(operations)? {
            request.extensions_mut().insert(pacer_limit::Priority::Bulk);
            let sent = request
                .extensions()
                .get::<BatchEntries>()
                .map_or(0, |entries| entries.0);
            let answer = self.send(request).await?;
            outcome
                .entries
                .extend(BatchOutcome::from_answer(&answer, sent)?.entries);
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(operation: &Operation) -> Value {
        serde_json::from_slice(operation.encoded()).unwrap()
    }

    #[test]
    fn constructors_write_the_v2_schema() {
        let person = Identifier::Id("42".into());
        let attributes = json!({"plan": "pro"});
        let identify = Operation::identify(&person, &attributes).unwrap();
        assert!(Operation::identify(&person, &json!([1])).is_err());
        assert_eq!(
            value(&identify),
            json!({"type": "person", "action": "identify", "identifiers": {"id": "42"}, "attributes": {"plan": "pro"}})
        );
        let event = Operation::event(
            &Identifier::Email("a@x.com".into()),
            Event::new("signed_up")
                .data(json!({"plan": "pro"}))
                .timestamp(1_700_000_000),
        )
        .unwrap();
        let id = event.event_id().unwrap().to_owned();
        assert_eq!(
            value(&event),
            json!({"type": "person", "action": "event", "identifiers": {"email": "a@x.com"}, "name": "signed_up", "id": id, "timestamp": 1_700_000_000, "attributes": {"plan": "pro"}})
        );
        let page = Operation::event(&person, Event::page("https://x.com/")).unwrap();
        assert_eq!(value(&page)["action"], "page");
        let anonymous = Operation::anonymous_event("anon-1", Event::new("viewed")).unwrap();
        assert_eq!(value(&anonymous)["anonymous_id"], "anon-1");
        assert!(value(&anonymous).get("identifiers").is_none());
        let device = Operation::add_device(&person, "tok", "ios").unwrap();
        assert_eq!(
            value(&device)["device"],
            json!({"token": "tok", "platform": "ios"})
        );
        let merge = Operation::merge(&person, &Identifier::CioId("c1".into())).unwrap();
        assert_eq!(value(&merge)["secondary"], json!({"cio_id": "c1"}));
        for (operation, action) in [
            (Operation::delete(&person), "delete"),
            (Operation::suppress(&person), "suppress"),
            (Operation::unsuppress(&person), "unsuppress"),
            (Operation::delete_device(&person, "tok"), "delete_device"),
        ] {
            assert_eq!(value(&operation.unwrap())["action"], action);
        }
    }

    #[test]
    fn bad_input_is_refused_when_built() {
        let empty = Identifier::Id(String::new());
        assert!(matches!(
            Operation::delete(&empty),
            Err(Error::InvalidInput(_))
        ));
        let person = Identifier::Id("1".into());
        assert!(Operation::event(&person, Event::new(" ")).is_err());
        assert!(Operation::event(&person, Event::new("x").id("MINE")).is_err());
        assert!(Operation::event(&person, Event::new("x").data(json!([1]))).is_err());
        let huge = json!({"a": "x".repeat(900)});
        let many: Map<String, Value> = (0..40)
            .map(|n| (format!("k{n}"), huge["a"].clone()))
            .collect();
        assert!(matches!(
            Operation::identify(&person, &many),
            Err(Error::PayloadTooLarge {
                limit: MAX_OPERATION_BYTES,
                ..
            })
        ));
        assert!(Operation::from_value(json!({"type": "person"})).is_err());
        let raw = Operation::from_value(
            json!({"type": "person", "action": "event", "identifiers": {"id": "1"}, "name": "x"}),
        )
        .unwrap();
        assert_eq!(raw.event_id().map(str::len), Some(26));
    }

    #[test]
    fn a_packer_fills_one_request_under_the_limits() {
        let operation = Bytes::from(vec![b'x'; 1000]);
        let mut packer = Packer::new();
        let mut packed = 0;
        let overflow = loop {
            match packer.push(operation.clone()) {
                Pushed::Packed => packed += 1,
                Pushed::Full(back) => break back,
                Pushed::TooLarge(_) => unreachable!("1000 bytes fit"),
            }
        };
        assert_eq!(overflow.len(), 1000);
        assert_eq!(packed, MAX_BATCH_OPERATIONS_BYTES / 1001);
        assert!(!packer.fits(1000) && packer.fits(400));
        let taken = packer.take();
        // One request's body (`{"batch":[` … `]}`) stays under 500 KB.
        let body = taken.iter().map(|op| op.len() + 1).sum::<usize>() + 11;
        assert!(body <= crate::MAX_BATCH_BYTES, "{body}");
        assert!(packer.is_empty() && packer.bytes() == 0);
        let mut counted = Packer::new().max_operations(2);
        assert_eq!(counted.push(operation.clone()), Pushed::Packed);
        assert_eq!(counted.push(operation.clone()), Pushed::Packed);
        assert!(matches!(counted.push(operation), Pushed::Full(_)));
        let huge = Bytes::from(vec![b'x'; MAX_OPERATION_BYTES + 1]);
        assert!(matches!(Packer::new().push(huge), Pushed::TooLarge(_)));
    }

    /// An answer as `read` makes it: a 207's entries parsed beside the body.
    fn answer(status: StatusCode, body: &str) -> Answer {
        Answer {
            status,
            body: Bytes::from(body.to_owned()),
            rejected: if status == StatusCode::MULTI_STATUS {
                ApiError::parse(body.as_bytes()).entries
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn a_207_maps_each_entry_and_an_unreadable_one_delivers_nothing() {
        let ok = BatchOutcome::from_answer(&answer(StatusCode::OK, "{}"), 3).unwrap();
        assert_eq!(ok.delivered(), 3);
        let partial = answer(
            StatusCode::MULTI_STATUS,
            r#"{"errors":[{"batch_index":1,"reason":"required","field":"name","message":"name is required"},{"batch_index":2,"reason":"rate_limited","field":"","message":"later"}]}"#,
        );
        let outcome = BatchOutcome::from_answer(&partial, 3).unwrap();
        assert_eq!(outcome.entries[0], EntryOutcome::Delivered);
        assert!(matches!(&outcome.entries[1], EntryOutcome::Refused(e) if e.reason == "required"));
        assert!(matches!(&outcome.entries[2], EntryOutcome::Retry(_)));
        for body in [
            "<html>oops</html>",
            "{}",
            r#"{"errors":[]}"#,
            r#"{"errors":[{"reason":"required","field":"name","message":"m"}]}"#,
            r#"{"errors":[{"batch_index":9,"reason":"required","field":"name","message":"m"}]}"#,
        ] {
            let unreadable = BatchOutcome::from_answer(&answer(StatusCode::MULTI_STATUS, body), 3);
            assert!(matches!(unreadable, Err(Error::Api { .. })), "{body}");
        }
    }
}
