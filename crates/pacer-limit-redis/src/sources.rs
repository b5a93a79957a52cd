//! How a `pacer-limit` limiter takes its slots from Redis: the [`SlotSources`] of a shared
//! quota, and the extension traits that install it and read its statistics.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use pacer_limit::{HeadWaker, Key, Limiter, LimiterBuilder, Quota, SlotSource, SlotSources};

use crate::health::Core;
use crate::slots::RemoteSlots;
use crate::{SharedQuota, SharedStats};

type KeyName<K> = Arc<dyn Fn(&K) -> String + Send + Sync>;

/// The slot sources of a quota shared through Redis: one per key, all sharing one connection,
/// one view of Redis's health and clock, and one set of counters. Installed by
/// [`LimiterBuilderExt::shared`].
pub struct SharedSlots<K> {
    core: Arc<Core>,
    /// The key's name in Redis; every process must name a key the same way.
    key_name: KeyName<K>,
}

impl<K: Key> SharedSlots<K> {
    /// Sources from `shared`, naming each key in Redis by `key_name`.
    #[must_use]
    pub fn new(
        shared: SharedQuota,
        key_name: impl Fn(&K) -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            core: Arc::new(Core::new(shared)),
            key_name: Arc::new(key_name),
        }
    }

    /// Counters of the traffic with Redis so far.
    #[must_use]
    pub fn stats(&self) -> SharedStats {
        self.core.stats()
    }
}

impl<K: Key> SlotSources<K> for SharedSlots<K> {
    fn source(&self, key: &K, quota: &Quota, waker: HeadWaker) -> Box<dyn SlotSource> {
        let name = (self.key_name)(key);
        Box::new(RemoteSlots::new(
            Arc::clone(&self.core),
            name,
            *quota,
            waker,
        ))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl<K> fmt::Debug for SharedSlots<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSlots")
            .field("options", &self.core.options)
            .finish_non_exhaustive()
    }
}

/// Shares a [`LimiterBuilder`]'s quotas through Redis.
pub trait LimiterBuilderExt<K>: Sized {
    /// Shares every key's quota with the other processes that use the same Redis and prefix:
    /// slots come from Redis, waiting stays local, fair and cancellation-safe. Keys are named
    /// in Redis by their `Debug` form. Needs a tokio runtime to run its Redis calls on.
    #[must_use]
    fn shared(self, shared: SharedQuota) -> Self;

    /// [`shared`](Self::shared), naming each key in Redis by `name`: every process sharing a
    /// quota must name its keys the same way.
    #[must_use]
    fn shared_named<F>(self, shared: SharedQuota, name: F) -> Self
    where
        F: Fn(&K) -> String + Send + Sync + 'static;
}

impl<K: Key> LimiterBuilderExt<K> for LimiterBuilder<K> {
    fn shared(self, shared: SharedQuota) -> Self {
        self.shared_named(shared, |key: &K| format!("{key:?}"))
    }

    fn shared_named<F>(self, shared: SharedQuota, name: F) -> Self
    where
        F: Fn(&K) -> String + Send + Sync + 'static,
    {
        self.slot_sources(SharedSlots::new(shared, name))
    }
}

/// Reads a shared [`Limiter`]'s traffic with Redis.
pub trait LimiterExt {
    /// Counters of the traffic with Redis, when the limiter's quota is shared through it
    /// ([`LimiterBuilderExt::shared`]); `None` for a local limiter.
    fn shared_stats(&self) -> Option<SharedStats>;
}

impl<K: Key> LimiterExt for Limiter<K> {
    fn shared_stats(&self) -> Option<SharedStats> {
        self.slot_sources::<SharedSlots<K>>()
            .map(SharedSlots::stats)
    }
}
