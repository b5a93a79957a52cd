//! Redis's clock on this process's timeline: slot times come from Redis (`TIME`, microseconds
//! since the epoch, shared by every process) and are waited for on tokio's monotonic clock.

use std::time::Duration;

use tokio::time::Instant;

/// An anchor older than this is replaced by any new observation, so that drift between the two
/// clocks (NTP slewing Redis's wall clock) never accumulates.
const FRESH_FOR: Duration = Duration::from_secs(10);

/// Maps a Redis instant to a local instant that is never earlier than the true one.
///
/// Every reply says "Redis read `now` before this process received the reply", so mapping
/// Redis's `now` to the reply's arrival is late by the reply's flight, never early. Of recent
/// replies, the one with the shortest flight (the tightest anchor) is kept, and every slot is
/// mapped through that one anchor: slots keep exactly the spacing Redis gave them, whichever
/// reply they came in and however late their task was scheduled.
#[derive(Debug, Default)]
pub(crate) struct RedisClock {
    anchor: Option<Anchor>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    local: Instant,
    redis_micros: u64,
}

impl RedisClock {
    /// Learns from a reply in which Redis read `redis_micros`, received at `received`.
    /// Returns how much sooner every Redis instant now maps (zero if no sooner).
    pub(crate) fn observe(&mut self, redis_micros: u64, received: Instant) -> Duration {
        let candidate = Anchor {
            local: received,
            redis_micros,
        };
        let Some(anchor) = self.anchor else {
            self.anchor = Some(candidate);
            return Duration::ZERO;
        };
        let stale = received.saturating_duration_since(anchor.local) > FRESH_FOR;
        // Tighter: more Redis time than local time passed since the anchor, i.e. this reply's
        // flight was shorter, by the difference.
        let redis_elapsed = i128::from(redis_micros) - i128::from(anchor.redis_micros);
        let local_elapsed = signed_micros(anchor.local, received);
        let sooner = redis_elapsed - local_elapsed;
        if stale || sooner > 0 {
            self.anchor = Some(candidate);
        }
        Duration::from_micros(u64::try_from(sooner).unwrap_or(0))
    }

    /// The Redis instant of the local instant `local` (`None` before any reply): the inverse
    /// of [`local`](Self::local), as late as Redis's clock may be there.
    pub(crate) fn redis_at(&self, local: Instant) -> Option<u64> {
        let anchor = self.anchor?;
        let since = signed_micros(anchor.local, local);
        let at = i128::from(anchor.redis_micros) + since;
        Some(u64::try_from(at.max(0)).unwrap_or(u64::MAX))
    }

    /// The local instant of the Redis instant `redis_micros` (`None` before any reply).
    pub(crate) fn local(&self, redis_micros: u64) -> Option<Instant> {
        let anchor = self.anchor?;
        if redis_micros >= anchor.redis_micros {
            let ahead = Duration::from_micros(redis_micros - anchor.redis_micros);
            // Saturating far ahead: an absurd slot time must never come due early.
            Some(crate::health::later(anchor.local, ahead))
        } else {
            let behind = Duration::from_micros(anchor.redis_micros - redis_micros);
            Some(anchor.local.checked_sub(behind).unwrap_or(anchor.local))
        }
    }
}

/// `to - from` in microseconds, negative when `to` is earlier.
fn signed_micros(from: Instant, to: Instant) -> i128 {
    if to >= from {
        i128::try_from((to - from).as_micros()).unwrap_or(i128::MAX)
    } else {
        -i128::try_from((from - to).as_micros()).unwrap_or(i128::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_with_the_shortest_flight_anchors_the_clock() {
        let start = Instant::now();
        let mut clock = RedisClock::default();
        // Redis read 1_000_000 µs; the reply arrived 3 ms later (a slow flight).
        clock.observe(1_000_000, start + Duration::from_millis(3));
        assert_eq!(
            clock.local(1_000_000),
            Some(start + Duration::from_millis(3))
        );
        // Redis read 1_010_000; this reply arrived 10.5 ms after start: a 0.5 ms flight.
        clock.observe(1_010_000, start + Duration::from_micros(10_500));
        assert_eq!(
            clock.local(1_000_000),
            Some(start + Duration::from_micros(500))
        );
        // A slower reply later does not loosen it.
        clock.observe(1_020_000, start + Duration::from_millis(25));
        assert_eq!(
            clock.local(1_020_000),
            Some(start + Duration::from_micros(20_500))
        );
    }

    proptest::proptest! {
        /// Whatever the replies' flights, a Redis instant maps to no earlier than its true
        /// local instant, and late by no more than one reply's flight.
        #[test]
        fn mapped_instants_are_never_early(
            offset in 0u64..4_000_000_000_000_000,
            replies in proptest::collection::vec((0u64..2_000_000, 0u64..20_000), 1..40),
            probe in 0u64..30_000_000,
        ) {
            let start = Instant::now();
            let mut clock = RedisClock::default();
            let mut at = 0;
            for (gap, flight) in replies {
                // Redis reads its clock `at` µs after `start`; the reply lands `flight` later.
                at += gap;
                clock.observe(offset + at, start + Duration::from_micros(at + flight));
            }
            let truth = start + Duration::from_micros(probe);
            let mapped = clock.local(offset + probe).unwrap();
            proptest::prop_assert!(mapped >= truth, "{mapped:?} before {truth:?}");
            proptest::prop_assert!(mapped - truth < Duration::from_millis(20));
        }
    }

    #[test]
    fn redis_at_inverts_local() {
        let start = Instant::now();
        let mut clock = RedisClock::default();
        assert_eq!(clock.redis_at(start), None);
        clock.observe(5_000_000, start);
        let later = start + Duration::from_micros(1_234);
        assert_eq!(clock.redis_at(later), Some(5_001_234));
        assert_eq!(clock.local(5_001_234), Some(later));
    }

    #[test]
    fn a_stale_anchor_gives_way() {
        let start = Instant::now();
        let mut clock = RedisClock::default();
        clock.observe(0, start);
        let later = start + FRESH_FOR + Duration::from_secs(1);
        // Looser than the anchor (Redis advanced 11 s minus 2 ms), but the anchor is stale.
        clock.observe(10_998_000, later);
        assert_eq!(clock.local(10_998_000), Some(later));
    }
}
