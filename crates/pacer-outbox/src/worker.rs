//! Delivery: pack stored operations into batch requests (up to the size limits, or after the
//! linger), several in flight, each through the client's stack (one Track slot each); settle
//! each entry by Customer.io's answer. Nothing is acknowledged before Customer.io accepted it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pacer_customerio::{BatchOutcome, EntryOutcome, Error, Packer, Pushed};
use pacer_retry::{Backoff, Jitter};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::metrics;
use crate::store::{now_ms, Entry, Store};

/// Sends one packed request and says what became of each entry.
pub(crate) type Sender = Arc<
    dyn Fn(Vec<Bytes>) -> Pin<Box<dyn Future<Output = Result<BatchOutcome, Error>> + Send>>
        + Send
        + Sync,
>;

/// Where the outbox is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Taking and delivering.
    Running,
    /// No more enqueues; flush without lingering.
    Closing,
    /// The shutdown deadline passed: give up retrying, put back what is not delivered.
    Stopping,
}

/// How delivery behaves.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub(crate) linger: Duration,
    pub(crate) concurrency: usize,
    pub(crate) max_operations: Option<usize>,
    pub(crate) backoff: Backoff,
    /// How many times an entry Customer.io keeps asking for again (a 207 entry with a
    /// transient reason) is resent before it is dead-lettered.
    pub(crate) max_entry_retries: u32,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(25),
            concurrency: 8,
            max_operations: None,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
                .jitter(Jitter::Equal),
            max_entry_retries: 10,
        }
    }
}

/// Counters shared by the enqueue and delivery sides.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) dead: AtomicU64,
    pub(crate) requests: AtomicU64,
}

/// What every delivery task shares.
pub(crate) struct Shared {
    pub(crate) delivery: Delivery,
    pub(crate) sender: Sender,
    pub(crate) counters: Counters,
    pub(crate) phase: watch::Receiver<Phase>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("delivery", &self.delivery)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// How long an idle worker waits for entries before looking at the phase again.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Entries taken from the store at once: many from memory (a lock and a copy); fewer from
/// Redis, where one big read or acknowledgement holds up every other client of the server
/// (the enqueues among them) while it runs.
fn take_at_once(store: &Store) -> usize {
    match store {
        Store::Memory(_) => 1024,
        #[cfg(feature = "redis")]
        Store::Redis(_) => 256,
    }
}

/// Delivers from `store` until the outbox closes (memory: drained; Redis: what this process
/// holds, nothing more is read) or stops.
pub(crate) async fn run(store: Store, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(shared.delivery.concurrency.max(1)));
    let mut phase = shared.phase.clone();
    let drain_on_close = matches!(store, Store::Memory(_));
    let mut carry: VecDeque<Entry> = VecDeque::new();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        if *phase.borrow() == Phase::Stopping {
            break;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = phase.wait_for(|p| *p == Phase::Stopping) => continue,
        };
        let closing = *phase.borrow() >= Phase::Closing;
        let may_read = !closing || drain_on_close;
        let (batch, fill, read_nothing) =
            fill_batch(&store, &shared, &mut carry, &mut phase, may_read).await;
        if batch.is_empty() {
            drop(permit);
            if closing && carry.is_empty() && (read_nothing || !may_read) {
                break;
            }
            continue;
        }
        if let Some(oldest) = batch.iter().map(|entry| entry.enqueued_ms).min() {
            metrics::lag(Duration::from_millis(now_ms().saturating_sub(oldest)));
        }
        metrics::batch(batch.len(), fill);
        tracing::debug!(operations = batch.len(), fill, "outbox batch packed");
        let (store, shared) = (store.clone(), Arc::clone(&shared));
        tasks.spawn(async move {
            deliver(&store, &shared, batch).await;
            drop(permit);
        });
    }
    store.release(carry.into_iter().collect()).await;
    while tasks.join_next().await.is_some() {}
}

