//! Paused-time models of the two issue-22 cases that make a strict server expensive: a server
//! that refuses any request arriving less than its interval after the last one it accepted
//! (nginx `limit_req` without burst) and answers `429 Retry-After: 1`, reached
//!
//! - over a link that delays each request by a seeded random amount (the benchmark's jitter
//!   proxy: 20 ms + 0–10 ms each way, order kept per connection), and
//! - by a fleet of limiters sharing one quota (the benchmark's four processes on one Redis
//!   quota), whose sends reach the server as far apart as their clocks disagree.
//!
//! A refusal pauses every caller of the key for a second, so what these tests bound is the
//! number of refusals as much as the throughput (the targets: the jitter case at 0.35
//! of the limit or more with at most 8 refusals in 30 s, the fleet at 0.85 or more with at most
//! 5). In paused time tokio's timer fires on whole milliseconds, so the default 10.1 ms spacing
//! waits 11 ms: the fleet's throughput is bounded as a share of that 1000/11 per second.

mod common;

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use pacer_limit::{Admission, HeadWaker, Limiter, Quota, SlotSource, SlotSources};
use pacer_throttle::ThrottleLayer;
use tokio::time::Instant;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use common::{caller_of, request, too_many_requests, Client, Log};

const LIMIT: u32 = 100;
const RUN: Duration = Duration::from_secs(30);
/// Callers per limiter, as in the benchmark.
const CALLERS: usize = 10;

/// A server that accepts a request only if it arrives at least `interval` after the last one
/// it accepted (a refused one changes nothing, as nginx's excess), and answers
/// `429 Retry-After: 1` otherwise.
#[derive(Debug)]
struct StrictServer {
    interval: Duration,
    last_accepted: Option<Instant>,
    log: Log,
}

impl StrictServer {
    fn new() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            interval: Duration::from_secs(1) / LIMIT,
            last_accepted: None,
            log: Log::default(),
        }))
    }

    fn handle(&mut self, caller: usize) -> Response<()> {
        let now = Instant::now();
        let accept = self
            .last_accepted
            .is_none_or(|last| now - last >= self.interval);
        self.log.entries.push((now, caller, accept));
        if accept {
            self.last_accepted = Some(now);
            Response::new(())
        } else {
            too_many_requests("1")
        }
    }

    /// Accepted per second over the run, and the refusals.
    fn outcome(&self) -> (f64, usize) {
        let accepted = self.log.entries.iter().filter(|&&(_, _, ok)| ok).count();
        let refused = self.log.entries.len() - accepted;
        (accepted as f64 / RUN.as_secs_f64(), refused)
    }
}

/// A seeded generator (splitmix64): the same delays every run.
#[derive(Debug)]
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    }
}

/// A link's delays for one request, each way.
type Delays = Box<dyn FnMut() -> (Duration, Duration) + Send>;

/// The benchmark's jitter proxy: `base` plus a seeded random whole number of milliseconds up
/// to `spread_ms`, each way.
fn jitter(base: Duration, spread_ms: u64, seed: u64) -> Delays {
    let mut random = Seeded(seed);
    Box::new(move || {
        let mut delay = || base + Duration::from_millis(random.below(spread_ms + 1));
        (delay(), delay())
    })
}

/// A loopback link to a server (or from a process) that is descheduled now and then: one
/// request in `every` (seeded) reaches the server 2 to `longest_ms` milliseconds late, as
/// measured against nginx on a 2-core VM; the rest arrive at once.
fn stalls(every: u64, longest_ms: u64, seed: u64) -> Delays {
    let mut random = Seeded(seed);
    Box::new(move || {
        let there = if random.below(every) == 0 {
            Duration::from_millis(2 + random.below(longest_ms - 1))
        } else {
            Duration::ZERO
        };
        (there, Duration::ZERO)
    })
}

