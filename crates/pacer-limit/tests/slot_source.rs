//! The core with a slot source of its own: slots handed out by a test "store" that a task
//! fills later, as a shared backend would. The queue, pauses and overrides stay the core's.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacer_limit::{
    Admission, Demand, Feedback, HeadWaker, Limiter, LocalSlots, Outcome, Priority, Quota,
    SlotSource, SlotSources,
};
use tokio::time::Instant;

/// What the test store saw, and the slots it holds (instants at which a send may go).
#[derive(Debug, Default)]
struct Store {
    slots: Vec<Instant>,
    asked: usize,
    paused_until: Option<Instant>,
    shared_pause: Option<Instant>,
    left: Vec<usize>,
    wakers: Vec<HeadWaker>,
    /// Whether the source spaces every process's slots by the margin shared with it.
    spaces: bool,
    /// Whether another user of the quota found the server strict.
    strict: bool,
    shared_spacing: Option<f64>,
    held_until: Option<Instant>,
}

#[derive(Clone, Default)]
struct Sources(Arc<Mutex<Store>>);

#[derive(Debug)]
struct Source(Arc<Mutex<Store>>);

impl SlotSources<()> for Sources {
    fn source(&self, _key: &(), _quota: &Quota, waker: HeadWaker) -> Box<dyn SlotSource> {
        self.0.lock().unwrap().wakers.push(waker);
        Box::new(Source(Arc::clone(&self.0)))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl SlotSource for Source {
    fn admit(&mut self, now: Instant, _demand: Demand) -> Admission {
        let mut store = self.0.lock().unwrap();
        store.asked += 1;
        match store.slots.first().copied() {
            Some(at) if at <= now => {
                store.slots.remove(0);
                Admission::Granted
            }
            Some(at) => Admission::NotBefore(at),
            // Nothing yet: the "reservation" is on its way; look again in a minute at worst.
            None => Admission::Pending(now + Duration::from_secs(60)),
        }
    }

    fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        let store = self.0.lock().unwrap();
        store.slots.get(n).copied().unwrap_or(now).max(now)
    }

    fn on_pause(&mut self, until: Instant) {
        self.0.lock().unwrap().paused_until = Some(until);
    }

    fn share_pause(&self, _now: Instant, until: Instant) {
        self.0.lock().unwrap().shared_pause = Some(until);
    }

    fn share_spacing(&self, _now: Instant, extra: f64, _half_life: Duration) {
        self.0.lock().unwrap().shared_spacing = Some(extra);
    }

    fn applies_shared_spacing(&self) -> bool {
        self.0.lock().unwrap().spaces
    }

    fn is_strict(&self) -> bool {
        self.0.lock().unwrap().strict
    }

    fn hold_until(&mut self, until: Instant) {
        self.0.lock().unwrap().held_until = Some(until);
    }

    fn on_leave(&mut self, waiting: Demand) {
        let waiting = waiting.total();
        self.0.lock().unwrap().left.push(waiting);
    }

    fn is_idle(&self, _now: Instant) -> bool {
        self.0.lock().unwrap().slots.is_empty()
    }
}

fn limiter(sources: &Sources) -> Limiter {
    Limiter::builder(Quota::per_second(1000))
        .slot_sources(sources.clone())
        .build()
}

#[tokio::test(start_paused = true)]
async fn slots_that_arrive_later_wake_the_head_and_serve_the_queue_in_order() {
    let sources = Sources::default();
    let limiter = limiter(&sources);
    let start = Instant::now();
    let order = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let (limiter, order) = (limiter.clone(), Arc::clone(&order));
            tokio::spawn(async move {
                limiter.acquire(()).await.unwrap();
                order.lock().unwrap().push((i, Instant::now() - start));
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        order.lock().unwrap().is_empty(),
        "nothing is granted before slots exist"
    );
    assert_eq!(limiter.queue_len(&()), 3);

    // The "reply": three slots, 10 ms apart from 20 ms on; the source wakes the head.
    let waker = {
        let mut store = sources.0.lock().unwrap();
        store.slots = (0..3)
            .map(|k| start + Duration::from_millis(20 + 10 * k))
            .collect();
        store.wakers[0].clone()
    };
    waker.wake_head();
    for task in tasks {
        task.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let expected: Vec<_> = (0..3)
        .map(|i| (i, Duration::from_millis(20 + 10 * i as u64)))
        .collect();
    assert_eq!(order, expected, "FIFO, each at its slot");
    // Each grant left the queue and told the source how many remain.
    assert_eq!(sources.0.lock().unwrap().left, vec![2, 1, 0]);
    assert_eq!(limiter.stats().acquired, 3);
    assert!(limiter.slot_sources::<Sources>().is_some());
    assert!(limiter.slot_sources::<String>().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_pause_and_a_learned_rate_stay_the_cores_and_reach_the_source() {
    let sources = Sources::default();
    let limiter = limiter(&sources);
    let now = Instant::now();
    sources.0.lock().unwrap().slots = (0..4).map(|_| now).collect();

    let until = now + Duration::from_millis(500);
    limiter.pause_until(&(), until);
    {
        let store = sources.0.lock().unwrap();
        assert_eq!(store.paused_until, Some(until));
        assert_eq!(
            store.shared_pause,
            Some(until),
            "a server's pause is shared"
        );
    }
    // The pause holds even though the source has slots due now.
    limiter.acquire(()).await.unwrap();
    assert_eq!(Instant::now(), until);

    // A learned rate of 2/s paces this process below what the source would give.
    limiter.set_quota(&(), Quota::per_second(2).with_margin(Duration::ZERO));
    let before = Instant::now();
    limiter.acquire(()).await.unwrap();
    limiter.acquire(()).await.unwrap();
    assert!(Instant::now() - before >= Duration::from_millis(500));
    assert_eq!(sources.0.lock().unwrap().slots.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_gives_up_tells_the_source() {
    let sources = Sources::default();
    let limiter = limiter(&sources);
    let waiting = tokio::time::timeout(Duration::from_millis(10), limiter.acquire(())).await;
    assert!(waiting.is_err(), "no slot ever came");
    assert_eq!(sources.0.lock().unwrap().left, vec![0]);
    assert_eq!(limiter.stats().cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn local_slots_are_the_default_source() {
    let now = Instant::now();
    let quota = Quota::per_second(4).with_margin(Duration::ZERO);
    let mut slots = LocalSlots::new(&quota, now);
    assert_eq!(
        slots.admit(now, Demand::new(Priority::Normal, 1)),
        Admission::Granted
    );
    let next = now + Duration::from_millis(250);
    assert_eq!(slots.nth_earliest(now, 0), next);
    slots.on_pause(now + Duration::from_secs(1));
    assert!(slots.nth_earliest(now, 0) >= now + Duration::from_secs(1));
    assert!(!slots.is_idle(now));
}

/// A limiter of 10 evenly spaced sends per second on `sources`, whose store is set up first.
fn even_limiter(sources: &Sources, store: impl FnOnce(&mut Store)) -> Limiter {
    store(&mut sources.0.lock().unwrap());
    Limiter::builder(Quota::per_second(10).gcra(1).with_margin(Duration::ZERO))
        .slot_sources(sources.clone())
        .build()
}

/// A refusal with a wait widens the key's spacing margin and shares it with the source. A
/// source that spaces every process's slots by it (a quota in Redis) keeps the margin out of
/// the key's own pacing: paced by it twice, a send late by a millisecond would carry its
/// delay to every send after it, up to the next process's slot. Otherwise the key paces by it.
#[tokio::test(start_paused = true)]
async fn a_margin_the_source_applies_is_not_paced_again_by_the_key() {
    for spaces in [false, true] {
        let sources = Sources::default();
        let limiter = even_limiter(&sources, |store| store.spaces = spaces);
        let now = Instant::now();
        let refused =
            Feedback::new(Outcome::Refused, now).pause_until(now + Duration::from_secs(1));
        let _ = limiter.observe(&(), refused);
        let margin = sources.0.lock().unwrap().shared_spacing;
        assert!(margin.is_some_and(|m| m > 0.0), "{margin:?}");
        let rate = limiter.quota(&()).rate_per_second();
        if spaces {
            assert!((rate - 10.0).abs() < 1e-9, "{rate}");
        } else {
            assert!(rate < 9.8, "{rate}");
        }
    }
}

/// A key the server never refused holds its next send after a late answer once its source
/// says another user of the quota found the server strict; before, it holds nothing.
#[tokio::test(start_paused = true)]
async fn a_source_that_found_the_server_strict_makes_the_key_hold_after_a_late_answer() {
    for strict in [false, true] {
        let sources = Sources::default();
        let limiter = even_limiter(&sources, |store| store.strict = strict);
        // Answers after 1 ms set the key's usual latency.
        for _ in 0..8 {
            let sent = Instant::now();
            tokio::time::advance(Duration::from_millis(1)).await;
            let _ = limiter.observe(&(), Feedback::new(Outcome::Accepted, sent));
            tokio::time::advance(Duration::from_millis(99)).await;
        }
        // This one comes back 20 ms later: it may have reached the server 19 ms late.
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(20)).await;
        let _ = limiter.observe(&(), Feedback::new(Outcome::Accepted, sent));
        let held = sources.0.lock().unwrap().held_until;
        let expected = strict.then(|| sent + Duration::from_millis(19 + 100));
        assert_eq!(held, expected);
    }
}
