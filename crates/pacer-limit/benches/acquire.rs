//! What one admission costs: pacer's fast path next to the limiters a user would otherwise pick.
//!
//! ```text
//! cargo bench -p pacer-limit --bench acquire
//! ```
//!
//! Every contender is configured never to refuse (a quota of about a billion per second with a
//! burst as large), so what is measured is the bookkeeping of one admission, not waiting:
//!
//! - `pacer/*`: [`Limiter::try_acquire`] (GCRA and sliding window, unkeyed, GCRA with a daily
//!   cap stacked on it, and keyed with the key cycling over 16 `u64`s) and the
//!   `acquire().await` future on a current-thread runtime;
//! - `governor/*`: `RateLimiter::check` (direct, on its default TSC clock and on
//!   `std::time::Instant`) and `check_key` (the default keyed store, the same 16 keys);
//! - `naive/mutex_token_bucket`: the token bucket people hand-roll, a `Mutex<(tokens, last)>`;
//! - `tower/*`: `tower::limit::RateLimit` driven through `ready().call()`, directly and behind
//!   `Buffer` (which sharing it across tasks requires), on a current-thread runtime.
//!
//! `reference/*` are the floors every limiter here pays: reading tokio's clock (pacer uses it so
//! that `tokio::time::pause()` drives it in tests) and an uncontended `Mutex`.
//!
//! `contended_2_threads` runs the synchronous checks from two threads at once on one shared
//! limiter, each thread doing half of criterion's iterations. The figure is the wall time from
//! the threads' common start to both being joined, divided by the operations of both threads:
//! the cost per admission of the pair (a thread's own latency per call is twice that).

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter};
use pacer_limit::{Limiter, Quota};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

/// Large enough that no contender refuses during a benchmark run.
const HUGE: u32 = 1_000_000_000;
/// Keys the keyed contenders cycle through.
const KEYS: u64 = 16;

fn pacer_gcra() -> Limiter {
    Limiter::new(Quota::per_second(HUGE).gcra(HUGE))
}

fn pacer_sliding() -> Limiter {
    Limiter::new(Quota::per_second(HUGE).sliding_window())
}

fn pacer_keyed() -> Limiter<u64> {
    Limiter::builder(Quota::per_second(HUGE).gcra(HUGE)).build()
}

/// `NonZeroU32::MAX` per second with as large a burst; governor clamps the interval to 1 ns, so
/// this is the same 10^9 per second as [`HUGE`].
fn governor_quota() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::MAX).allow_burst(NonZeroU32::MAX)
}

fn governor_direct() -> DefaultDirectRateLimiter {
    governor::RateLimiter::direct(governor_quota())
}

fn governor_keyed() -> DefaultKeyedRateLimiter<u64> {
    governor::RateLimiter::keyed(governor_quota())
}

/// The token bucket found in many code bases: refill by elapsed time, take one if there is one.
#[derive(Debug)]
struct NaiveTokenBucket {
    state: Mutex<(f64, Instant)>,
    per_second: f64,
    burst: f64,
}

impl NaiveTokenBucket {
    fn new() -> Self {
        let burst = f64::from(HUGE);
        Self {
            state: Mutex::new((burst, Instant::now())),
            per_second: burst,
            burst,
        }
    }