/// Packs one request: from what was carried over, then from the store, until it is full or
/// the linger has passed since its first entry. Returns the entries, the fill, and whether the
/// store had nothing to give.
async fn fill_batch(
    store: &Store,
    shared: &Shared,
    carry: &mut VecDeque<Entry>,
    phase: &mut watch::Receiver<Phase>,
    may_read: bool,
) -> (Vec<Entry>, f64, bool) {
    let mut packer = Packer::new();
    if let Some(max) = shared.delivery.max_operations {
        packer = packer.max_operations(max);
    }
    let mut batch = Vec::new();
    let mut deadline = None;
    let mut read_nothing = false;
    loop {
        while let Some(entry) = carry.pop_front() {
            match packer.push(entry.operation.clone()) {
                Pushed::Packed => batch.push(entry),
                Pushed::Full(_) => {
                    carry.push_front(entry);
                    return (batch, packer.fill(), false);
                }
                Pushed::TooLarge(_) => {
                    // The enqueue side refuses these; one can only come from a store written
                    // by something else.
                    let reason = "the operation is over Customer.io's 32 KB limit".to_owned();
                    shared.counters.dead.fetch_add(1, Ordering::Relaxed);
                    metrics::dead(1);
                    store.dead(vec![(entry, reason)]).await;
                }
                _ => unreachable!("Pushed has no other variant"),
            }
        }
        let closing = *phase.borrow() >= Phase::Closing;
        if packer.is_full() || !may_read || (closing && read_nothing) {
            return (batch, packer.fill(), read_nothing);
        }
        let now = tokio::time::Instant::now();
        let wait = if batch.is_empty() {
            if closing {
                Duration::ZERO
            } else {
                IDLE_POLL
            }
        } else if closing {
            Duration::ZERO
        } else {
            let deadline = *deadline.get_or_insert(now + shared.delivery.linger);
            deadline.saturating_duration_since(now)
        };
        if !batch.is_empty() && wait.is_zero() && read_nothing {
            return (batch, packer.fill(), read_nothing);
        }
        let taken = tokio::select! {
            taken = store.take(take_at_once(store), wait) => taken,
            // A close ends the linger at once.
            _ = phase.wait_for(|p| *p >= Phase::Closing), if !closing => Vec::new(),
        };
        read_nothing = taken.is_empty();
        if read_nothing && batch.is_empty() && !closing {
            return (batch, 0.0, true);
        }
        if read_nothing && !batch.is_empty() {
            let expired = deadline.is_none_or(|d| tokio::time::Instant::now() >= d);
            if expired || closing {
                return (batch, packer.fill(), true);
            }
        }
        carry.extend(taken);
    }
}

fn describe(entry: &pacer_customerio::EntryError) -> String {
    format!("{} ({}: {})", entry.message, entry.field, entry.reason)
}

