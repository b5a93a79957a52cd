//! Typed Customer.io operations as `http::Request`s: URL, auth, JSON body, event ids, the
//! idempotency mark and the API class, with sizes checked before anything is sent.

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::Full;
use pacer_limit::Priority;
use pacer_retry::Idempotent;
use serde::Serialize;
use serde_json::{json, Value};

use crate::api::{ApiClass, Endpoints};
use crate::encode::{path_segment, ulid};
use crate::error::Error;
use crate::limits::{
    check_event_id, check_identifier, check_path_segment, envelope_bytes, MAX_BATCH_BYTES,
    MAX_OPERATION_BYTES, MAX_TRANSACTIONAL_BYTES,
};
use crate::secret::Credentials;

/// The body type of every request.
pub type Body = Full<Bytes>;

/// What kind of activity an event records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EventKind {
    /// A custom event.
    #[default]
    Event,
    /// A page view (`name` is the URL).
    Page,
    /// A mobile screen view.
    Screen,
}

/// A Track v1 event. Without an `id`, one is generated (a ULID) so that a retried event is
/// never counted twice: Customer.io ignores an `id` it has seen.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// The event name.
    pub name: String,
    /// The deduplication id (a ULID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Event, page or screen.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Unix seconds; the receive time when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// Event data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Event {
    /// An event named `name` with no data.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            id: None,
            kind: EventKind::Event,
            timestamp: None,
            data: None,
        }
    }

    /// A page view of `url`.
    #[must_use]
    pub fn page(url: impl Into<String>) -> Self {
        Self::new(url).kind(EventKind::Page)
    }

    /// A mobile screen view of `screen`.
    #[must_use]
    pub fn screen(screen: impl Into<String>) -> Self {
        Self::new(screen).kind(EventKind::Screen)
    }

    /// Attaches `data`.
    #[must_use]
    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Sets the deduplication id: a ULID (see [`ulid`](crate::ulid)), as Customer.io requires;
    /// any other id is refused with [`Error::InvalidInput`] when the request is built. Without
    /// one, a fresh ULID is set, so retries of the request are deduplicated.
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Records it as a page or screen view.
    #[must_use]
    pub fn kind(mut self, kind: EventKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the time it happened (unix seconds).
    #[must_use]
    pub fn timestamp(mut self, unix_seconds: u64) -> Self {
        self.timestamp = Some(unix_seconds);
        self
    }
}

/// A batch request's extension: how many entries it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchEntries(pub usize);

/// Which transactional message to send: its numeric id or its trigger name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum MessageId {
    /// The message's numeric id.
    Id(u64),
    /// The message's (case-insensitive) trigger name.
    Trigger(String),
}

/// A transactional email (`POST /v1/send/email`); the fields Customer.io documents most.
/// Anything else can be sent as a `serde_json::Value` instead.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SendEmail {
    /// The message template.
    pub transactional_message_id: MessageId,
    /// The person it is for: exactly one of `id`, `email` or `cio_id`.
    #[serde(serialize_with = "serialize_identifier")]
    pub identifiers: Identifier,
    /// Recipient address(es); with `cc` and `bcc`, at most 15.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Liquid data for the template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_data: Option<Value>,
    /// Unix seconds to send at (at most 90 days ahead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_at: Option<u64>,
}

impl SendEmail {
    /// Template `message` for `person`.
    #[must_use]
    pub fn new(message: MessageId, person: Identifier) -> Self {
        Self {
            transactional_message_id: message,
            identifiers: person,
            to: None,
            message_data: None,
            send_at: None,
        }
    }

    /// Sends to `to`.
    #[must_use]
    pub fn to(mut self, to: impl Into<String>) -> Self {
        self.to = Some(to.into());
        self
    }

    /// Fills the template with `data`.
    #[must_use]
    pub fn message_data(mut self, data: Value) -> Self {
        self.message_data = Some(data);
        self
    }
}

fn serialize_identifier<S: serde::Serializer>(
    identifier: &Identifier,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    identifier.to_json().serialize(serializer)
}

/// How to name a person in a merge.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identifier {
    /// By `id`.
    Id(String),
    /// By `email`.
    Email(String),
    /// By `cio_id`.
    CioId(String),
}

impl Identifier {
    fn to_json(&self) -> Value {
        match self {
            Identifier::Id(id) => json!({ "id": id }),
            Identifier::Email(email) => json!({ "email": email }),
            Identifier::CioId(cio_id) => json!({ "cio_id": cio_id }),
        }
    }
}

