//! When a key's accepted sends reached the server, as far as their answers tell: the hold
//! that keeps the next send an interval after the last one the server took.
//!
//! A strict server (nginx `limit_req` without burst) measures the gap between the *arrivals*
//! of the requests it accepts, on its own clock. An evenly paced client refuses itself
//! nothing, yet a request that reached the server late (its process or the server was
//! descheduled for a few milliseconds, measured on a 2-core VM: 2–6 ms, a few times a minute)
//! leaves the next, on time, closer than the interval: refused, and the whole key paused for
//! the server's `Retry-After`. No spacing margin of a few percent absorbs a stall of half an
//! interval; a margin that did would cost half the rate.
//!
//! But the late request's answer says it was late, and on a short link it says so before the
//! next send is due: its latency exceeds the key's usual one. Whatever the excess, the request
//! reached the server no later than `sent + excess` on the sender's clock (less the fastest
//! way there, which every request takes too), so the next send, held until an interval after
//! that, cannot arrive early however the excess split between the way there and back. The
//! hold is applied only to keys the server has shown to be strict (it refused them for their
//! spacing, or, on a quota shared with other processes, refused one of them) and costs only
//! the lateness the margin does not cover. On a long link (the answer comes back after the
//! next send went out) it holds nothing; the margin is what covers that.

use std::time::Duration;

use tokio::time::Instant;

/// How many recent latencies the floor is the minimum of: a few tenths of a second at 100
/// requests per second, enough that a stall never sets it, short enough to follow a new route.
const KEPT: usize = 32;
/// Latencies needed before the floor is trusted.
const TRUSTED: usize = 6;

/// The latencies of a key's recent answers, accepted or refused: the same way there and back.
#[derive(Clone, Debug)]
pub(crate) struct Arrivals {
    recent: [Duration; KEPT],
    next: usize,
    filled: usize,
}

impl Arrivals {
    pub(crate) fn new() -> Self {
        Self {
            recent: [Duration::ZERO; KEPT],
            next: 0,
            filled: 0,
        }
    }

    /// A request sent at `sent_at` was answered at `now`.
    pub(crate) fn record(&mut self, sent_at: Instant, now: Instant) {
        self.recent[self.next] = now.saturating_duration_since(sent_at);
        self.next = (self.next + 1) % KEPT;
        self.filled = (self.filled + 1).min(KEPT);
    }

    /// An accepted request sent at `sent_at` was answered at `now`: the instant before which
    /// the next send could arrive within `interval` of it, given the latencies seen: `sent_at`
    /// plus its latency beyond the usual (at most one interval), plus `interval`. `None` until
    /// enough were seen.
    ///
    /// The excess may as well have been the server's time to answer, or the way back: a
    /// server whose answers vary by more than its interval (slow requests on a strict API)
    /// would otherwise hold its key back by all of it. One interval at most bounds that cost
    /// to one doubled gap per late answer; a stall longer than an interval is left to the
    /// spacing margin.
    pub(crate) fn hold(
        &self,
        sent_at: Instant,
        now: Instant,
        interval: Duration,
    ) -> Option<Instant> {
        let latency = now.saturating_duration_since(sent_at);
        let floor = self.floor()?;
        Some(sent_at + latency.saturating_sub(floor).min(interval) + interval)
    }

    /// The usual latency: the least of the recent ones, once enough were seen.
    fn floor(&self) -> Option<Duration> {
        (self.filled >= TRUSTED).then(|| self.recent[..self.filled].iter().copied().min())?
    }

    /// How far apart in time two sends an interval apart may reach the server, as far as the
    /// recent latencies tell: half their range (a link's jitter each way, a server's queue),
    /// once enough were seen. An estimate, and a generous one when the server's own time to
    /// answer varies: the caller uses it only once the server refused several sends in flight
    /// at once, which timing noise on that scale explains.
    pub(crate) fn spread(&self) -> Option<Duration> {
        let recent = &self.recent[..self.filled];
        let longest = recent.iter().max()?;
        Some(longest.saturating_sub(self.floor()?) / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Records an answer to a request sent at `sent` after `latency`; returns its hold.
    fn answer(arrivals: &mut Arrivals, sent: Instant, latency: Duration) -> Option<Instant> {
        arrivals.record(sent, sent + latency);
        arrivals.hold(sent, sent + latency, INTERVAL)
    }

    /// Answers `count` requests sent an interval apart from `start`, the `n`-th after
    /// `latency(n)`; returns when the next would be sent.
    fn steady(
        arrivals: &mut Arrivals,
        start: Instant,
        count: u32,
        latency: impl Fn(u32) -> Duration,
    ) -> Instant {
        for n in 0..count {
            answer(arrivals, start + INTERVAL * n, latency(n));
        }
        start + INTERVAL * count
    }

    #[test]
    fn holds_nothing_until_the_usual_latency_is_known() {
        let start = Instant::now();
        let mut arrivals = Arrivals::new();
        for n in 0..TRUSTED as u64 - 1 {
            let sent = start + INTERVAL * n as u32;
            assert_eq!(answer(&mut arrivals, sent, ms(1)), None);
        }
        let sent = start + ms(100);
        assert_eq!(answer(&mut arrivals, sent, ms(1)), Some(sent + INTERVAL));
    }

    #[test]
    fn a_late_answer_holds_the_next_send_by_its_lateness() {
        let start = Instant::now();
        let mut arrivals = Arrivals::new();
        steady(&mut arrivals, start, 20, |_| ms(1));
        // Answered 4 ms later than usual: it may have reached the server 4 ms late.
        let sent = start + ms(300);
        assert_eq!(
            answer(&mut arrivals, sent, ms(5)),
            Some(sent + ms(4) + INTERVAL)
        );
        // A stall longer than an interval holds for one interval at most.
        let sent = start + ms(305);
        assert_eq!(
            answer(&mut arrivals, sent, ms(50)),
            Some(sent + INTERVAL + INTERVAL)
        );
        // The stall does not become the usual latency.
        let sent = start + ms(310);
        assert_eq!(answer(&mut arrivals, sent, ms(1)), Some(sent + INTERVAL));
    }

    #[test]
    fn the_spread_is_half_the_range_of_recent_latencies() {
        let start = Instant::now();
        let mut arrivals = Arrivals::new();
        assert_eq!(arrivals.spread(), None);
        steady(&mut arrivals, start, KEPT as u32, |n| {
            ms(40 + u64::from(n % 21))
        });
        assert_eq!(arrivals.spread(), Some(ms(10)));
    }

    #[test]
    fn the_usual_latency_follows_a_new_route_within_the_kept_answers() {
        let start = Instant::now();
        let mut arrivals = Arrivals::new();
        let sent = steady(&mut arrivals, start, KEPT as u32, |_| ms(1));
        let sent = steady(&mut arrivals, sent, KEPT as u32, |_| ms(20));
        assert_eq!(answer(&mut arrivals, sent, ms(20)), Some(sent + INTERVAL));
    }
}
