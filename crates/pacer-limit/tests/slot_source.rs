//! The core with a slot source of its own: slots handed out by a test "store" that a task
//! fills later, as a shared backend would. The queue, pauses and overrides stay the core's.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacer_limit::{
    Admission, Demand, HeadWaker, Limiter, LocalSlots, Priority, Quota, SlotSource, SlotSources,
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
