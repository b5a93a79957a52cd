//! The thin Customer.io layer at the bottom of a pacer stack: typed operations built as
//! `http::Request`s for any tower HTTP service, and Customer.io's answers read back as typed
//! results and errors.
//!
//! - [`Requests`] builds every operation: Track v1 (identify, delete, events, anonymous events,
//!   page and screen views, devices, suppress/unsuppress, merge), Track v2 (`entity`, `batch`
//!   split under 500 KB, per-entry 207 results), App (transactional email and push, broadcast
//!   triggers, customer attributes) and Pipelines (`batch` with `X-Strict-Mode: 1`), US or EU or
//!   any base URL. Ids are percent-encoded as one path segment; events get a ULID `id` and the
//!   [`Idempotent`](pacer_retry::Idempotent) mark; sizes are checked before sending.
//! - [`read`] turns an answer into an [`Answer`] or a typed [`Error`] from any of Customer.io's
//!   four error envelopes (or its plain-text 401).
//! - [`Operation`], [`Packer`] and [`BatchOutcome`] are Track v2 batches typed: operations with
//!   a documented JSON schema, one request filled up to the limits, and each entry of a 207
//!   mapped to delivered, retry or refused ([`Client::send_packed`]).
//! - [`Client`] assembles the default stack (retry → rate limit per [`ApiClass`] → throttle
//!   feedback) over [`https_client`] or any HTTP service, with one method per operation.
//!
//! Defaults that bound every call, whatever the server does (each set on [`ClientBuilder`]):
//! - connect timeout: 10 s ([`DEFAULT_CONNECT_TIMEOUT`], [`https_client`] and
//!   [`ClientBuilder::build_https`]);
//! - response timeout: 30 s per attempt for the answer's head, the wait for a slot of the quota
//!   not counted ([`DEFAULT_RESPONSE_TIMEOUT`]);
//! - body timeout: 30 s for the whole answer body ([`DEFAULT_BODY_TIMEOUT`]);
//! - answer bodies: 1 MiB at most, success or error ([`DEFAULT_MAX_ANSWER_BYTES`]);
//! - server text in an error: 1 KiB per message (cut, with the original length noted), 8
//!   messages, 5 shown by `Display`;
//! - server waits: Retry-After honoured up to 60 s; a longer one fails at once as
//!   [`Error::Throttled`] with the server's own, unclamped value; a success's pause is cut to
//!   60 s with a warning;
//! - ids: `.`, `..`, empty, blank and control characters refused before sending
//!   ([`check_identifier`]);
//! - batch answers: a 207 (or a 200 to a batch) that does not say which entries were refused
//!   fails with [`Error::UnreadableAnswer`]; nothing counts as delivered.
//!
//! ```
//! # mod pacer { pub mod customerio { pub use ::pacer_customerio::*; } pub mod mock { pub use ::pacer_mock::*; } }
//! use pacer::customerio::{Client, Credentials, Event, Roots};
//! use pacer::mock::{MockConfig, MockServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = MockServer::start(MockConfig::default()).await?;
//! let client = Client::builder()
//!     .base_url(&mock.base_url()) // omit for the real service
//!     .credentials(Credentials::track("site-id", "track-key"))
//!     .build_https(Roots::Webpki)?;
//! let attributes = serde_json::json!({"plan": "pro"});
//! client.identify("42", attributes.as_object().unwrap()).await?;
//! client.track("42", Event::new("signed_up")).await?;
//! assert_eq!(mock.ledger().events().len(), 1);
//! # Ok(())
//! # }
//! ```

mod api;
mod batch;
mod client;
mod encode;
mod error;
#[cfg(feature = "https")]
mod https;
mod in_flight;
mod limits;
mod requests;
mod response;
mod secret;
mod timeouts;

pub use api::{ApiClass, Endpoints, Region};
pub use batch::{is_retryable_entry, BatchOutcome, EntryOutcome, Operation, Packer, Pushed};
pub use client::{
    api_class_of, default_quota, documented_cap, BatchReport, ClassQueue, Client, ClientBuilder,
    ResponseBody, Stack,
};
pub use encode::{format_ulid, is_ulid, path_segment, ulid};
pub use error::{ApiError, EntryError, Error};
#[cfg(feature = "https")]
pub use https::{https_client, https_client_with, HttpsClient, Roots};
pub use limits::{
    check_attributes, check_event_id, check_identifier, check_path_segment, MAX_ATTRIBUTES,
    MAX_BATCH_BYTES, MAX_BATCH_OPERATIONS_BYTES, MAX_ID_BYTES, MAX_OPERATION_BYTES,
    MAX_TRANSACTIONAL_BYTES, MAX_VALUE_BYTES,
};
pub use requests::{
    BatchEntries, Body, Event, EventKind, Identifier, MessageId, Requests, SendEmail,
};
pub use response::{read, read_with, Answer, ReadLimits, DEFAULT_MAX_ANSWER_BYTES};
pub use secret::{Credentials, Secret};
pub use timeouts::{
    ResponseTimedOut, TimeoutPhase, DEFAULT_BODY_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RESPONSE_TIMEOUT,
};
