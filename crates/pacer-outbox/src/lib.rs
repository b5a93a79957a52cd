//! An outbox for live Customer.io traffic: enqueue without waiting, deliver as paced Track v2
//! batches, in memory or durably through Redis Streams.
//!
//! A service that awaits `Client::track` per sign-up is held to the Track quota (about 100
//! requests/s): one event per request. The [`Outbox`] stores each operation and returns;
//! delivery packs stored operations into `/api/v2/batch` requests of up to 500 KB (thousands
//! of events), several in flight, each spending one slot of the same [`Client`] stack
//! (pacing, retries, the Redis-shared quota when configured), so outbox and direct calls share
//! one budget. Deliveries spend its bulk lane (`Client::send_packed`): interactive calls on the
//! same quota go first, and the outbox keeps at least its minimum share (10 %) however busy
//! they are.
//!
//! - **Enqueue, don't wait.** Typed calls for every Track v2 person action ([`Outbox::identify`],
//!   [`track`](Outbox::track), [`track_anonymous`](Outbox::track_anonymous),
//!   [`page`](Outbox::page), [`screen`](Outbox::screen), [`delete`](Outbox::delete),
//!   [`suppress`](Outbox::suppress), [`unsuppress`](Outbox::unsuppress),
//!   [`add_device`](Outbox::add_device), [`delete_device`](Outbox::delete_device),
//!   [`merge`](Outbox::merge), and [`enqueue`](Outbox::enqueue) for any [`Operation`]). Each
//!   validates first (Customer.io's id, attribute and 32 KB limits: [`EnqueueError::Invalid`]
//!   at the call site), fixes an event's ULID (a redelivery is deduplicated by Customer.io),
//!   and returns once the operation is stored. The store is bounded: full, an enqueue returns
//!   [`EnqueueError::Full`] or waits ([`WhenFull`]); nothing undelivered is trimmed.
//! - **Deliver in batches.** A batch closes when full or after the linger (25 ms by default);
//!   8 are in flight by default. A 200 acknowledges every entry; a 207 acknowledges the
//!   accepted ones, dead-letters the refused ones with Customer.io's reason and sends the
//!   retryable ones again ([`pacer_customerio::BatchOutcome`]) after a backoff, up to
//!   [`OutboxBuilder::max_entry_retries`] times (10) before they too are dead-lettered with the
//!   reason, so that no entry holds a delivery task for ever; an unreadable 207 counts
//!   nothing delivered. A request refused whole (400) is split in halves until the operation at
//!   fault is alone. 5xx, timeouts and 429s that outlast the client's retries are retried with
//!   backoff. Nothing is acknowledged before Customer.io accepted it.
//! - **Two stores.** In memory (the default, [`OutboxBuilder::build`]): fast; **a crash or a
//!   kill loses every operation queued or in flight**; [`Outbox::shutdown`] drains and reports
//!   what is left. Redis Streams (feature `redis`, [`OutboxBuilder::build_redis`]): `XADD` on
//!   enqueue, a consumer group so every process (or a separate worker fleet, `pacer-outbox
//!   drain`) delivers, `XACK` after delivery, `XAUTOCLAIM` of what a crashed worker left
//!   pending, and a dead-letter stream with reasons (`pacer-outbox dead`, `replay`). What an
//!   `Ok` from an enqueue promises then is what Redis's `appendfsync` promises: with
//!   `always`, the operation is on disk; with `everysec` (Redis's default with AOF), up to a
//!   second of enqueues can be lost if Redis itself crashes; without AOF or RDB, a Redis
//!   restart loses the stream. Redis down: an enqueue fails within
//!   [`RedisOptions::timeout`] with [`EnqueueError::Unavailable`], or falls back to memory if
//!   chosen ([`OutboxBuilder::fallback_to_memory`]); it never blocks forever.
//!
//! Delivery is at least once: a worker killed after Customer.io accepted a batch and before
//! it acknowledged it has that batch delivered again by another worker. Events are
//! deduplicated by their id; identify, delete and the other actions are idempotent.
//!
//! # Metrics (feature `metrics`)
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `pacer_outbox_enqueued_total` | counter | `store` (`memory`, `redis`) |
//! | `pacer_outbox_enqueue_failed_total` | counter | `reason` (`invalid`, `full`, `unavailable`, `closed`) |
//! | `pacer_outbox_delivered_total` | counter | |
//! | `pacer_outbox_dead_total` | counter | |
//! | `pacer_outbox_pending` | gauge | (set by [`Outbox::stats`]) |
//! | `pacer_outbox_oldest_lag_seconds` | gauge | age of the oldest entry of the last batch packed |
//! | `pacer_outbox_batch_operations` | histogram | operations per batch request |
//! | `pacer_outbox_batch_fill` | histogram | a batch's size over 500 KB |

mod error;
mod memory;
mod metrics;
mod outbox;
#[cfg(feature = "redis")]
mod redis_store;
mod store;
mod worker;

pub use error::EnqueueError;
pub use outbox::{Outbox, OutboxBuilder, OutboxStats, Receipt, ShutdownReport};
pub use pacer_customerio::{Client, Event, Identifier, Operation};
#[cfg(feature = "redis")]
pub use redis_store::{RedisOptions, StreamStats};
pub use store::{DeadLetter, WhenFull};