/// Builds requests for one workspace.
#[derive(Clone, Debug)]
pub struct Requests {
    endpoints: Endpoints,
    /// `Authorization` values per API family, built once (marked sensitive), or why not.
    track_auth: Result<HeaderValue, String>,
    app_auth: Result<HeaderValue, String>,
    pipelines_auth: Result<HeaderValue, String>,
}

impl Requests {
    /// Requests to `endpoints` with `credentials`.
    #[must_use]
    pub fn new(endpoints: Endpoints, credentials: Credentials) -> Self {
        let [track_auth, app_auth, pipelines_auth] =
            [ApiClass::Track, ApiClass::App, ApiClass::Pipelines]
                .map(|class| authorization(&credentials, class));
        Self {
            endpoints,
            track_auth,
            app_auth,
            pipelines_auth,
        }
    }

    /// The endpoints requests go to.
    #[must_use]
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// `PUT /api/v1/customers/{id}`: adds or updates a person. `attributes` is anything that
    /// serializes to a JSON object: a `serde_json::json!({...})`, a `Map`, a struct of yours.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty or over-long id, attributes that are not a JSON
    /// object, or missing Track credentials.
    pub fn identify(
        &self,
        id: &str,
        attributes: &(impl Serialize + ?Sized),
    ) -> Result<Request<Body>, Error> {
        let path = format!("/api/v1/customers/{}", person(id)?);
        let attributes = to_json(attributes)?;
        if !attributes.is_object() {
            return Err(Error::InvalidInput(
                "a person's attributes must be a JSON object".into(),
            ));
        }
        self.track_request(Method::PUT, &path, &attributes, true)
    }

