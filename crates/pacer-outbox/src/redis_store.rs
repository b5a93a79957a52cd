//! The Redis Streams store: `XADD` on enqueue (bounded by a script that checks the length
//! first, so nothing is ever trimmed), a consumer group read with `XREADGROUP`, `XACK` and
//! `XDEL` once Customer.io accepted an entry, `XAUTOCLAIM` of entries another worker left
//! pending too long (it crashed), and a dead-letter stream with reasons.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncCommands, RedisError, RedisResult, Script};

use crate::error::EnqueueError;
use crate::store::{now_ms, DeadLetter, Entry, WhenFull};

/// Where and how the outbox uses Redis.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// `redis://host:port/db` (may carry a password; never printed).
    pub url: String,
    /// Key prefix: the stream is `<prefix>:stream`, the dead letters `<prefix>:dead`.
    pub prefix: String,
    /// The consumer group every delivering process joins.
    pub group: String,
    /// This process's name in the group (default: host-pid-random).
    pub consumer: String,
    /// How long an enqueue (or any command) waits for Redis before failing (default 1 s).
    pub timeout: Duration,
    /// Entries pending this long in another consumer are taken over (default 30 s): longer
    /// than a batch can take, including its retries, or a slow worker's batch is sent twice
    /// (harmless for events, deduplicated by id, but wasted).
    pub claim_idle: Duration,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("timeout", &self.timeout)
            .field("claim_idle", &self.claim_idle)
            .finish()
    }
}

impl RedisOptions {
    /// Redis at `url`, prefix `pacer:outbox`, group `pacer`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        Self {
            url: url.into(),
            prefix: "pacer:outbox".into(),
            group: "pacer".into(),
            consumer: format!(
                "{host}-{}-{}",
                std::process::id(),
                &pacer_customerio::ulid()[20..]
            ),
            timeout: Duration::from_secs(1),
            claim_idle: Duration::from_secs(30),
        }
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This process's consumer name.
    #[must_use]
    pub fn consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = consumer.into();
        self
    }

    /// The command timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long an entry stays pending in another consumer before it is taken over.
    #[must_use]
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle;
        self
    }

    /// The stream's key.
    #[must_use]
    pub fn stream_key(&self) -> String {
        format!("{}:stream", self.prefix)
    }

    /// The dead-letter stream's key.
    #[must_use]
    pub fn dead_key(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    async fn connection(&self, extra: Duration) -> RedisResult<ConnectionManager> {
        let client = redis::Client::open(self.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout + extra)
            .set_number_of_retries(2)
            .set_max_delay(200);
        match tokio::time::timeout(
            self.timeout * 3,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(connection) => connection,
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to Redis timed out",
            ))),
        }
    }

    /// The stream at a glance.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn stats(&self) -> RedisResult<StreamStats> {
        let mut connection = self.connection(Duration::ZERO).await?;
        let stream = self.stream_key();
        let length: usize = connection.xlen(&stream).await?;
        let dead: usize = connection.xlen(self.dead_key()).await?;
        let pending: usize = match redis::cmd("XPENDING")
            .arg(&stream)
            .arg(&self.group)
            .query_async::<redis::Value>(&mut connection)
            .await
        {
            Ok(redis::Value::Array(items)) => items
                .first()
                .and_then(|count| redis::from_redis_value::<usize>(count).ok())
                .unwrap_or(0),
            _ => 0,
        };
        let oldest: StreamRangeReply = connection.xrange_count(&stream, "-", "+", 1).await?;
        let oldest_age = oldest.ids.first().map(|entry| {
            let millis = millis_of(&entry.id).unwrap_or(0);
            Duration::from_millis(now_ms().saturating_sub(millis))
        });
        Ok(StreamStats {
            length,
            pending,
            dead,
            oldest_age,
        })
    }

    /// Up to `count` dead letters, oldest first.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn dead_letters(&self, count: usize) -> RedisResult<Vec<DeadLetter>> {
        let mut connection = self.connection(Duration::ZERO).await?;
        let reply: StreamRangeReply = connection
            .xrange_count(self.dead_key(), "-", "+", count)
            .await?;
        Ok(reply
            .ids
            .iter()
            .map(|entry| DeadLetter {
                operation: entry.get::<String>("op").unwrap_or_default(),
                reason: entry.get::<String>("reason").unwrap_or_default(),
                id: entry.id.clone(),
            })
            .collect())
    }

    /// Moves up to `count` dead letters back into the stream (oldest first), to be delivered
    /// again (after fixing what made Customer.io refuse them); returns how many moved.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn replay(&self, count: usize) -> RedisResult<usize> {
        let mut connection = self.connection(Duration::ZERO).await?;
        let reply: StreamRangeReply = connection
            .xrange_count(self.dead_key(), "-", "+", count)
            .await?;
        for entry in &reply.ids {
            let operation: Vec<u8> = entry.get("op").unwrap_or_default();
            // Both or neither: a replayed letter is never lost nor doubled.
            redis::pipe()
                .atomic()
                .xadd(self.stream_key(), "*", &[("op", operation)])
                .xdel(self.dead_key(), &[&entry.id])
                .query_async::<()>(&mut connection)
                .await?;
        }
        Ok(reply.ids.len())
    }
}