/// Sends one packed batch until every entry is settled: delivered (acknowledged), refused
/// (dead-lettered with the reason) or, once the outbox stops, put back. Transient failures
/// are retried with backoff; a request refused for its content is split in halves until the
/// entry at fault is alone.
async fn deliver(store: &Store, shared: &Shared, batch: Vec<Entry>) {
    // Each group is one request, with how many times Customer.io asked for its entries again.
    let mut groups = vec![(batch, 0_u32)];
    let mut phase = shared.phase.clone();
    let mut failures = 0_u32;
    // Seeded from the OS only once a pause is needed: most batches never need one.
    let mut rng: Option<SmallRng> = None;
    while let Some((group, asked)) = groups.pop() {
        if *phase.borrow() == Phase::Stopping {
            let left: Vec<Entry> = groups
                .into_iter()
                .flat_map(|(entries, _)| entries)
                .chain(group)
                .collect();
            tracing::warn!(
                left = left.len(),
                "outbox stopping with a batch undelivered"
            );
            store.release(left).await;
            return;
        }
        let operations = group.iter().map(|entry| entry.operation.clone()).collect();
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        let result = (shared.sender)(operations).await;
        let retry_later = match result {
            Ok(outcome) => {
                let (delivered, mut dead, retry) = settle(group, outcome);
                // An entry asked for again and again (a reason that should pass, that does
                // not) must not hold a delivery task for ever: dead-letter it, with the reason.
                let asked = asked + 1;
                let retry = if retry.is_empty() || asked <= shared.delivery.max_entry_retries {
                    retry.into_iter().map(|(entry, _)| entry).collect()
                } else {
                    dead.extend(retry.into_iter().map(|(entry, reason)| {
                        let reason = format!(
                            "sent {asked} times, asked for again each time; last: {reason}"
                        );
                        (entry, reason)
                    }));
                    Vec::new()
                };
                let counted = delivered.len();
                store.ack(&delivered).await;
                shared
                    .counters
                    .delivered
                    .fetch_add(counted as u64, Ordering::Relaxed);
                metrics::delivered(counted);
                if !dead.is_empty() {
                    tracing::warn!(
                        count = dead.len(),
                        first = %dead[0].1,
                        "Customer.io refused operations; dead-lettered"
                    );
                    shared
                        .counters
                        .dead
                        .fetch_add(dead.len() as u64, Ordering::Relaxed);
                    metrics::dead(dead.len());
                    store.dead(dead).await;
                }
                // Entries Customer.io asked for again back off like a failed batch: a 207 that
                // keeps saying `rate_limited` must not cost a slot every linger.
                if retry.is_empty() {
                    failures = 0;
                }
                (!retry.is_empty()).then_some((retry, asked))
            }
            Err(error) if error.refuses_content() => {
                if group.len() == 1 {
                    tracing::warn!(%error, "Customer.io refused an operation; dead-lettered");
                    shared.counters.dead.fetch_add(1, Ordering::Relaxed);
                    metrics::dead(1);
                    let reason = error.to_string();
                    store
                        .dead(
                            group
                                .into_iter()
                                .map(|entry| (entry, reason.clone()))
                                .collect(),
                        )
                        .await;
                } else {
                    tracing::info!(%error, operations = group.len(), "batch refused; splitting it to find the operation at fault");
                    let mut first = group;
                    let second = first.split_off(first.len() / 2);
                    groups.push((second, asked));
                    groups.push((first, asked));
                }
                None
            }
            Err(error) => {
                tracing::warn!(%error, operations = group.len(), failures, "batch not delivered; retrying after a pause");
                Some((group, asked))
            }
        };
        if let Some(group) = retry_later {
            let backoff = &shared.delivery.backoff;
            let unit = rng
                .get_or_insert_with(SmallRng::from_os_rng)
                .random::<f64>();
            let pause = backoff.delay(failures, backoff.base(), unit);
            failures = failures.saturating_add(1);
            groups.push(group);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = phase.wait_for(|p| *p == Phase::Stopping) => {}
            }
        }
    }
}

/// An entry and what Customer.io said of it.
type WithReason = (Entry, String);

/// Splits a batch by its answer: delivered, refused for good (with the reason), asked for again
/// (with the reason, or why it is sent again).
fn settle(
    group: Vec<Entry>,
    outcome: BatchOutcome,
) -> (Vec<Entry>, Vec<WithReason>, Vec<WithReason>) {
    let (mut delivered, mut dead, mut retry) = (Vec::new(), Vec::new(), Vec::new());
    let mut outcomes = outcome.entries.into_iter();
    for entry in group {
        // A shorter answer than the batch cannot happen (send_packed maps one per entry);
        // if it did, the entry is sent again rather than counted delivered.
        match outcomes.next() {
            Some(EntryOutcome::Delivered) => delivered.push(entry),
            Some(EntryOutcome::Refused(error)) => dead.push((entry, describe(&error))),
            Some(EntryOutcome::Retry(error)) => retry.push((entry, describe(&error))),
            _ => retry.push((entry, "no outcome for the entry".to_owned())),
        }
    }
    (delivered, dead, retry)
}
