//! A faithful in-process mock of Customer.io's Track, App and Pipelines APIs, for tests,
//! examples and benchmarks: the same paths, auth, validation, size limits and error envelopes
//! as the real service (as Customer.io documents them: <https://docs.customer.io/api/track/>,
//! <https://docs.customer.io/api/app/>, <https://docs.customer.io/api/cdp/>), rate limits per API class in
//! a server model of your choice, seeded fault injection, and a [`Ledger`] of what was applied.
//!
//! | API | endpoints | auth |
//! |---|---|---|
//! | Track v1 | `GET /api/v1/accounts/region`, `PUT`/`DELETE /api/v1/customers/{id}`, `POST /api/v1/customers/{id}/events`, `POST /api/v1/events`, `PUT /api/v1/customers/{id}/devices`, `DELETE /api/v1/customers/{id}/devices/{device}`, `POST /api/v1/customers/{id}/suppress` and `/unsuppress`, `POST /api/v1/merge_customers`, `POST /api/v1/forms/{id}/submit` | Basic `site_id:api_key` |
//! | Track v2 | `POST /api/v2/entity` (≤ 32 KB), `POST /api/v2/batch` (≤ 500 KB, ≤ 32 KB per operation, 207 with `batch_index` errors) | Basic |
//! | App | `POST /v1/send/email`, `POST /v1/send/push`, `POST /v1/campaigns/{id}/triggers`, `GET /v1/customers/{id}/attributes` | Bearer app key |
//! | Pipelines | `POST /v1/batch`, `/v1/identify`, `/v1/track`, `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias` (invalid payloads answer 200 and are dropped unless `X-Strict-Mode: 1`) | Basic `key:` |
//!
//! Answers follow Customer.io: `200 {}`; 401 as plain text `Unauthorized request`; Track v1 400
//! as `{"meta":{"errors":[..]}}`; transactional errors as `{"meta":{"error":".."}}`; App errors
//! and every 429 as `{"errors":[{"detail":"..","status":"429"}]}` with `Retry-After` in whole
//! seconds; v2 errors as `{"errors":[{"reason","field","message","batch_index"?}]}`. Events are
//! deduplicated on their `id` (and Pipelines track calls on `messageId`).
//!
//! Modelled simply: people are keyed by the identifier as given (an email and an id are two
//! people); objects, relationships and delivery events are validated but not stored.
//!
//! ```
//! # mod pacer { pub mod mock { pub use ::pacer_mock::*; } }
//! use pacer::mock::{MockConfig, MockServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mock = MockServer::start(MockConfig::default()).await.unwrap();
//! println!("Customer.io at {}", mock.base_url());
//! assert_eq!(mock.ledger().counts().requests, 0);
//! # }
//! ```

mod config;
mod ledger;
mod limits;
mod reply;
mod routes;
mod server;

pub use config::{Api, Faults, Limit, MockConfig, ServerModel};
pub use ledger::{Counts, Event, Ledger, Person};
pub use server::MockServer;