    /// `DELETE /api/v1/customers/{id}`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub fn delete_person(&self, id: &str) -> Result<Request<Body>, Error> {
        let path = format!("/api/v1/customers/{}", person(id)?);
        self.track_request(Method::DELETE, &path, &json!({}), true)
    }

    /// `POST /api/v1/customers/{id}/events`, with a generated event id when `event` has none.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub fn track(&self, id: &str, event: Event) -> Result<Request<Body>, Error> {
        let path = format!("/api/v1/customers/{}/events", person(id)?);
        let body = serde_json::to_value(with_id(event)?).expect("events serialize");
        self.track_request(Method::POST, &path, &body, true)
    }

    /// `POST /api/v1/events`: an anonymous event (or an invite without `anonymous_id`).
    ///
    /// # Errors
    /// Missing Track credentials.
    pub fn track_anonymous(
        &self,
        anonymous_id: Option<&str>,
        event: Event,
    ) -> Result<Request<Body>, Error> {
        let mut body = serde_json::to_value(with_id(event)?).expect("events serialize");
        if let Some(anonymous_id) = anonymous_id {
            body["anonymous_id"] = json!(anonymous_id);
        }
        self.track_request(Method::POST, "/api/v1/events", &body, true)
    }

    /// `PUT /api/v1/customers/{id}/devices`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub fn add_device(
        &self,
        id: &str,
        token: &str,
        platform: &str,
    ) -> Result<Request<Body>, Error> {
        let path = format!("/api/v1/customers/{}/devices", person(id)?);
        let body = json!({"device": {"id": token, "platform": platform}});
        self.track_request(Method::PUT, &path, &body, true)
    }

    /// `DELETE /api/v1/customers/{id}/devices/{token}`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub fn delete_device(&self, id: &str, token: &str) -> Result<Request<Body>, Error> {
        let path = format!(
            "/api/v1/customers/{}/devices/{}",
            person(id)?,
            segment("the device token", token)?
        );
        self.track_request(Method::DELETE, &path, &json!({}), true)
    }

    /// `POST /api/v1/customers/{id}/suppress` (deletes the person and blocks the identifier).
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub fn suppress(&self, id: &str) -> Result<Request<Body>, Error> {
        let path = format!("/api/v1/customers/{}/suppress", person(id)?);
        self.track_request(Method::POST, &path, &json!({}), true)
    }

    /// `POST /api/v1/customers/{id}/unsuppress`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub fn unsuppress(&self, id: &str) -> Result<Request<Body>, Error> {
        let path = format!("/api/v1/customers/{}/unsuppress", person(id)?);
        self.track_request(Method::POST, &path, &json!({}), true)
    }

    /// `POST /api/v1/merge_customers`. Not idempotent once the secondary is gone, but a repeat
    /// merges nothing, so it is marked safe to retry.
    ///
    /// # Errors
    /// Missing Track credentials.
    pub fn merge(
        &self,
        primary: &Identifier,
        secondary: &Identifier,
    ) -> Result<Request<Body>, Error> {
        let body = json!({"primary": primary.to_json(), "secondary": secondary.to_json()});
        self.track_request(Method::POST, "/api/v1/merge_customers", &body, true)
    }

    /// `POST /api/v2/batch`, split into as few requests as the 500 KB limit allows. Person
    /// events without an `id` get one, so every chunk is safe to retry.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] when one operation is over 32 KB (nothing is sent).
    pub fn batch(&self, operations: Vec<Value>) -> Result<Vec<Request<Body>>, Error> {
        let operations: Vec<Value> = operations.into_iter().map(with_operation_id).collect();
        chunks(&operations, "batch")?
            .into_iter()
            .map(|(body, entries)| {
                let mut request =
                    self.request(ApiClass::Track, Method::POST, "/api/v2/batch", body, true)?;
                request.extensions_mut().insert(BatchEntries(entries));
                Ok(request)
            })
            .collect()
    }

    /// As [`batch`](Self::batch), for operations already encoded as JSON (a bulk importer keeps
    /// bytes, not values, to stay small). Events must carry their `id` already: nothing is
    /// added to pre-encoded operations.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] when one operation is over 32 KB (nothing is sent).
    pub fn batch_encoded(&self, operations: &[Bytes]) -> Result<Vec<Request<Body>>, Error> {
        chunks_encoded(operations, "batch")?
            .into_iter()
            .map(|(body, entries)| {
                let mut request =
                    self.request(ApiClass::Track, Method::POST, "/api/v2/batch", body, true)?;
                request.extensions_mut().insert(BatchEntries(entries));
                Ok(request)
            })
            .collect()
    }

    /// `POST /api/v2/entity`: one operation.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] over 32 KB.
    pub fn entity(&self, operation: Value) -> Result<Request<Body>, Error> {
        let body = serialize(&with_operation_id(operation), MAX_OPERATION_BYTES)?;
        self.request(ApiClass::Track, Method::POST, "/api/v2/entity", body, true)
    }

    /// `POST /v1/send/email`, in the [interactive](Priority::Interactive) lane. Not marked
    /// idempotent: Customer.io has no idempotency key for transactional messages, so a repeat
    /// sends the email twice.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] over 1 MB; missing App key.
    pub fn send_email(&self, message: &impl Serialize) -> Result<Request<Body>, Error> {
        let body = serialize(&to_json(message)?, MAX_TRANSACTIONAL_BYTES)?;
        self.request(
            ApiClass::Transactional,
            Method::POST,
            "/v1/send/email",
            body,
            false,
        )
    }

    /// `POST /v1/send/push`, in the interactive lane. Not idempotent, like
    /// [`send_email`](Self::send_email).
    ///
    /// # Errors
    /// As [`send_email`](Self::send_email).
    pub fn send_push(&self, message: &impl Serialize) -> Result<Request<Body>, Error> {
        let body = serialize(&to_json(message)?, MAX_TRANSACTIONAL_BYTES)?;
        self.request(
            ApiClass::Transactional,
            Method::POST,
            "/v1/send/push",
            body,
            false,
        )
    }

    /// `POST /v1/campaigns/{broadcast_id}/triggers`. Not idempotent.
    ///
    /// # Errors
    /// Missing App key.
    pub fn trigger_broadcast(
        &self,
        broadcast_id: u64,
        data: &Value,
    ) -> Result<Request<Body>, Error> {
        let path = format!("/v1/campaigns/{broadcast_id}/triggers");
        let body = serialize(data, usize::MAX)?;
        self.request(ApiClass::Broadcast, Method::POST, &path, body, false)
    }

    /// `GET /v1/customers/{id}/attributes`, in the [interactive](Priority::Interactive) lane.
    ///
    /// # Errors
    /// As [`identify`](Self::identify), with the App key.
    pub fn customer_attributes(&self, id: &str) -> Result<Request<Body>, Error> {
        let path = format!("/v1/customers/{}/attributes", person(id)?);
        self.request(ApiClass::App, Method::GET, &path, Bytes::new(), true)
    }

    /// `POST /v1/batch` on the Pipelines API, always with `X-Strict-Mode: 1` (without it,
    /// invalid payloads answer 200 and are dropped), split under the 500 KB limit.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] when one call is over 32 KB.
    pub fn pipelines_batch(&self, calls: &[Value]) -> Result<Vec<Request<Body>>, Error> {
        chunks(calls, "batch")?
            .into_iter()
            .map(|(body, entries)| {
                let mut request =
                    self.request(ApiClass::Pipelines, Method::POST, "/v1/batch", body, false)?;
                request
                    .headers_mut()
                    .insert("x-strict-mode", HeaderValue::from_static("1"));
                request.extensions_mut().insert(BatchEntries(entries));
                Ok(request)
            })
            .collect()
    }

    fn track_request(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        idempotent: bool,
    ) -> Result<Request<Body>, Error> {
        let body = serialize(body, usize::MAX)?;
        self.request(ApiClass::Track, method, path, body, idempotent)
    }

    fn request(
        &self,
        class: ApiClass,
        method: Method,
        path: &str,
        body: Bytes,
        idempotent: bool,
    ) -> Result<Request<Body>, Error> {
        let url = format!("{}{path}", self.endpoints.base(class));
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("pacer/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|error| Error::InvalidInput(format!("cannot build the request: {error}")))?;
        let authorization = match class {
            ApiClass::Track => &self.track_auth,
            ApiClass::Pipelines => &self.pipelines_auth,
            ApiClass::App | ApiClass::Transactional | ApiClass::Broadcast => &self.app_auth,
        };
        let authorization = authorization.clone().map_err(Error::InvalidInput)?;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, authorization);
        request.extensions_mut().insert(class);
        // Someone waits for a transactional message or a lookup: they go before queued
        // bulk work on the same quota (see `priority_of`).
        if let Some(priority) = priority_of(class) {
            request.extensions_mut().insert(priority);
        }
        if idempotent {
            request.extensions_mut().insert(Idempotent);
        }
        Ok(request)
    }
}