/// The default stack (limiter outside, throttle inside) over a link to `server` with `delays`.
/// A caller sends one request at a time, so each connection's order is kept.
fn over_link(limiter: &Limiter, server: &Arc<Mutex<StrictServer>>, delays: Delays) -> Client {
    let server = Arc::clone(server);
    let delays = Arc::new(Mutex::new(delays));
    ServiceBuilder::new()
        .layer(pacer_limit::LimitLayer::new(limiter.clone()))
        .layer(ThrottleLayer::new(limiter.clone()))
        .service_fn(move |request: Request<()>| {
            let server = Arc::clone(&server);
            let (there, back) = (delays.lock().unwrap())();
            async move {
                if !there.is_zero() {
                    tokio::time::sleep(there).await;
                }
                let response = server.lock().unwrap().handle(caller_of(&request));
                if !back.is_zero() {
                    tokio::time::sleep(back).await;
                }
                Ok::<_, BoxError>(response)
            }
        })
        .boxed_clone()
}

/// Requests one caller sends at most: far more than a run at the limit allows, so a caller
/// that stopped waiting (an error returned at once) ends the test rather than spinning.
const MAX_SENDS: usize = 10_000;

/// `callers` tasks per client, each sending back to back until `end`; `callers` are numbered
/// across clients. Every request must get an answer (a 429 is an answer).
async fn run_all(clients: &[Client], callers: usize, end: Instant) {
    let mut tasks = Vec::new();
    for (number, client) in clients.iter().enumerate() {
        for task in 0..callers {
            let client = client.clone();
            let caller = number * callers + task;
            tasks.push(tokio::spawn(async move {
                for _ in 0..MAX_SENDS {
                    if Instant::now() >= end {
                        return;
                    }
                    if let Err(error) = client.clone().oneshot(request(caller)).await {
                        panic!("caller {caller}: {error}");
                    }
                }
                panic!("caller {caller} sent {MAX_SENDS} requests");
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Behind the jitter proxy the server can take only about half the rate without refusals: a
/// request delayed 10 ms more than the next one arrives 10 ms closer to it. The key must get
/// there in a few refusals and stay there: each refusal costs a one-second pause, so probing
/// back up within seconds costs more than it wins. Before issue 22's second round: repeated
/// refusals cut the rate 1 %, 4 %, 16 %, half, and climbed back into the next refusal within
/// three seconds.
#[tokio::test(start_paused = true)]
async fn behind_a_jittery_link_the_key_settles_in_few_refusals() {
    let limiter = Limiter::new(Quota::per_second(LIMIT));
    let server = StrictServer::new();
    let client = over_link(&limiter, &server, jitter(Duration::from_millis(20), 10, 22));
    run_all(&[client], CALLERS, Instant::now() + RUN).await;
    let (rate, refused) = server.lock().unwrap().outcome();
    eprintln!("jitter: {rate:.1} accepted/s, {refused} refused");
    // Before the refusals in flight widened to the latencies' noise: 42.3/s with 8.
    assert!(rate >= 0.45 * f64::from(LIMIT), "{rate:.1}/s");
    assert!(refused <= 6, "{refused} refusals");
}

/// On loopback a strict server refuses an evenly paced key when one request reaches it late
/// (the client or the server descheduled for a few milliseconds) and the next on time: no
/// margin of a few percent covers that, and each refusal pauses the key for a second. Once the
/// server has refused the key for its spacing, a late request's answer, back before the next
/// send is due, holds that send until an interval after the late arrival. Before: 60/s with 8
/// refusals in 30 s with this seed; after: 88/s with 1.
#[tokio::test(start_paused = true)]
async fn on_a_stalling_loopback_a_late_answer_holds_the_next_send() {
    let limiter = Limiter::new(Quota::per_second(LIMIT));
    let server = StrictServer::new();
    let client = over_link(&limiter, &server, stalls(150, 6, 7));
    run_all(&[client], CALLERS, Instant::now() + RUN).await;
    let (rate, refused) = server.lock().unwrap().outcome();
    let stalled = server.lock().unwrap().log.entries.len() / 150;
    eprintln!("stalls: {rate:.1} accepted/s, {refused} refused, about {stalled} stalls");
    assert!(stalled >= 10, "the link stalled only about {stalled} times");
    // Paused time fires on whole milliseconds: 1000/11 per second is the pace's ceiling.
    assert!(rate >= 0.9 * 1000.0 / 11.0, "{rate:.1}/s");
    assert!(refused <= 3, "{refused} refusals");
}

/// The shared quota of a fleet, as the Redis backend keeps it: one GCRA schedule, a pause and
/// a spacing margin every process reads. Each process reserves its next slot when its head
/// waiter first asks (as a lease), so the processes' sends interleave; process `p` maps the
/// shared schedule onto its own clock `offset[p]` late (its estimate of the store's clock is
/// off by that much), so its sends reach the server that much later than the schedule says.
/// While a margin is in force, a slot following another process's leaves the junction gap
/// (`gcra.lua`: six margins of the interval).
#[derive(Debug)]
struct Fleet {
    tat: Option<Instant>,
    /// The process that reserved the last slot.
    last: Option<usize>,
    paused_until: Option<Instant>,
    /// The shared margin, as `spacing.lua` keeps it: its value when set, when, its half-life,
    /// the step that set it.
    margin: (f64, Instant, Duration, f64),
    widened: usize,
}

impl Fleet {
    fn interval(&self, quota: &Quota, now: Instant) -> Duration {
        quota.emission_interval().mul_f64(1.0 + self.margin_at(now))
    }

    fn margin_at(&self, now: Instant) -> f64 {
        let (extra, at, half_life, _) = self.margin;
        extra * (-(now - at).as_secs_f64() / half_life.as_secs_f64()).exp2()
    }

    /// Reserves the next slot of `process` at or after `earliest` (on the store's clock).
    fn reserve(&mut self, quota: &Quota, earliest: Instant, process: usize) -> Instant {
        let junction = if self.last.is_some_and(|last| last != process) {
            quota
                .emission_interval()
                .mul_f64(6.0 * self.margin_at(earliest))
        } else {
            Duration::ZERO
        };
        self.last = Some(process);
        let mut slot = self
            .tat
            .map_or(earliest, |tat| (tat + junction).max(earliest));
        if let Some(until) = self.paused_until {
            slot = slot.max(until);
        }
        self.tat = Some(slot + self.interval(quota, slot));
        slot
    }
}

#[derive(Clone, Debug)]
struct FleetSources {
    fleet: Arc<Mutex<Fleet>>,
    offset: Duration,
    process: usize,
}

#[derive(Debug)]
struct FleetSlots {
    fleet: Arc<Mutex<Fleet>>,
    quota: Quota,
    offset: Duration,
    process: usize,
    /// This process's reserved slot, on the store's clock.
    reserved: Option<Instant>,
}

impl SlotSources<()> for FleetSources {
    fn source(&self, _key: &(), quota: &Quota, _waker: HeadWaker) -> Box<dyn SlotSource> {
        Box::new(FleetSlots {
            fleet: Arc::clone(&self.fleet),
            quota: *quota,
            offset: self.offset,
            process: self.process,
            reserved: None,
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl SlotSource for FleetSlots {
    fn admit(&mut self, now: Instant, _demand: pacer_limit::Demand) -> Admission {
        let slot = match self.reserved {
            Some(slot) => slot,
            None => {
                let store_now = now.checked_sub(self.offset).unwrap_or(now);
                let mut fleet = self.fleet.lock().unwrap();
                let slot = fleet.reserve(&self.quota, store_now, self.process);
                *self.reserved.insert(slot)
            }
        };
        let at = slot + self.offset;
        if at > now {
            return Admission::NotBefore(at);
        }
        self.reserved = None;
        Admission::Granted
    }

    fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        let fleet = self.fleet.lock().unwrap();
        let first = self
            .reserved
            .or(fleet.tat)
            .map_or(now, |slot| (slot + self.offset).max(now));
        first + fleet.interval(&self.quota, now) * u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn on_pause(&mut self, until: Instant) {
        // A reserved slot inside the pause is given up (the store is not told: it stays spent).
        if self.reserved.is_some_and(|slot| slot + self.offset < until) {
            self.reserved = None;
        }
    }

    fn share_pause(&self, _now: Instant, until: Instant) {
        let mut fleet = self.fleet.lock().unwrap();
        fleet.paused_until = Some(fleet.paused_until.map_or(until, |p| p.max(until)));
    }

    fn share_spacing(&self, now: Instant, extra: f64, half_life: Duration) {
        // As spacing.lua: the wider of the process's own margin and the one in force widened
        // by 3 %, so that processes refused in turn widen in turn; within a window (a round)
        // of the last widening, only the wider of the two.
        let mut fleet = self.fleet.lock().unwrap();
        let decayed = fleet.margin_at(now);
        let (_, set_at, _, _) = fleet.margin;
        if now - set_at < self.quota.effective_window() && fleet.widened > 0 {
            if extra > decayed {
                fleet.margin = (extra, now, half_life, 0.03);
            }
            return;
        }
        let margin = extra.max((1.0 + decayed) * 1.03 - 1.0);
        fleet.margin = (margin, now, half_life, 0.03);
        fleet.widened += 1;
    }

    fn applies_shared_spacing(&self) -> bool {
        // The store spaces every process's slots by the margin.
        true
    }

    fn is_strict(&self) -> bool {
        // As a reservation's junction gap tells: some process was refused for its spacing.
        self.fleet.lock().unwrap().widened > 0
    }

    fn is_idle(&self, _now: Instant) -> bool {
        false
    }
}

/// Four limiters on one shared quota, whose clocks map the shared schedule up to 2 ms apart:
/// two sends a slot apart from two processes can reach the server 2 ms closer than the
/// interval, and it refuses them. Every process must space its sends wider, from whichever
/// process's refusal: the fleet shares the margin (and the pause) until it covers the
/// processes' disagreement.
#[tokio::test(start_paused = true)]
async fn a_fleet_on_one_quota_widens_its_shared_spacing_in_few_refusals() {
    let start = Instant::now();
    let fleet = Arc::new(Mutex::new(Fleet {
        tat: None,
        last: None,
        paused_until: None,
        margin: (0.0, start, Duration::from_secs(30), 0.0),
        widened: 0,
    }));
    let server = StrictServer::new();
    let clients: Vec<Client> = [0u64, 2, 1, 2]
        .into_iter()
        .enumerate()
        .map(|(process, offset_ms)| {
            let sources = FleetSources {
                fleet: Arc::clone(&fleet),
                offset: Duration::from_millis(offset_ms),
                process,
            };
            let limiter = Limiter::builder(Quota::per_second(LIMIT))
                .slot_sources(sources)
                .build();
            over_link(&limiter, &server, jitter(Duration::ZERO, 0, process as u64))
        })
        .collect();
    run_all(&clients, CALLERS, start + RUN).await;
    let (rate, refused) = server.lock().unwrap().outcome();
    let widened = fleet.lock().unwrap().widened;
    eprintln!("fleet: {rate:.1} accepted/s, {refused} refused, margin widened {widened} times");
    // Before the fleet shared its strictness and junction gap, every process learned the
    // server was strict from a refusal of its own and the margin alone had to cover the
    // processes' 2 ms disagreement, one 3 % round at a time: 57/s with 12 refusals. Now a
    // process never refused holds after late answers too, and the gap after another
    // process's slot covers the disagreement in two rounds: 73.5/s with 3 refusals. Every
    // slot of this fleet follows another process's (they alternate one by one, where real
    // processes take blocks of slots), so the gap is paid on each: that is the throughput
    // the 0.85 is not met by here, and the real fleet meets (BENCHMARKS.md).
    assert!(rate >= 0.75 * 1000.0 / 11.0, "{rate:.1}/s");
    assert!(refused <= 5, "{refused} refusals");
    assert!(widened >= 1, "the fleet never shared a margin");
}
