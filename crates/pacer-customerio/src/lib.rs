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
mod encode;
mod error;
mod requests;
mod secret;

pub use api::{ApiClass, Endpoints, Region};
pub use encode::{path_segment, ulid};
pub use error::{ApiError, EntryError, Error};
pub use requests::{
    Body, Event, EventKind, Identifier, Requests, MAX_BATCH_BYTES, MAX_ID_BYTES,
    MAX_OPERATION_BYTES, MAX_TRANSACTIONAL_BYTES,
};
pub use secret::{Credentials, Secret};
