//! The thin Customer.io layer at the bottom of a pacer stack: typed operations built as
//! `http::Request`s for any tower HTTP service, and Customer.io's answers read back as typed
//! results and errors.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    clippy::all
)]

mod api;
mod client;
mod encode;
mod error;
#[cfg(feature = "https")]
mod https;
mod requests;
mod response;
mod secret;

pub use api::{ApiClass, Endpoints, Region};
pub use client::{api_class_of, default_quota, BatchReport, Client, ClientBuilder, Stack};
pub use encode::{path_segment, ulid};
pub use error::{ApiError, EntryError, Error};
#[cfg(feature = "https")]
pub use https::{https_client, HttpsClient, Roots};
pub use requests::{
    BatchEntries, Body, Event, EventKind, Identifier, Requests, MAX_BATCH_BYTES, MAX_ID_BYTES,
    MAX_OPERATION_BYTES, MAX_TRANSACTIONAL_BYTES,
};
pub use response::{read, Answer};
pub use secret::{Credentials, Secret};
