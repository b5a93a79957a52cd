//! One quota shared by many processes: the quota's state lives in Redis, and each process
//! reserves send slots from it with one atomic script call (EVALSHA, with the NOSCRIPT fallback),
//! on Redis's clock so that every process agrees on time.
//!
//! A reservation returns slot *times*, not "allowed yes/no": a process then waits locally,
//! fair and cancellation-safe, instead of polling Redis. Several slots can be leased at once to
//! amortise the round trip under load. A pause (a server's Retry-After) is written to Redis, so
//! every process on the quota pauses.
//!
//! Keys: `{pacer:<prefix>:<key>}:…`: one hash tag per quota key, so a script's keys share a
//! Redis Cluster slot; the quota's parameters are part of the state key, so two configurations
//! never read each other's state; every key expires once it constrains nothing.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

use crate::quota::{Model, Quota};

/// Slots reserved in one call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reservation {
    /// Redis's clock when the slots were reserved, in microseconds since the Unix epoch.
    pub redis_now_micros: u64,
    /// When each slot may be sent, as a delay from `redis_now_micros`.
    pub slots: Vec<Duration>,
}

/// A connection to the shared quota state in Redis. Cheap to clone: clones share the
/// multiplexed, auto-reconnecting connection.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    gcra: Script,
    sliding: Script,
    pause: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`); keys are named under `prefix` (one prefix
    /// per quota domain, e.g. a Customer.io workspace).
    ///
    /// # Errors
    /// When the URL is invalid or Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new(client).await?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            gcra: Script::new(concat!(
                include_str!("prelude.lua"),
                include_str!("gcra.lua")
            )),
            sliding: Script::new(concat!(
                include_str!("prelude.lua"),
                include_str!("sliding.lua")
            )),
            pause: Script::new(include_str!("pause.lua")),
        })
    }

    fn tag(&self, key: &str) -> String {
        // Braces would end the hash tag early; keep them out of the tag.
        let key = key.replace(['{', '}'], "_");
        format!("{{pacer:{}:{key}}}", self.prefix)
    }

    /// Reserves `slots` consecutive send slots of `key` under `quota`: when each may be sent,
    /// on Redis's clock, which every process shares.
    ///
    /// # Errors
    /// When Redis fails or is unreachable.
    pub async fn reserve(
        &self,
        key: &str,
        quota: &Quota,
        slots: u32,
    ) -> Result<Reservation, RedisError> {
        let tag = self.tag(key);
        let micros = |duration: Duration| u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let mut connection = self.connection.clone();
        let offsets: Vec<i64> = match quota.model() {
            Model::Gcra { burst } => {
                let interval = micros(quota.emission_interval()).max(1);
                let tolerance = interval.saturating_mul(u64::from(burst.get() - 1));
                self.gcra
                    .key(format!("{tag}:gcra:{interval}:{tolerance}"))
                    .key(format!("{tag}:pause"))
                    .arg(interval)
                    .arg(tolerance)
                    .arg(slots.max(1))
                    .invoke_async(&mut connection)
                    .await?
            }
            Model::SlidingWindow => {
                let window = micros(quota.effective_window()).max(1);
                let limit = quota.limit();
                let state = format!("{tag}:sliding:{window}:{limit}");
                self.sliding
                    .key(&state)
                    .key(format!("{tag}:pause"))
                    .key(format!("{state}:seq"))
                    .arg(window)
                    .arg(limit)
                    .arg(slots.max(1))
                    .invoke_async(&mut connection)
                    .await?
            }
        };
        let mut values = offsets.into_iter().map(|value| value.max(0).unsigned_abs());
        let redis_now_micros = values.next().unwrap_or_default();
        Ok(Reservation {
            redis_now_micros,
            slots: values.map(Duration::from_micros).collect(),
        })
    }

    /// Pauses `key` for every process for `wait` (a longer pause already set stands); returns
    /// the pause in force.
    ///
    /// # Errors
    /// When Redis fails or is unreachable.
    pub async fn pause_for(&self, key: &str, wait: Duration) -> Result<Duration, RedisError> {
        let mut connection = self.connection.clone();
        let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX).max(1);
        let remaining: i64 = self
            .pause
            .key(format!("{}:pause", self.tag(key)))
            .arg(micros)
            .invoke_async(&mut connection)
            .await?;
        Ok(Duration::from_micros(remaining.max(0).unsigned_abs()))
    }
}
