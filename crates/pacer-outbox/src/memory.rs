//! The in-memory store: a bounded queue in this process. Fast, and lost with the process:
//! whatever is queued or in flight when it crashes or is killed is gone (a clean
//! [`Outbox::shutdown`](crate::Outbox::shutdown) drains it first and reports what is left).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::error::EnqueueError;
use crate::store::{now_ms, DeadLetter, Entry, WhenFull};

/// Dead letters kept in memory at most; older ones are dropped (and counted) first.
const MAX_DEAD_KEPT: usize = 10_000;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Entry>,
    /// Taken by the delivery side and not yet acknowledged, dead-lettered or put back.
    taken: usize,
    dead: VecDeque<DeadLetter>,
}

/// A bounded in-memory queue: its capacity counts queued and in-flight entries, so memory
/// stays bounded whatever Customer.io does.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
    capacity: usize,
    /// Something was pushed.
    data: Notify,
    /// Room was made.
    room: Notify,
}

impl MemoryStore {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            data: Notify::new(),
            room: Notify::new(),
        }
    }

    pub(crate) async fn push(&self, operation: Bytes, full: WhenFull) -> Result<(), EnqueueError> {
        let mut entry = Some(Entry {
            id: String::new(),
            operation,
            enqueued_ms: now_ms(),
        });
        let deadline = match full {
            WhenFull::Reject => None,
            WhenFull::Wait(wait) => Some(tokio::time::Instant::now() + wait),
        };
        loop {
            // Registered before the check, so a release between the two is not missed.
            let room = self.room.notified();
            if self.try_push(&mut entry) {
                self.data.notify_one();
                return Ok(());
            }
            let Some(deadline) = deadline else {
                return Err(EnqueueError::Full {
                    capacity: self.capacity,
                });
            };
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(EnqueueError::Full {
                    capacity: self.capacity,
                });
            }
        }
    }

    fn try_push(&self, entry: &mut Option<Entry>) -> bool {
        let mut state = self
            .state
            .lock()
            .expect("the outbox lock is never poisoned");
        if state.queue.len() + state.taken >= self.capacity {
            return false;
        }
        state.queue.extend(entry.take());
        true
    }

    pub(crate) async fn take(&self, max: usize, wait: Duration) -> Vec<Entry> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let data = self.data.notified();
            {
                let mut state = self
                    .state
                    .lock()
                    .expect("the outbox lock is never poisoned");
                if !state.queue.is_empty() {
                    let count = max.min(state.queue.len());
                    state.taken += count;
                    return state.queue.drain(..count).collect();
                }
            }
            if tokio::time::timeout_at(deadline, data).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// `count` taken entries are settled (delivered or dead).
    pub(crate) fn done(&self, count: usize) {
        let mut state = self
            .state
            .lock()
            .expect("the outbox lock is never poisoned");
        state.taken = state.taken.saturating_sub(count);
        drop(state);
        self.room.notify_waiters();
    }

    pub(crate) fn dead(&self, entries: Vec<(Entry, String)>) {
        let count = entries.len();
        {
            let mut state = self
                .state
                .lock()
                .expect("the outbox lock is never poisoned");
            for (entry, reason) in entries {
                if state.dead.len() >= MAX_DEAD_KEPT {
                    state.dead.pop_front();
                }
                state.dead.push_back(DeadLetter {
                    operation: String::from_utf8_lossy(&entry.operation).into_owned(),
                    reason,
                    id: entry.id,
                });
            }
        }
        self.done(count);
    }

    /// Puts taken entries back at the front, in their order.
    pub(crate) fn release(&self, entries: Vec<Entry>) {
        let mut state = self
            .state
            .lock()
            .expect("the outbox lock is never poisoned");
        state.taken = state.taken.saturating_sub(entries.len());
        for entry in entries.into_iter().rev() {
            state.queue.push_front(entry);
        }
        drop(state);
        self.data.notify_one();
    }

    /// Queued plus in flight.
    pub(crate) fn pending(&self) -> usize {
        let state = self
            .state
            .lock()
            .expect("the outbox lock is never poisoned");
        state.queue.len() + state.taken
    }

    /// How long the oldest queued entry has waited.
    pub(crate) fn oldest_lag(&self) -> Duration {
        let state = self
            .state
            .lock()
            .expect("the outbox lock is never poisoned");
        state.queue.front().map_or(Duration::ZERO, |entry| {
            Duration::from_millis(now_ms().saturating_sub(entry.enqueued_ms))
        })
    }

    /// Takes the dead letters kept so far.
    pub(crate) fn take_dead(&self) -> Vec<DeadLetter> {
        let mut state = self
            .state
            .lock()
            .expect("the outbox lock is never poisoned");
        state.dead.drain(..).collect()
    }
}
