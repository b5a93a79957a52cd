//! [`Outbox`]: typed enqueue calls for every Track v2 person action, a builder, stats and
//! shutdown.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacer_customerio::{Client, Event, Identifier, Operation};
use pacer_retry::Backoff;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::BoxError;

use crate::error::EnqueueError;
use crate::memory::MemoryStore;
use crate::metrics;
use crate::store::{DeadLetter, Store, WhenFull};
use crate::worker::{self, Delivery, Phase, Sender, Shared};

/// What an enqueue stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// An event's deduplication id (a ULID), fixed now: however often the operation is
    /// delivered, Customer.io records it once. `None` for other operations.
    pub event_id: Option<String>,
}

/// The outbox's counters at a glance (this process's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Operations stored.
    pub enqueued: u64,
    /// Operations Customer.io accepted.
    pub delivered: u64,
    /// Operations Customer.io refused, dead-lettered.
    pub dead: u64,
    /// Batch requests sent (retries included).
    pub requests: u64,
    /// In memory: operations queued or in flight. In Redis: read by this process and not yet
    /// settled.
    pub pending: usize,
}

/// What [`Outbox::shutdown`] left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Operations delivered over the outbox's life.
    pub delivered: u64,
    /// Operations dead-lettered over its life.
    pub dead: u64,
    /// Operations not delivered when the deadline passed. In memory they are lost with the
    /// process; in Redis they stay in the stream, pending, for another worker to claim.
    pub left: usize,
}

/// Builds an [`Outbox`].
#[must_use]
pub struct OutboxBuilder {
    sender: Sender,
    capacity: usize,
    when_full: WhenFull,
    delivery: Delivery,
    deliver: bool,
    #[cfg(feature = "redis")]
    fallback: bool,
}

impl std::fmt::Debug for OutboxBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxBuilder")
            .field("capacity", &self.capacity)
            .field("when_full", &self.when_full)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl OutboxBuilder {
    /// At most `capacity` undelivered operations in the store (default 100,000). Full, an
    /// enqueue fails or waits ([`when_full`](Self::when_full)); nothing undelivered is ever
    /// trimmed.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// What an enqueue does when the store is full (default [`WhenFull::Reject`]).
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// How long a partly filled batch waits for more operations (default 25 ms).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.delivery.linger = linger;
        self
    }

    /// Batch requests in flight at most (default 8); each waits for its Track slot.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.delivery.concurrency = concurrency.max(1);
        self
    }

    /// Closes a batch at `max` operations as well as at 500 KB (default: size only).
    pub fn max_operations(mut self, max: usize) -> Self {
        self.delivery.max_operations = Some(max.max(1));
        self
    }

    /// The pause between attempts of a batch that failed for a transient reason after the
    /// client's own retries (default 200 ms doubling to 30 s, equal jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.delivery.backoff = backoff;
        self
    }

    /// How many times an operation is sent again when Customer.io keeps answering for it, in a
    /// 207, with a reason that should pass (`rate_limited`, `internal`, …) before it is
    /// dead-lettered with that reason (default 10; each time after the batch's backoff). A
    /// failure of the whole request (an outage, a 5xx, a 429) never counts: it is retried until
    /// it passes or the outbox stops.
    pub fn max_entry_retries(mut self, retries: u32) -> Self {
        self.delivery.max_entry_retries = retries;
        self
    }

    /// Stores only: no delivery in this process (a separate worker fleet delivers, e.g.
    /// `pacer-outbox drain`). Only useful with Redis.
    pub fn enqueue_only(mut self) -> Self {
        self.deliver = false;
        self
    }

    /// With Redis: when Redis does not answer an enqueue in time, keep the operation in this
    /// process's memory (delivered from there, lost on a crash) instead of failing it.
    #[cfg(feature = "redis")]
    pub fn fallback_to_memory(mut self, fallback: bool) -> Self {
        self.fallback = fallback;
        self
    }

    /// An outbox in this process's memory, delivering at once. Must be called in a tokio
    /// runtime. What a crash or a kill loses: every operation queued or in flight.
    pub fn build(self) -> Outbox {
        let store = Store::Memory(Arc::new(MemoryStore::new(self.capacity)));
        self.start(store, None)
    }

    /// An outbox on a Redis stream (see [`RedisOptions`](crate::RedisOptions)): durable as
    /// Redis's persistence allows, shared by every process on the same stream.
    ///
    /// # Errors
    /// Redis cannot be reached, or the consumer group cannot be created.
    #[cfg(feature = "redis")]
    pub async fn build_redis(
        self,
        options: crate::RedisOptions,
    ) -> Result<Outbox, redis::RedisError> {
        let capacity = self.capacity;
        let store = crate::redis_store::RedisStore::connect(options, capacity).await?;
        let fallback = self
            .fallback
            .then(|| Store::Memory(Arc::new(MemoryStore::new(capacity))));
        Ok(self.start(Store::Redis(Arc::new(store)), fallback))
    }

    fn start(self, store: Store, fallback: Option<Store>) -> Outbox {
        let (phase_tx, phase) = watch::channel(Phase::Running);
        let shared = Arc::new(Shared {
            delivery: self.delivery,
            sender: self.sender,
            counters: worker::Counters::default(),
            phase,
        });
        let mut workers = Vec::new();
        if self.deliver {
            workers.push(tokio::spawn(worker::run(
                store.clone(),
                Arc::clone(&shared),
            )));
        }
        if let Some(fallback) = &fallback {
            workers.push(tokio::spawn(worker::run(
                fallback.clone(),
                Arc::clone(&shared),
            )));
        }
        Outbox {
            inner: Arc::new(Inner {
                store,
                fallback,
                when_full: self.when_full,
                shared,
                phase: phase_tx,
                workers: Mutex::new(workers),
            }),
        }
    }
}

