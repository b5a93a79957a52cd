//! The two stores behind one interface: what the enqueue side pushes and the delivery side
//! takes, acknowledges, dead-letters or puts back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::EnqueueError;
use crate::memory::MemoryStore;

/// One stored operation.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The store's id (a stream id in Redis; empty in memory).
    pub(crate) id: String,
    /// The encoded v2 operation.
    pub(crate) operation: Bytes,
    /// When it was enqueued, in unix milliseconds (for the lag metric).
    pub(crate) enqueued_ms: u64,
}

/// A dead-lettered operation: what Customer.io refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The operation's JSON.
    pub operation: String,
    /// Customer.io's reason (`message (field: reason)`), or the request's error.
    pub reason: String,
    /// The store's id of the entry (a stream id in Redis; empty in memory).
    pub id: String,
}

/// What to do when the store is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// Return [`EnqueueError::Full`] at once (the default).
    #[default]
    Reject,
    /// Wait up to this long for room, then return [`EnqueueError::Full`].
    Wait(Duration),
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The stores.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    Memory(std::sync::Arc<MemoryStore>),
    #[cfg(feature = "redis")]
    Redis(std::sync::Arc<crate::redis_store::RedisStore>),
}

impl Store {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Store::Redis(_) => "redis",
        }
    }

    pub(crate) async fn push(&self, operation: Bytes, full: WhenFull) -> Result<(), EnqueueError> {
        match self {
            Store::Memory(store) => store.push(operation, full).await,
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.push(operation, full).await,
        }
    }

    /// Up to `max` entries, waiting at most `wait` for the first one.
    pub(crate) async fn take(&self, max: usize, wait: Duration) -> Vec<Entry> {
        match self {
            Store::Memory(store) => store.take(max, wait).await,
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.take(max, wait).await,
        }
    }

    /// Customer.io accepted these: forget them.
    pub(crate) async fn ack(&self, entries: &[Entry]) {
        match self {
            Store::Memory(store) => store.done(entries.len()),
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.ack(entries).await,
        }
    }

    /// Customer.io refused these for good: keep them with their reasons, out of the queue.
    pub(crate) async fn dead(&self, entries: Vec<(Entry, String)>) {
        match self {
            Store::Memory(store) => store.dead(entries),
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.dead(entries).await,
        }
    }

    /// Not delivered and given up on by this process (shutdown): back to the store.
    pub(crate) async fn release(&self, entries: Vec<Entry>) {
        match self {
            Store::Memory(store) => store.release(entries),
            // Left pending in the group: another worker's XAUTOCLAIM takes them over.
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.forget(&entries),
        }
    }

    /// Entries stored and not delivered, as far as this store knows cheaply.
    pub(crate) fn pending(&self) -> usize {
        match self {
            Store::Memory(store) => store.pending(),
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.held(),
        }
    }
}
