//! One quota shared by many processes: the quota's state lives in Redis, and each process
//! reserves send slots from it with one atomic script call (`EVALSHA`, with the `NOSCRIPT`
//! fallback), on Redis's clock so that every process agrees on time.
//!
//! It is the same [`Limiter`](pacer_limit::Limiter) and [`LimitLayer`](pacer_limit::LimitLayer), built with
//! [`LimiterBuilderExt::shared`]: this crate is a [`SlotSource`](pacer_limit::SlotSource) for
//! `pacer-limit`'s core, which keeps the queue, pauses and wake-ups.
//!
//! - **Reservations, not polling.** A process asks Redis *when* its next slots are, then waits
//!   locally, fair (FIFO) and cancellation-safe as always. A waiter that gives up returns its
//!   slot to Redis where the model allows.
//! - **Leases.** Under load a process reserves up to [`SharedQuota::lease`] slots per round
//!   trip (never more than it has waiters for), so 100 requests per second need far fewer than
//!   100 round trips.
//! - **Lanes across processes.** Slots for bulk waiters
//!   ([`Priority::Bulk`](pacer_limit::Priority::Bulk)) alone are booked just in time, no more
//!   than one interval of an evenly spaced quota ahead of now: while one process drains a
//!   backlog at the full quota, an interactive request in another waits at most about two
//!   intervals (a sliding window books what its window has free, bulk or not).
//! - **Shared pauses.** [`Limiter::pause_until`](pacer_limit::Limiter::pause_until), which the throttle
//!   layer calls on a server's `Retry-After`, is written to Redis: every process on the quota
//!   pauses from its next reservation on, not only the one that was refused.
//! - **Several windows.** A quota with longer windows stacked on it
//!   ([`Quota::and`](pacer_limit::Quota::and), e.g. 10 per second and a daily quota) is
//!   enforced whole by the same script call: each cap is a sliding count of its own
//!   (`{…}:cap:<window µs>:<limit>:at` and `:count`, exact up to 1,024 per window, on a grid of
//!   1/1,024 of the window above), kept one window past its newest slot, so a daily count lives
//!   a day. Slots given back leave the caps' counts. Each reservation brings back every cap's
//!   count ([`SlotSource::cap_count`](pacer_limit::SlotSource::cap_count)), so a 429 without
//!   `Retry-After` is put down to a cap that all the processes together spent. While Redis is
//!   away, each process's local share takes its part of every cap too.
//! - **Never unlimited, and through an outage at full pace.** A call refused or slower than
//!   [`SharedQuota::timeout`] marks Redis down for every key at once; a `tracing` warning says
//!   so and each process paces locally at its share of the quota ([`Fallback`]): `1 / the
//!   processes` Redis counted while it was up (each limiter sends a heartbeat every
//!   [`retry_every`](SharedQuota::retry_every); `expected_processes` is only the first guess),
//!   going on from its own pace, with no burst and no gap; the processes' local slots
//!   interleave on Redis's clock by their rank in the membership, as the shared schedule's
//!   did, rather than drift into step. Redis is tried again every
//!   `retry_every`; the first process back pauses the key for `retry_every + timeout`, long
//!   enough for the others to find Redis, each keeps its local pace until then, and the shared
//!   schedule starts there, evenly spaced: no herd, and no burst from a restarted, empty Redis.
//!   A server's pause that Redis lost in a restart, or never heard of, is written back.
//! - **Cluster-compatible keys.** Keys are `{pacer:<prefix>:<key>}:…` (braces and `%` in names
//!   percent-encoded): one hash tag per quota key, so a script's keys share a Redis Cluster
//!   slot. The quota's parameters are part of the state key, so two configurations never read
//!   each other's state, and every key expires once it constrains nothing. [`RedisStore`]
//!   itself connects to one server (or a proxy in front of a cluster); it does not follow
//!   `MOVED` redirects.
//!
//! Limits worth knowing: a pause reaches the other processes at their next reservation, so each
//! may still send the slots it already holds (at most a lease). One slow call puts only this
//! process on its local share while the others keep sharing through Redis; together they then
//! send up to `1 / processes` of the quota more, until it answers again. A process that finds
//! Redis again only after the shared schedule restarted (its probes failed for longer than
//! `retry_every`) overlaps it with its local pace for that time. The membership is one sorted
//! set per prefix: a process using only some keys of a prefix counts for all of them (their
//! shares are smaller, never larger, than needed).
//!
//! ```no_run
//! # mod pacer { pub mod limit { pub use ::pacer_limit::*; } pub mod redis { pub use ::pacer_limit_redis::*; } }
//! use pacer::limit::{Limiter, Quota};
//! use pacer::redis::{LimiterBuilderExt, RedisStore, SharedQuota};
//!
//! # async fn example() -> Result<(), redis::RedisError> {
//! // Every pod of the service runs this; together they send at most 100 requests per second.
//! let store = RedisStore::connect("redis://127.0.0.1:6379/", "workspace-42").await?;
//! let limiter = Limiter::builder(Quota::per_second(100))
//!     .shared(SharedQuota::new(store, 4).lease(8))
//!     .build();
//! limiter.acquire(()).await.unwrap();
//! # Ok(())
//! # }
//! ```

mod clock;
mod health;
mod metrics;
mod options;
mod refill;
mod slots;
mod sources;
mod store;

pub use options::{Fallback, SharedQuota, SharedStats};
pub use sources::{LimiterBuilderExt, LimiterExt, SharedSlots};
pub use store::{RedisStore, Reservation};