#[derive(Debug)]
struct Inner {
    store: Store,
    fallback: Option<Store>,
    when_full: WhenFull,
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// An outbox for live traffic: each call validates its operation, stores it and returns —
/// without waiting for Customer.io. Delivery packs stored operations into Track v2 batch
/// requests (up to 500 KB, after a short linger), several in flight, each through the
/// [`Client`]'s stack: one Track slot per request, the same quota as direct calls. Cheap to
/// clone.
///
/// ```
/// # mod pacer { pub mod customerio { pub use ::pacer_customerio::*; } pub mod mock { pub use ::pacer_mock::*; } pub mod outbox { pub use ::pacer_outbox::*; } }
/// use pacer::customerio::{Client, Credentials, Event, Roots};
/// use pacer::mock::{MockConfig, MockServer};
/// use pacer::outbox::Outbox;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mock = MockServer::start(MockConfig::default()).await?;
/// let client = Client::builder()
///     .base_url(&mock.base_url())
///     .credentials(Credentials::track("site-id", "track-key"))
///     .build_https(Roots::Webpki)?;
/// let outbox = Outbox::builder(client).build();
/// let receipt = outbox.track("42", Event::new("signed_up")).await?; // stored, not sent
/// let report = outbox.shutdown(Duration::from_secs(5)).await; // drains
/// assert_eq!((report.delivered, report.left), (1, 0));
/// assert_eq!(mock.ledger().events()[0].id, receipt.event_id);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl Outbox {
    /// A builder delivering through `client`.
    pub fn builder<RB>(client: Client<RB>) -> OutboxBuilder
    where
        RB: http_body::Body + Send + 'static,
        RB::Data: Send,
        RB::Error: Into<BoxError>,
    {
        let sender: Sender = Arc::new(move |operations| {
            let client = client.clone();
            Box::pin(async move { client.send_packed(&operations).await })
        });
        OutboxBuilder {
            sender,
            capacity: 100_000,
            when_full: WhenFull::Reject,
            delivery: Delivery::default(),
            deliver: true,
            #[cfg(feature = "redis")]
            fallback: false,
        }
    }

