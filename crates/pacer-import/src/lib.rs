//! `pacer-import`: bulk-import people and events into Customer.io through the pacer stack,
//! streaming any file size in constant memory, with a progress bar, a durable checkpoint to
//! resume from, a dead-letter file for what the server refuses, and event ids derived from the
//! input so that nothing is ever recorded twice. Its requests spend the quota's bulk lane
//! (`Client::send_packed`): a service's interactive calls on the same quota (in this process,
//! or in others sharing it through Redis) go before the import's backlog.
//!
//! Input, one record per line (NDJSON) or row (CSV with a header):
//!
//! ```text
//! {"type":"person","id":"42","email":"ada@example.com","attributes":{"plan":"pro"}}
//! {"type":"event","person":"42","name":"signed_up","timestamp":1700000000,"data":{"source":"ads"}}
//! ```
//!
//! CSV columns: `type` (`person` by default, or `event`), `id`, `email`, `person` and `name`
//! (events), `event_id`, `timestamp`; any other column is an attribute (people) or a data field
//! (events). Without `type`, an NDJSON line with a `name` is an event; extra top-level keys are
//! attributes or data. An event's `person` containing `@` is an email. An event's own `id`
//! (`event_id` in CSV) must be a ULID, as Customer.io deduplicates on; without one, an id is
//! derived from the line and its content, so a retry or a resume never doubles the event.

mod budget;
pub mod checkpoint;
pub mod csv_rows;
pub mod deadletter;
pub mod engine;
pub mod generate;
pub mod input;
pub mod interrupt;
pub mod progress;
pub mod reason;
pub mod record;
