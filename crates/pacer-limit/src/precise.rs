//! A wake-up thread with sub-millisecond precision, used by default for keys spaced under 50 ms
//! (see `LimiterBuilder::precise_wakeups`).
//!
//! Tokio's timer works on a 1 ms grid and rounds every deadline up, and the driver's own park
//! adds to that: measured on Linux, `sleep_until` wakes about 1.1 ms late at the median and 2 ms
//! at p99. A limiter that records sends at their real instants (as ours does, so its invariants
//! hold on real send times) then loses that lateness on every evenly spaced slot: about 10 % of
//! a 100 req/s quota. This thread sleeps on the OS's high-resolution timer instead (a condition
//! variable with a deadline, typically 50–100 µs late) and wakes the head waiter of a key.
//!
//! It only ever wakes a task early relative to tokio's timer; the waiter still checks tokio's
//! clock before it takes a slot, and still arms tokio's timer too. So it changes nothing under
//! `tokio::time::pause()`, where tokio's timer alone decides.
//!
//! The last 150 µs before a deadline it spins, within a budget of 10 % of one core: with many
//! busy keys (500 keys at 100 wake-ups a second would spin all the time) it falls back to the
//! OS timer's precision rather than eat a core.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

/// How long before a deadline the thread stops sleeping and spins: a little more than the OS
/// timer's usual lateness, and at most 1.5 % of one core at 100 wake-ups per second.
const SPIN: Duration = Duration::from_micros(150);
/// The share of real time the thread may spend spinning, and how much it may save up.
const SPIN_SHARE: f64 = 0.1;
const SPIN_SAVINGS: Duration = Duration::from_millis(10);

/// What the thread may still spin: accrues at [`SPIN_SHARE`] of real time, up to
/// [`SPIN_SAVINGS`].
#[derive(Debug)]
struct SpinBudget {
    left: Duration,
    since: Instant,
}

impl SpinBudget {
    fn new(now: Instant) -> Self {
        Self {
            left: SPIN_SAVINGS,
            since: now,
        }
    }

    /// Whether a spin of `length` fits the budget at `now`; if so, it is spent.
    fn take(&mut self, length: Duration, now: Instant) -> bool {
        let earned = now
            .saturating_duration_since(self.since)
            .mul_f64(SPIN_SHARE);
        self.left = (self.left + earned).min(SPIN_SAVINGS);
        self.since = now;
        let fits = self.left >= length;
        if fits {
            self.left -= length;
        }
        fits
    }
}

/// The process-wide wake-up thread, started on first use.
struct PreciseTimer {
    due: Mutex<Due>,
    changed: Condvar,
}

#[derive(Default)]
struct Due {
    /// Wakers by deadline; the id keeps equal deadlines apart and makes cancelling exact.
    wakers: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
}

fn timer() -> &'static PreciseTimer {
    static TIMER: OnceLock<PreciseTimer> = OnceLock::new();
    static STARTED: Once = Once::new();
    let timer = TIMER.get_or_init(|| PreciseTimer {
        due: Mutex::new(Due::default()),
        changed: Condvar::new(),
    });
    STARTED.call_once(|| {
        std::thread::Builder::new()
            .name("pacer-precise-timer".into())
            .spawn(move || timer.run())
            .expect("failed to spawn the pacer-limit precise timer thread");
    });
    timer
}

impl PreciseTimer {
    fn lock(&self) -> MutexGuard<'_, Due> {
        self.due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run(&self) {
        let mut budget = SpinBudget::new(Instant::now());
        let mut due = self.lock();
        loop {
            let now = Instant::now();
            let mut fired = Vec::new();
            while let Some(entry) = due.wakers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                fired.push(entry.remove());
            }
            if !fired.is_empty() {
                // Wake outside the lock: a waker may run code that registers again.
                drop(due);
                fired.into_iter().for_each(Waker::wake);
                due = self.lock();
                continue;
            }
            due = match due.wakers.keys().next().map(|&(at, _)| at) {
                Some(at) if at.saturating_duration_since(now) <= SPIN => {
                    let left = at.saturating_duration_since(now);
                    if budget.take(left, now) {
                        // The OS timer itself wakes 50-100 µs late: spin the last stretch.
                        drop(due);
                        while Instant::now() < at {
                            std::hint::spin_loop();
                        }
                        self.lock()
                    } else {
                        // Out of spinning budget: the OS timer's precision will do.
                        self.changed
                            .wait_timeout(due, left)
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .0
                    }
                }
                Some(at) => {
                    self.changed
                        .wait_timeout(due, at.saturating_duration_since(now) - SPIN)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
                None => self
                    .changed
                    .wait(due)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            };
        }
    }
}

/// A pending wake-up; dropping it cancels the wake-up.
#[derive(Debug)]
pub(crate) struct WakeAt {
    key: (Instant, u64),
}

impl WakeAt {
    /// Wakes `waker` at `at` (a real-clock instant), with sub-millisecond precision.
    pub(crate) fn new(at: Instant, waker: Waker) -> Self {
        let timer = timer();
        let mut due = timer.lock();
        due.next_id += 1;
        let key = (at, due.next_id);
        let earliest = due.wakers.keys().next().is_none_or(|&first| key < first);
        due.wakers.insert(key, waker);
        drop(due);
        if earliest {
            timer.changed.notify_one();
        }
        Self { key }
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.key.0
    }
}

impl Drop for WakeAt {
    fn drop(&mut self) {
        timer().lock().wakers.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn spinning_is_held_to_a_tenth_of_real_time() {
        let start = Instant::now();
        let mut budget = SpinBudget::new(start);
        // Savings first, then a tenth of what passes.
        assert!(budget.take(SPIN_SAVINGS, start));
        assert!(!budget.take(SPIN, start));
        let later = start + Duration::from_millis(2);
        assert!(budget.take(Duration::from_micros(200), later));
        assert!(!budget.take(Duration::from_micros(1), later));
        // Savings are capped: a long idle spell does not buy a long spin.
        let much_later = later + Duration::from_secs(60);
        assert!(budget.take(SPIN_SAVINGS, much_later));
        assert!(!budget.take(SPIN, much_later));
    }

    #[test]
    fn wakes_when_due_and_never_after_being_cancelled() {
        let fired = Arc::new(Count(AtomicUsize::new(0)));
        let cancelled = Arc::new(Count(AtomicUsize::new(0)));
        let now = Instant::now();
        let _keep = WakeAt::new(now, Waker::from(Arc::clone(&fired)));
        drop(WakeAt::new(
            now + Duration::from_millis(1),
            Waker::from(Arc::clone(&cancelled)),
        ));
        // Bounded wait for the thread to run (it is a real thread: no paused clock here).
        for _ in 0..2_000 {
            if fired.0.load(Ordering::SeqCst) == 1 {
                break;
            }
            std::thread::yield_now();
            std::thread::sleep(Duration::from_micros(100));
        }
        assert_eq!(fired.0.load(Ordering::SeqCst), 1);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cancelled.0.load(Ordering::SeqCst), 0);
    }
}