    /// Stores `operation` (any typed [`Operation`]).
    ///
    /// # Errors
    /// [`EnqueueError::Full`], [`EnqueueError::Unavailable`] or [`EnqueueError::Closed`].
    pub async fn enqueue(&self, operation: Operation) -> Result<Receipt, EnqueueError> {
        let result = self.store(operation).await;
        if let Err(error) = &result {
            metrics::enqueue_failed(error.label());
            tracing::debug!(%error, "outbox enqueue failed");
        }
        result
    }

    /// Stores an operation just built, or counts why it could not be built.
    async fn enqueue_built(
        &self,
        operation: Result<Operation, pacer_customerio::Error>,
    ) -> Result<Receipt, EnqueueError> {
        match operation {
            Ok(operation) => self.enqueue(operation).await,
            Err(error) => {
                metrics::enqueue_failed("invalid");
                tracing::debug!(%error, "outbox enqueue refused: invalid operation");
                Err(EnqueueError::Invalid(error))
            }
        }
    }

    async fn store(&self, operation: Operation) -> Result<Receipt, EnqueueError> {
        if *self.inner.phase.borrow() != Phase::Running {
            return Err(EnqueueError::Closed);
        }
        let receipt = Receipt {
            event_id: operation.event_id().map(str::to_owned),
        };
        let encoded = operation.into_encoded();
        let stored = match self
            .inner
            .store
            .push(encoded.clone(), self.inner.when_full)
            .await
        {
            Err(EnqueueError::Unavailable { reason, .. }) if self.inner.fallback.is_some() => {
                tracing::warn!(%reason, "the outbox store is unavailable; keeping the operation in memory");
                let fallback = self.inner.fallback.as_ref().expect("checked");
                fallback
                    .push(encoded, self.inner.when_full)
                    .await
                    .map(|()| fallback.name())
            }
            other => other.map(|()| self.inner.store.name()),
        }?;
        self.inner
            .shared
            .counters
            .enqueued
            .fetch_add(1, Ordering::Relaxed);
        metrics::enqueued(stored);
        Ok(receipt)
    }

    /// Adds or updates person `id` with `attributes`: any JSON object (`json!`, a `Map`, a
    /// struct that serializes to one).
    ///
    /// # Errors
    /// [`EnqueueError::Invalid`] before anything is stored; the store's errors.
    pub async fn identify(
        &self,
        id: &str,
        attributes: &(impl serde::Serialize + Sync + ?Sized),
    ) -> Result<Receipt, EnqueueError> {
        self.enqueue_built(Operation::identify(&person(id), attributes))
            .await
    }

    /// Records `event` for person `id` (a page or screen view by its kind); its id, a ULID,
    /// is fixed now (the event's own when it has one).
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub async fn track(&self, id: &str, event: Event) -> Result<Receipt, EnqueueError> {
        self.enqueue_built(Operation::event(&person(id), event))
            .await
    }