/// The lane of a request of `class` when its builder sets one: transactional sends and App API
/// lookups are [interactive](Priority::Interactive); the rest stays in the normal lane (batches
/// sent by [`Client::send_packed`](crate::Client::send_packed), for the importer and the outbox,
/// go in the bulk lane). A caller may insert another [`Priority`] in the request's extensions.
fn priority_of(class: ApiClass) -> Option<Priority> {
    match class {
        ApiClass::Transactional | ApiClass::App => Some(Priority::Interactive),
        ApiClass::Track | ApiClass::Broadcast | ApiClass::Pipelines => None,
    }
}

/// The `Authorization` value of an API family (marked sensitive), or why there is none.
fn authorization(credentials: &Credentials, class: ApiClass) -> Result<HeaderValue, String> {
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let missing = |what: &str| format!("no {what} configured");
    let value = match class {
        ApiClass::Track => {
            let site = credentials
                .site_id
                .as_deref()
                .ok_or_else(|| missing("Track site id"))?;
            let key = credentials
                .track_api_key
                .as_ref()
                .ok_or_else(|| missing("Track API key"))?;
            basic(site, key.expose())
        }
        ApiClass::Pipelines => {
            let key = credentials
                .pipelines_api_key
                .as_ref()
                .ok_or_else(|| missing("Pipelines API key"))?;
            basic(key.expose(), "")
        }
        ApiClass::App | ApiClass::Transactional | ApiClass::Broadcast => {
            let key = credentials
                .app_api_key
                .as_ref()
                .ok_or_else(|| missing("App API key"))?;
            format!("Bearer {}", key.expose())
        }
    };
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| "credentials contain characters not allowed in a header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// Validates and encodes any other value for a path.
fn segment(what: &str, value: &str) -> Result<String, Error> {
    check_path_segment(what, value).map_err(Error::InvalidInput)?;
    Ok(path_segment(value))
}

/// Validates and encodes a person identifier for a path.
fn person(id: &str) -> Result<String, Error> {
    check_identifier("the person identifier", id).map_err(Error::InvalidInput)?;
    Ok(path_segment(id))
}

/// The event with its id: a fresh ULID when it has none; a given id must be a ULID.
fn with_id(mut event: Event) -> Result<Event, Error> {
    match &event.id {
        None => event.id = Some(ulid()),
        Some(id) => check_event_id(id).map_err(Error::InvalidInput)?,
    }
    Ok(event)
}

/// Gives a v2 person event an `id` when it has none.
fn with_operation_id(mut operation: Value) -> Value {
    let is_event = operation.get("action").and_then(Value::as_str) == Some("event");
    if is_event && operation.get("id").is_none() {
        if let Some(object) = operation.as_object_mut() {
            object.insert("id".into(), json!(ulid()));
        }
    }
    operation
}

fn to_json(value: &(impl Serialize + ?Sized)) -> Result<Value, Error> {
    serde_json::to_value(value)
        .map_err(|error| Error::InvalidInput(format!("the payload does not serialize: {error}")))
}

fn serialize(value: &Value, limit: usize) -> Result<Bytes, Error> {
    let bytes = serde_json::to_vec(value).expect("JSON values serialize");
    if bytes.len() > limit {
        return Err(Error::PayloadTooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(Bytes::from(bytes))
}

/// Packs `items` into `{"<field>": [...]}` bodies under the batch limit, each item under the
/// operation limit; each body comes with its number of items.
fn chunks(items: &[Value], field: &str) -> Result<Vec<(Bytes, usize)>, Error> {
    let encoded: Vec<Bytes> = items
        .iter()
        .map(|item| Bytes::from(serde_json::to_vec(item).expect("JSON values serialize")))
        .collect();
    chunks_encoded(&encoded, field)
}

/// As [`chunks`], for items already encoded as JSON.
fn chunks_encoded(items: &[Bytes], field: &str) -> Result<Vec<(Bytes, usize)>, Error> {
    // `{"batch":[` + `]}`; each item is counted with a comma after it.
    let envelope = envelope_bytes(field);
    let mut bodies = Vec::new();
    let mut current: Vec<&[u8]> = Vec::new();
    let mut size = envelope;
    for encoded in items {
        if encoded.len() > MAX_OPERATION_BYTES {
            return Err(Error::PayloadTooLarge {
                size: encoded.len(),
                limit: MAX_OPERATION_BYTES,
            });
        }
        if !current.is_empty() && size + encoded.len() + 1 > MAX_BATCH_BYTES {
            bodies.push((join(field, &current), current.len()));
            current.clear();
            size = envelope;
        }
        size += encoded.len() + 1;
        current.push(encoded);
    }
    if !current.is_empty() {
        bodies.push((join(field, &current), current.len()));
    }
    Ok(bodies)
}

fn join(field: &str, items: &[&[u8]]) -> Bytes {
    let mut body = format!("{{\"{field}\":[").into_bytes();
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn requests() -> Requests {
        Requests::new(
            Endpoints::all_at("http://127.0.0.1:1"),
            Credentials::track("site", "track-secret").with_app_key("app-secret"),
        )
    }

    #[test]
    fn a_hostile_id_cannot_reach_another_endpoint() {
        let request = requests()
            .identify("../../v1/send/email", &Map::new())
            .unwrap();
        assert_eq!(
            request.uri().path(),
            "/api/v1/customers/..%2F..%2Fv1%2Fsend%2Femail"
        );
        let request = requests().track("a b?c#d", Event::new("x")).unwrap();
        assert_eq!(
            request.uri().path(),
            "/api/v1/customers/a%20b%3Fc%23d/events"
        );
        assert!(request.uri().query().is_none());
    }

    #[test]
    fn events_get_an_id_and_are_marked_idempotent() {
        let request = requests().track("1", Event::new("signed_up")).unwrap();
        let body: Value = serde_json::from_slice(&body_bytes(request.body())).unwrap();
        assert_eq!(body["id"].as_str().unwrap().len(), 26);
        assert_eq!(body["type"], "event");
        assert!(request.extensions().get::<Idempotent>().is_some());
        assert_eq!(
            request.extensions().get::<ApiClass>(),
            Some(&ApiClass::Track)
        );
        let id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        let given = requests().track("1", Event::new("x").id(id)).unwrap();
        let body: Value = serde_json::from_slice(&body_bytes(given.body())).unwrap();
        assert_eq!(body["id"], id);
        // Customer.io deduplicates on ULIDs: another id is refused before anything is sent.
        let refused = requests().track("1", Event::new("x").id("MINE"));
        assert!(matches!(refused, Err(Error::InvalidInput(why)) if why.contains("ULID")));
    }

    #[test]
    fn a_typed_email_serializes_as_customerio_expects() {
        let email = SendEmail::new(
            MessageId::Trigger("welcome".into()),
            Identifier::Email("a@x.com".into()),
        )
        .to("a@x.com")
        .message_data(json!({"name": "Ada"}));
        let request = requests().send_email(&email).unwrap();
        let body: Value = serde_json::from_slice(&body_bytes(request.body())).unwrap();
        assert_eq!(
            body,
            json!({"transactional_message_id": "welcome", "identifiers": {"email": "a@x.com"}, "to": "a@x.com", "message_data": {"name": "Ada"}})
        );
    }

    #[test]
    fn transactional_sends_are_not_idempotent() {
        let request = requests()
            .send_email(&json!({"transactional_message_id": 1, "identifiers": {"id": "1"}}))
            .unwrap();
        assert!(request.extensions().get::<Idempotent>().is_none());
        assert_eq!(
            request.extensions().get::<ApiClass>(),
            Some(&ApiClass::Transactional)
        );
        assert!(request.headers()[header::AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn batches_split_under_500_kb_and_refuse_oversized_operations() {
        let operation = json!({"type": "person", "action": "identify", "identifiers": {"id": "1"}, "attributes": {"a": "x".repeat(900)}});
        let requests_built = requests().batch(vec![operation; 1500]).unwrap();
        assert!(requests_built.len() >= 3);
        let mut total = 0;
        for request in &requests_built {
            let bytes = body_bytes(request.body());
            assert!(bytes.len() <= MAX_BATCH_BYTES);
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            total += body["batch"].as_array().unwrap().len();
        }
        assert_eq!(total, 1500);
        let huge = json!({"type": "person", "action": "identify", "identifiers": {"id": "1"}, "attributes": {"a": "x".repeat(40_000)}});
        assert!(matches!(
            requests().batch(vec![huge]),
            Err(Error::PayloadTooLarge {
                limit: MAX_OPERATION_BYTES,
                ..
            })
        ));
    }

    /// Attributes are anything that serializes to a JSON object, as `send_email` takes
    /// anything serializable: `json!`, a `Map`, a struct; anything else is refused.
    #[test]
    fn identify_takes_any_serializable_object() {
        #[derive(Serialize)]
        struct Plan {
            plan: &'static str,
        }
        let body = |request: Request<Body>| -> Value {
            serde_json::from_slice(&body_bytes(request.body())).unwrap()
        };
        let from_json = requests().identify("42", &json!({"plan": "pro"})).unwrap();
        let from_struct = requests().identify("42", &Plan { plan: "pro" }).unwrap();
        assert_eq!(body(from_json), json!({"plan": "pro"}));
        assert_eq!(body(from_struct), json!({"plan": "pro"}));
        assert!(matches!(
            requests().identify("42", &json!(["not", "an", "object"])),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn ids_are_checked_before_sending() {
        assert!(matches!(
            requests().identify("", &Map::new()),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            requests().identify(&"x".repeat(151), &Map::new()),
            Err(Error::InvalidInput(_))
        ));
        // Ids a server or proxy would normalise into another route never go out.
        for hostile in [".", "..", " ", "a\r\nX-Injected: 1", "\u{0}"] {
            let refused = requests().delete_person(hostile);
            assert!(
                matches!(refused, Err(Error::InvalidInput(_))),
                "{hostile:?}"
            );
            let refused = requests().delete_device("42", hostile);
            assert!(
                matches!(refused, Err(Error::InvalidInput(_))),
                "{hostile:?}"
            );
        }
        let no_pipelines_key = requests().pipelines_batch(&[json!({"type": "track"})]);
        assert!(matches!(no_pipelines_key, Err(Error::InvalidInput(_))));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let requests = requests();
        let printed = format!(
            "{requests:?} {:?}",
            requests.identify("1", &Map::new()).unwrap()
        );
        assert!(!printed.contains("secret"), "{printed}");
        assert!(
            !printed
                .contains(&base64::engine::general_purpose::STANDARD.encode("site:track-secret")),
            "{printed}"
        );
    }

    fn body_bytes(body: &Body) -> Bytes {
        use http_body_util::BodyExt;
        block_on(body.clone().collect()).unwrap().to_bytes()
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }
}