/// The stream at a glance (`pacer-outbox stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Undelivered entries (new and pending).
    pub length: usize,
    /// Entries read by a worker and not yet acknowledged.
    pub pending: usize,
    /// Dead letters.
    pub dead: usize,
    /// Age of the oldest undelivered entry.
    pub oldest_age: Option<Duration>,
}

/// Appends unless the stream holds `capacity` entries already: a full stream refuses rather
/// than trims. (The entry's id, Redis's clock in milliseconds, is its enqueue time.)
const PUSH: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'op', ARGV[2])
";

/// Below this capacity every enqueue checks the length exactly (the script).
const EXACT_BELOW: usize = 10_000;
/// How often the stream's length is sampled for the fast path.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The Redis store of one outbox.
pub(crate) struct RedisStore {
    options: RedisOptions,
    stream: String,
    dead: String,
    capacity: usize,
    connection: ConnectionManager,
    /// Its own connection: a blocking `XREADGROUP` would hold up enqueues on a shared one.
    reader: tokio::sync::Mutex<ConnectionManager>,
    /// Ids this process read and has not settled: an `XAUTOCLAIM` that finds one of its own
    /// (a batch waiting out a long outage) leaves it to the task that holds it.
    held: Mutex<std::collections::HashSet<String>>,
    last_claim: Mutex<Instant>,
    push: Script,
    /// The stream's length as last sampled, plus this process's enqueues since.
    length: AtomicUsize,
    sampled: Mutex<Instant>,
    /// The fast path's appends, sent by one task as pipelines: concurrent enqueues share a
    /// round trip instead of queueing for one each.
    appends: tokio::sync::mpsc::Sender<Append>,
}

/// One append for the pipeline task, and where its outcome goes.
type Append = (Bytes, tokio::sync::oneshot::Sender<Result<(), String>>);

/// Appends at most this many operations per pipeline.
const PIPELINE: usize = 512;

