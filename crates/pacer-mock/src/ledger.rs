//! What the mock applied, for assertions: people, their attributes and devices, events
//! (deduplicated on their `id` as Customer.io does), transactional sends, and counters.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};

/// One person as the mock holds them.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Person {
    /// Attributes from identify calls, merged.
    pub attributes: Map<String, Value>,
    /// Device tokens.
    pub devices: HashSet<String>,
    /// Whether the person is suppressed.
    pub suppressed: bool,
}

/// One applied event.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// The person's identifier, or `None` for an anonymous event.
    pub customer: Option<String>,
    /// The event name.
    pub name: String,
    /// The client-supplied dedupe id, if any.
    pub id: Option<String>,
    /// `"event"`, `"page"` or `"screen"`.
    pub kind: String,
    /// The event's data.
    pub data: Value,
}

/// Counters of what the mock answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Requests received (answered or dropped).
    pub requests: u64,
    /// Answered 429.
    pub throttled: u64,
    /// Answered 500 or 503 by fault injection.
    pub faults: u64,
    /// Connections dropped by fault injection (before or after applying).
    pub dropped: u64,
    /// Events ignored because their `id` was seen before.
    pub duplicate_events: u64,
    /// Answered 401.
    pub unauthorized: u64,
    /// Answered 400, 413 or 422 (or 207 entries refused).
    pub invalid: u64,
}

#[derive(Debug, Default)]
pub(crate) struct LedgerState {
    pub(crate) people: HashMap<String, Person>,
    pub(crate) events: Vec<Event>,
    pub(crate) event_ids: HashSet<String>,
    pub(crate) transactional: Vec<Value>,
    pub(crate) broadcasts: Vec<(String, Value)>,
    pub(crate) pipelines: Vec<Value>,
    pub(crate) counts: Counts,
}

impl LedgerState {
    /// Applies an event unless its id was seen; returns whether it was new.
    pub(crate) fn record_event(&mut self, event: Event) -> bool {
        if let Some(id) = &event.id {
            if !self.event_ids.insert(id.clone()) {
                self.counts.duplicate_events += 1;
                return false;
            }
        }
        self.events.push(event);
        true
    }

    pub(crate) fn person(&mut self, id: &str) -> &mut Person {
        self.people.entry(id.to_owned()).or_default()
    }
}

/// A handle on the mock's ledger (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    pub(crate) state: Arc<Mutex<LedgerState>>,
}

impl Ledger {
    pub(crate) fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of one person, if known.
    #[must_use]
    pub fn person(&self, id: &str) -> Option<Person> {
        self.lock().people.get(id).cloned()
    }

    /// How many people exist.
    #[must_use]
    pub fn people_count(&self) -> usize {
        self.lock().people.len()
    }

    /// Every applied event, in order.
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Applied transactional sends (their request bodies).
    #[must_use]
    pub fn transactional(&self) -> Vec<Value> {
        self.lock().transactional.clone()
    }

    /// Applied broadcast triggers: broadcast id and request body.
    #[must_use]
    pub fn broadcasts(&self) -> Vec<(String, Value)> {
        self.lock().broadcasts.clone()
    }

    /// Applied Pipelines calls (each batch entry, or the single call).
    #[must_use]
    pub fn pipelines(&self) -> Vec<Value> {
        self.lock().pipelines.clone()
    }

    /// The counters.
    #[must_use]
    pub fn counts(&self) -> Counts {
        self.lock().counts
    }
}
