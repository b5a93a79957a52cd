//! Counters a [`RetryLayer`](crate::RetryLayer) keeps for all its services.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the retry layer did, summed over every clone of its services.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryStats {
    /// Requests received (first attempts).
    pub requests: u64,
    /// Retries sent.
    pub retries: u64,
    /// Retryable failures not retried because the request may not be repeated (a POST without
    /// an idempotency mark, or a body that cannot be copied).
    pub not_repeatable: u64,
    /// Gave up: attempts exhausted.
    pub exhausted: u64,
    /// Gave up: the retry budget was spent.
    pub budget_spent: u64,
    /// Gave up: the next attempt would end past the deadline.
    pub deadline: u64,
    /// Gave up: the server asked for a wait beyond the limit.
    pub server_wait_too_long: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) not_repeatable: AtomicU64,
    pub(crate) exhausted: AtomicU64,
    pub(crate) budget_spent: AtomicU64,
    pub(crate) deadline: AtomicU64,
    pub(crate) server_wait_too_long: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RetryStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RetryStats {
            requests: read(&self.requests),
            retries: read(&self.retries),
            not_repeatable: read(&self.not_repeatable),
            exhausted: read(&self.exhausted),
            budget_spent: read(&self.budget_spent),
            deadline: read(&self.deadline),
            server_wait_too_long: read(&self.server_wait_too_long),
        }
    }
}