/// Sends appends as pipelines of `XADD`s, one pipeline at a time, until the store is dropped.
async fn append_pipelines(
    mut appends: tokio::sync::mpsc::Receiver<Append>,
    mut connection: ConnectionManager,
    stream: String,
) {
    let mut batch = Vec::with_capacity(PIPELINE);
    while appends.recv_many(&mut batch, PIPELINE).await > 0 {
        let mut pipe = redis::pipe();
        for (operation, _) in &batch {
            pipe.xadd(&stream, "*", &[("op", operation.as_ref())])
                .ignore();
        }
        let result = pipe
            .query_async::<()>(&mut connection)
            .await
            .map_err(|error| error.to_string());
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(result.clone());
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("options", &self.options)
            .field("capacity", &self.capacity)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

/// The longest a read blocks: short, so the worker sees a shutdown soon.
const MAX_BLOCK: Duration = Duration::from_millis(250);

impl RedisStore {
    pub(crate) async fn connect(options: RedisOptions, capacity: usize) -> RedisResult<Self> {
        let connection = options.connection(Duration::ZERO).await?;
        let reader = options.connection(MAX_BLOCK).await?;
        let (appends, pipelined) = tokio::sync::mpsc::channel(PIPELINE * 8);
        tokio::spawn(append_pipelines(
            pipelined,
            connection.clone(),
            options.stream_key(),
        ));
        let store = Self {
            appends,
            stream: options.stream_key(),
            dead: options.dead_key(),
            capacity,
            connection,
            reader: tokio::sync::Mutex::new(reader),
            held: Mutex::new(std::collections::HashSet::new()),
            last_claim: Mutex::new(Instant::now() - options.claim_idle),
            push: Script::new(PUSH),
            length: AtomicUsize::new(capacity),
            sampled: Mutex::new(Instant::now() - SAMPLE_EVERY),
            options,
        };
        store.create_group().await?;
        Ok(store)
    }

    async fn create_group(&self) -> RedisResult<()> {
        let mut connection = self.connection.clone();
        let created: RedisResult<()> = connection
            .xgroup_create_mkstream(&self.stream, &self.options.group, "0")
            .await;
        match created {
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Appends `operation`. Far from the capacity (under 90 % of it, by the stream's length
    /// sampled every 50 ms plus this process's enqueues since), a plain `XADD`; near it, or
    /// for a capacity under 10,000, a script that checks the length and appends atomically.
    /// Producers in other processes may overshoot the capacity by what they enqueue within
    /// one sample, never trim.
    pub(crate) async fn push(&self, operation: Bytes, full: WhenFull) -> Result<(), EnqueueError> {
        let timeout = self.options.timeout;
        let deadline = match full {
            WhenFull::Reject => None,
            WhenFull::Wait(wait) => Some(tokio::time::Instant::now() + wait),
        };
        loop {
            let added = tokio::time::timeout(timeout, self.append(&operation)).await;
            match added {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    return Err(EnqueueError::Unavailable {
                        timeout,
                        reason: error.to_string(),
                    })
                }
                Err(_) => {
                    return Err(EnqueueError::Unavailable {
                        timeout,
                        reason: "Redis did not answer in time".into(),
                    })
                }
            }
            match deadline {
                Some(deadline) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                _ => {
                    return Err(EnqueueError::Full {
                        capacity: self.capacity,
                    })
                }
            }
        }
    }

    /// Whether `operation` was appended (false: the stream is full).
    async fn append(&self, operation: &Bytes) -> RedisResult<bool> {
        let mut connection = self.connection.clone();
        self.sample_length().await?;
        let far = self.capacity >= EXACT_BELOW
            && self.length.load(Ordering::Relaxed) < self.capacity / 10 * 9;
        if far {
            let (reply, outcome) = tokio::sync::oneshot::channel();
            let appended = match self.appends.send((operation.clone(), reply)).await {
                Ok(()) => outcome
                    .await
                    .unwrap_or_else(|_| Err("the append task ended".into())),
                Err(_) => Err("the append task ended".into()),
            };
            appended.map_err(|reason| RedisError::from(std::io::Error::other(reason)))?;
            self.length.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        let mut invocation = self.push.key(&self.stream);
        invocation.arg(self.capacity).arg(operation.as_ref());
        let added: Option<String> = invocation.invoke_async(&mut connection).await?;
        Ok(added.is_some())
    }

    /// Samples the stream's length when the last sample is older than 50 ms.
    async fn sample_length(&self) -> RedisResult<()> {
        {
            let mut sampled = self.sampled.lock().expect("never poisoned");
            if sampled.elapsed() < SAMPLE_EVERY {
                return Ok(());
            }
            *sampled = Instant::now();
        }
        let mut connection = self.connection.clone();
        let length: usize = connection.xlen(&self.stream).await?;
        self.length.store(length, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) async fn take(&self, max: usize, wait: Duration) -> Vec<Entry> {
        let claimed = self.claim(max).await;
        if !claimed.is_empty() {
            return self.entries(claimed).await;
        }
        let wait = wait.min(MAX_BLOCK);
        let mut options = redis::streams::StreamReadOptions::default()
            .group(&self.options.group, &self.options.consumer)
            .count(max);
        // BLOCK 0 would block forever: without a wait, no BLOCK at all.
        if !wait.is_zero() {
            options = options.block(wait.as_millis().max(1) as usize);
        }
        let read: RedisResult<Option<StreamReadReply>> = {
            let mut reader = self.reader.lock().await;
            reader
                .xread_options(&[&self.stream], &[">"], &options)
                .await
        };
        match read {
            Ok(Some(reply)) => {
                let ids = reply.keys.into_iter().flat_map(|key| key.ids).collect();
                self.entries(ids).await
            }
            Ok(None) => Vec::new(),
            Err(error) => {
                if error.code() == Some("NOGROUP") {
                    // Redis came back without the stream (no persistence): start the group again.
                    let _ = self.create_group().await;
                } else {
                    tracing::warn!(%error, "reading the outbox stream failed; trying again");
                    tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
                }
                Vec::new()
            }
        }
    }

    /// Takes over entries pending too long in other consumers (a crashed worker's), at most
    /// once per half `claim_idle`.
    async fn claim(&self, max: usize) -> Vec<StreamId> {
        let interval = (self.options.claim_idle / 2).max(Duration::from_millis(100));
        {
            let mut last = self.last_claim.lock().expect("never poisoned");
            if last.elapsed() < interval {
                return Vec::new();
            }
            *last = Instant::now();
        }
        let mut connection = self.connection.clone();
        let claimed: RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.options.group)
            .arg(&self.options.consumer)
            .arg(self.options.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut connection)
            .await;
        match claimed {
            Ok(reply) => {
                if !reply.claimed.is_empty() {
                    tracing::info!(
                        count = reply.claimed.len(),
                        "took over outbox entries another worker left pending"
                    );
                }
                reply.claimed
            }
            Err(error) => {
                tracing::debug!(%error, "XAUTOCLAIM failed");
                Vec::new()
            }
        }
    }

    async fn entries(&self, ids: Vec<StreamId>) -> Vec<Entry> {
        let mut entries = Vec::with_capacity(ids.len());
        let mut broken = Vec::new();
        let ids: Vec<StreamId> = {
            let mut held = self.held.lock().expect("never poisoned");
            ids.into_iter()
                .filter(|item| held.insert(item.id.clone()))
                .collect()
        };
        for item in ids {
            let operation: Option<Vec<u8>> = item.get("op");
            let entry = Entry {
                enqueued_ms: millis_of(&item.id).unwrap_or_else(now_ms),
                operation: Bytes::from(operation.clone().unwrap_or_default()),
                id: item.id,
            };
            match operation {
                Some(operation) if !operation.is_empty() => entries.push(entry),
                _ => broken.push((entry, "the stream entry has no `op` field".to_owned())),
            }
        }
        if !broken.is_empty() {
            self.dead(broken).await;
        }
        entries
    }

    /// `XACK` and `XDEL` together; tried a few times. An entry whose acknowledgement is lost
    /// stays pending and is delivered again after `claim_idle` (deduplicated by its id).
    pub(crate) async fn ack(&self, entries: &[Entry]) {
        let ids: Vec<&str> = entries.iter().map(|entry| entry.id.as_str()).collect();
        if ids.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .xack(&self.stream, &self.options.group, &ids)
            .xdel(&self.stream, &ids);
        self.run(&pipe, "acknowledging delivered entries").await;
        self.forget(entries);
    }

    pub(crate) async fn dead(&self, entries: Vec<(Entry, String)>) {
        if entries.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (entry, reason) in &entries {
            pipe.xadd(
                &self.dead,
                "*",
                &[
                    ("op", entry.operation.to_vec()),
                    ("reason", reason.clone().into_bytes()),
                    ("id", entry.id.clone().into_bytes()),
                ],
            );
        }
        let ids: Vec<&str> = entries.iter().map(|(entry, _)| entry.id.as_str()).collect();
        pipe.xack(&self.stream, &self.options.group, &ids)
            .xdel(&self.stream, &ids);
        self.run(&pipe, "dead-lettering refused entries").await;
        let mut held = self.held.lock().expect("never poisoned");
        for (entry, _) in &entries {
            held.remove(&entry.id);
        }
    }

    async fn run(&self, pipe: &redis::Pipeline, what: &str) {
        for attempt in 0..5_u32 {
            let mut connection = self.connection.clone();
            match pipe.query_async::<()>(&mut connection).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, attempt, "{what} failed");
                    tokio::time::sleep(Duration::from_millis(100) * 2_u32.pow(attempt)).await;
                }
            }
        }
        tracing::error!("{what} failed for good; the entries will be claimed and sent again");
    }

    /// This process no longer holds `entries` (settled, or left pending for another worker).
    pub(crate) fn forget(&self, entries: &[Entry]) {
        let mut held = self.held.lock().expect("never poisoned");
        for entry in entries {
            held.remove(&entry.id);
        }
    }

    pub(crate) fn held(&self) -> usize {
        self.held.lock().expect("never poisoned").len()
    }
}

/// The milliseconds part of a stream id (`<ms>-<seq>`): when Redis appended the entry.
fn millis_of(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}