    /// Records `event` for an anonymous visitor.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub async fn track_anonymous(
        &self,
        anonymous_id: &str,
        event: Event,
    ) -> Result<Receipt, EnqueueError> {
        self.enqueue_built(Operation::anonymous_event(anonymous_id, event))
            .await
    }

    /// Records a page view of `url` by person `id`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub async fn page(&self, id: &str, url: &str) -> Result<Receipt, EnqueueError> {
        self.track(id, Event::page(url)).await
    }

    /// Records a mobile screen view of `screen` by person `id`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub async fn screen(&self, id: &str, screen: &str) -> Result<Receipt, EnqueueError> {
        self.track(id, Event::screen(screen)).await
    }

    /// Deletes person `id`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub async fn delete(&self, id: &str) -> Result<Receipt, EnqueueError> {
        self.enqueue_built(Operation::delete(&person(id))).await
    }

    /// Suppresses person `id`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub async fn suppress(&self, id: &str) -> Result<Receipt, EnqueueError> {
        self.enqueue_built(Operation::suppress(&person(id))).await
    }

    /// Unsuppresses person `id`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub async fn unsuppress(&self, id: &str) -> Result<Receipt, EnqueueError> {
        self.enqueue_built(Operation::unsuppress(&person(id))).await
    }

    /// Adds device `token` on `platform` to person `id`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub async fn add_device(
        &self,
        id: &str,
        token: &str,
        platform: &str,
    ) -> Result<Receipt, EnqueueError> {
        self.enqueue_built(Operation::add_device(&person(id), token, platform))
            .await
    }

    /// Removes device `token` from person `id`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub async fn delete_device(&self, id: &str, token: &str) -> Result<Receipt, EnqueueError> {
        self.enqueue_built(Operation::delete_device(&person(id), token))
            .await
    }

    /// Merges `secondary` into `primary`.
    ///
    /// # Errors
    /// As [`identify`](Self::identify).
    pub async fn merge(
        &self,
        primary: &Identifier,
        secondary: &Identifier,
    ) -> Result<Receipt, EnqueueError> {
        self.enqueue_built(Operation::merge(primary, secondary))
            .await
    }

    /// This process's counters.
    #[must_use]
    pub fn stats(&self) -> OutboxStats {
        let counters = &self.inner.shared.counters;
        let pending =
            self.inner.store.pending() + self.inner.fallback.as_ref().map_or(0, Store::pending);
        metrics::pending(pending);
        OutboxStats {
            enqueued: counters.enqueued.load(Ordering::Relaxed),
            delivered: counters.delivered.load(Ordering::Relaxed),
            dead: counters.dead.load(Ordering::Relaxed),
            requests: counters.requests.load(Ordering::Relaxed),
            pending,
        }
    }

    /// How long the oldest operation queued in memory has waited (zero for Redis: see the
    /// `pacer_outbox_oldest_lag_seconds` gauge and `pacer-outbox stats`).
    #[must_use]
    pub fn oldest_lag(&self) -> Duration {
        [Some(&self.inner.store), self.inner.fallback.as_ref()]
            .into_iter()
            .flatten()
            .map(|store| match store {
                Store::Memory(memory) => memory.oldest_lag(),
                #[cfg(feature = "redis")]
                Store::Redis(_) => Duration::ZERO,
            })
            .max()
            .unwrap_or_default()
    }

    /// The dead letters kept in memory (the last 10,000), taken out. With Redis they are in
    /// the dead-letter stream instead (`pacer-outbox dead`).
    pub fn take_dead_letters(&self) -> Vec<DeadLetter> {
        [Some(&self.inner.store), self.inner.fallback.as_ref()]
            .into_iter()
            .flatten()
            .flat_map(|store| match store {
                Store::Memory(memory) => memory.take_dead(),
                #[cfg(feature = "redis")]
                Store::Redis(_) => Vec::new(),
            })
            .collect()
    }

    /// Stops taking operations ([`EnqueueError::Closed`]), delivers what is stored (memory)
    /// or what this process has read (Redis) without lingering, and waits up to `deadline`.
    /// Then it gives up: batches still failing are put back (Redis: left pending in the
    /// stream for another worker; memory: lost with the process), and the report says how
    /// many were left.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.inner.phase.send_replace(Phase::Closing);
        let workers: Vec<JoinHandle<()>> = std::mem::take(
            &mut *self
                .inner
                .workers
                .lock()
                .expect("the outbox lock is never poisoned"),
        );
        let mut joined = std::pin::pin!(futures_join(workers));
        if tokio::time::timeout(deadline, &mut joined).await.is_err() {
            self.inner.phase.send_replace(Phase::Stopping);
            // The tasks see Stopping at their next await and put back what they hold.
            let _ = tokio::time::timeout(Duration::from_secs(5), joined).await;
        }
        self.inner.phase.send_replace(Phase::Stopping);
        let stats = self.stats();
        tracing::info!(
            delivered = stats.delivered,
            dead = stats.dead,
            left = stats.pending,
            "outbox shut down"
        );
        ShutdownReport {
            delivered: stats.delivered,
            dead: stats.dead,
            left: stats.pending,
        }
    }
}

/// Awaits every worker.
async fn futures_join(workers: Vec<JoinHandle<()>>) {
    for worker in workers {
        let _ = worker.await;
    }
}

fn person(id: &str) -> Identifier {
    Identifier::Id(id.to_owned())
}