    fn try_acquire(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

type Noop = tower::util::ServiceFn<fn(()) -> Ready<Result<(), Infallible>>>;

fn noop_service() -> Noop {
    tower::service_fn(|()| ready(Ok(())))
}

fn tower_rate_limit() -> tower::limit::RateLimit<Noop> {
    tower::limit::RateLimit::new(
        noop_service(),
        tower::limit::rate::Rate::new(u64::MAX, Duration::from_secs(1)),
    )
}

fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Times `iters` calls of `service` through `ready().call()`, inside one `block_on`, so that the
/// runtime's entry cost is not counted per call.
fn time_service_calls<S>(runtime: &Runtime, service: &mut S, iters: u64) -> Duration
where
    S: Service<(), Response = ()>,
    S::Error: std::fmt::Debug,
{
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            service.ready().await.unwrap().call(()).await.unwrap();
        }
        start.elapsed()
    })
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended");
    configure(&mut group);

    let limiter = pacer_gcra();
    group.bench_function("pacer/try_acquire", |b| {
        b.iter(|| black_box(limiter.try_acquire(&())))
    });
    let limiter = pacer_sliding();
    group.bench_function("pacer/try_acquire_sliding", |b| {
        b.iter(|| black_box(limiter.try_acquire(&())))
    });
    // The same with a daily cap stacked on it (`Quota::and`): one more sliding count per send.
    let limiter = Limiter::new(Quota::per_second(HUGE).gcra(HUGE).and(Quota::per_day(HUGE)));
    group.bench_function("pacer/try_acquire_two_windows", |b| {
        b.iter(|| black_box(limiter.try_acquire(&())))
    });
    let limiter = pacer_keyed();
    let mut key = 0;
    group.bench_function("pacer/try_acquire_keyed", |b| {
        b.iter(|| {
            key = (key + 1) % KEYS;
            black_box(limiter.try_acquire(&key))
        })
    });
    let runtime = current_thread_runtime();
    let limiter = pacer_gcra();
    group.bench_function("pacer/acquire_async", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(limiter.acquire(()).await).unwrap();
                }
                start.elapsed()
            })
        })
    });

    let governor = governor_direct();
    group.bench_function("governor/check", |b| b.iter(|| black_box(governor.check())));
    // The same limiter on `std::time::Instant`, the clock family pacer reads: separates the
    // cost of the clock from the cost of the algorithm.
    let governor =
        governor::RateLimiter::direct_with_clock(governor_quota(), governor::clock::MonotonicClock);
    group.bench_function("governor/check_std_clock", |b| {
        b.iter(|| black_box(governor.check()))
    });
    let governor = governor_keyed();
    let mut key = 0;
    group.bench_function("governor/check_key", |b| {
        b.iter(|| {
            key = (key + 1) % KEYS;
            black_box(governor.check_key(&key))
        })
    });

    let naive = NaiveTokenBucket::new();
    group.bench_function("naive/mutex_token_bucket", |b| {
        b.iter(|| black_box(naive.try_acquire()))
    });

    let mut rate_limit = {
        let _entered = runtime.enter();
        tower_rate_limit()
    };
    group.bench_function("tower/RateLimit", |b| {
        b.iter_custom(|iters| time_service_calls(&runtime, &mut rate_limit, iters))
    });
    let mut buffered = {
        let _entered = runtime.enter();
        tower::buffer::Buffer::new(tower_rate_limit(), 1024)
    };
    group.bench_function("tower/Buffer+RateLimit", |b| {
        b.iter_custom(|iters| time_service_calls(&runtime, &mut buffered, iters))
    });
    group.finish();
}

fn reference(c: &mut Criterion) {
    let mut group = c.benchmark_group("reference");
    configure(&mut group);
    group.bench_function("tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    let counter = Mutex::new(0_u64);
    group.bench_function("mutex_lock_increment", |b| {
        b.iter(|| *black_box(&counter).lock().unwrap() += 1)
    });
    group.finish();
}

/// Splits `iters` calls of `op` over two threads released together, and returns the wall time
/// from their release until both are joined, so criterion reports it per operation of the pair.
fn on_two_threads(iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    // The two workers and this thread, which starts the clock once all three are at the barrier.
    let barrier = Barrier::new(3);
    std::thread::scope(|scope| {
        let threads: Vec<_> = [iters / 2, iters - iters / 2]
            .into_iter()
            .map(|share| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    for _ in 0..share {
                        op();
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for thread in threads {
            thread.join().unwrap();
        }
        start.elapsed()
    })
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("contended_2_threads");
    configure(&mut group);

    let limiter = pacer_gcra();
    group.bench_function("pacer/try_acquire", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, &|| {
                black_box(limiter.try_acquire(&())).unwrap();
            })
        })
    });
    let governor = governor_direct();
    group.bench_function("governor/check", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, &|| {
                black_box(governor.check()).unwrap();
            })
        })
    });
    let naive = NaiveTokenBucket::new();
    group.bench_function("naive/mutex_token_bucket", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, &|| {
                assert!(black_box(naive.try_acquire()));
            })
        })
    });
    group.finish();
}

/// Short runs: the whole file finishes in about a minute on two cores.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
}

criterion_group!(benches, uncontended, contended, reference);
criterion_main!(benches);
