//! Quotas of several windows ([`Quota::and`]) in paused time: every window holds under random
//! arrivals, a request is admitted as soon as every window has room, and a spent long window
//! holds the key without ever slowing the short window's pacing.

mod common;

use std::time::Duration;

use common::{arrivals, conforms_to_gcra, max_in_any_window, paused_runtime, reference_schedule};
use pacer_limit::{Feedback, Limiter, Model, Outcome, Quota};
use proptest::prelude::*;
use tokio::time::Instant;

/// A primary window with a whole-millisecond interval (paused time moves in whole
/// milliseconds) and a longer cap of whole milliseconds, both without margins.
fn two_windows() -> impl Strategy<Value = Quota> {
    (
        1u32..8,
        1u64..20,
        any::<bool>(),
        1u32..8,
        2u64..12,
        1u32..100,
    )
        .prop_map(|(limit, interval_ms, sliding, burst, stretch, cap_pct)| {
            let window = Duration::from_millis(interval_ms * u64::from(limit));
            let primary = Quota::new(limit, window).with_margin(Duration::ZERO);
            let primary = if sliding {
                primary.sliding_window()
            } else {
                primary.gcra(burst.min(limit))
            };
            // The cap's window is `stretch` primary windows; its limit a share of what the
            // primary alone would allow in it, so that it binds.
            let most = u64::from(limit) * stretch;
            let cap_limit = (most * u64::from(cap_pct) / 100).max(1);
            let cap = Quota::new(u32::try_from(cap_limit).unwrap(), window * stretch as u32)
                .with_margin(Duration::ZERO);
            primary.and(cap)
        })
}

/// Runs one `acquire` per arrival, in paused time; the grant instants, in arrival order.
fn run(quota: Quota, arrivals: &[u64]) -> (Instant, Vec<Instant>) {
    paused_runtime().block_on(async {
        let limiter = Limiter::new(quota);
        let start = Instant::now();
        let tasks: Vec<_> = arrivals
            .iter()
            .map(|&ms| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
                    limiter.acquire(()).await.unwrap();
                    Instant::now()
                })
            })
            .collect();
        let mut grants = Vec::new();
        for task in tasks {
            grants.push(task.await.unwrap());
        }
        (start, grants)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Never more than N in any W1 and never more than M in any W2; and every request is
    /// admitted exactly when a perfect limiter would, so as soon as both windows have room.
    #[test]
    fn every_window_holds_and_no_slot_is_wasted(quota in two_windows(), arrivals in arrivals(400, 100)) {
        let (start, grants) = run(quota, &arrivals);
        let cap = quota.caps().next().unwrap();
        let in_cap = max_in_any_window(&grants, cap.effective_window());
        prop_assert!(in_cap <= cap.limit() as usize, "{in_cap} sends in one long window");
        match quota.model() {
            Model::SlidingWindow => {
                let most = max_in_any_window(&grants, quota.effective_window());
                prop_assert!(most <= quota.limit() as usize, "{most} sends in one short window");
            }
            Model::Gcra { burst } => {
                prop_assert!(conforms_to_gcra(&grants, quota.emission_interval(), burst.get()));
            }
            _ => unreachable!(),
        }
        let arrivals: Vec<Duration> = arrivals.iter().map(|&ms| Duration::from_millis(ms)).collect();
        let mut expected = reference_schedule(&quota, &arrivals);
        let mut actual: Vec<Duration> = grants.iter().map(|&g| g - start).collect();
        expected.sort();
        actual.sort();
        prop_assert_eq!(actual, expected);
    }

    /// Liveness after any history: when both windows have room now, a request arriving now is
    /// admitted now, and the limiter says so before it asks.
    #[test]
    fn room_in_every_window_admits_at_once(
        quota in two_windows(),
        arrivals in arrivals(400, 100),
        later in 0u64..2_000,
    ) {
        let (granted, estimated, room) = paused_runtime().block_on(async {
            let limiter = Limiter::new(quota);
            let start = Instant::now();
            let mut sends = Vec::new();
            for &ms in &arrivals {
                tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
                limiter.acquire(()).await.unwrap();
                sends.push(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(later)).await;
            let now = Instant::now();
            let cap = quota.caps().next().unwrap();
            let in_last = |window: Duration, limit: u32| {
                sends.iter().filter(|&&s| s + window > now).count() < limit as usize
            };
            let room = in_last(cap.effective_window(), cap.limit())
                && match quota.model() {
                    Model::SlidingWindow => in_last(quota.effective_window(), quota.limit()),
                    // Evenly spaced: one interval since the last send frees the next slot.
                    _ => sends.last().is_none_or(|&s| s + quota.emission_interval() <= now),
                };
            let estimated = limiter.estimated_wait(&());
            let granted = limiter.try_acquire(&()).is_ok();
            (granted, estimated, room)
        });
        if room {
            prop_assert!(granted);
            prop_assert_eq!(estimated, Duration::ZERO);
        }
        prop_assert_eq!(granted, estimated == Duration::ZERO);
    }
}

/// A spent daily cap holds the key until its oldest send leaves the window, then the key
/// sends at its full per-second pace again: the cap never lowers the short window's rate.
#[tokio::test(start_paused = true)]
async fn a_spent_long_window_holds_the_key_without_slowing_its_pace() {
    let short = Quota::per_second(10).with_margin(Duration::ZERO);
    let quota = short.and(Quota::per_minute(25).with_margin(Duration::ZERO));
    let limiter = Limiter::new(quota);
    let start = Instant::now();
    let mut sends = Vec::new();
    for _ in 0..60 {
        limiter.acquire(()).await.unwrap();
        sends.push(Instant::now() - start);
    }
    let ms = |n: u64| Duration::from_millis(n);
    // 25 at 10/s, then nothing until the first of them leaves the minute, then 10/s again.
    assert_eq!(sends[24], ms(2_400));
    assert_eq!(sends[25], ms(60_000));
    assert_eq!(sends[26] - sends[25], ms(100));
    assert_eq!(sends[49], ms(62_400));
    assert_eq!(sends[50], ms(120_000));
}

/// A short pause (a Retry-After) spaces the primary window's next sends but costs a cap
/// nothing: the cap counts real sends only.
#[tokio::test(start_paused = true)]
async fn a_pause_does_not_fill_the_long_window() {
    let quota = Quota::per_second(10)
        .with_margin(Duration::ZERO)
        .and(Quota::per_minute(20).with_margin(Duration::ZERO));
    let limiter = Limiter::new(quota);
    let start = Instant::now();
    limiter.pause_until(&(), start + Duration::from_secs(2));
    for _ in 0..20 {
        limiter.acquire(()).await.unwrap();
    }
    // Twenty sends after the pause, evenly spaced: the minute's whole allowance.
    assert_eq!(start.elapsed(), Duration::from_millis(2_000 + 19 * 100));
}

/// Learning and `set_quota` change the primary window; a cap keeps its count across them.
#[tokio::test(start_paused = true)]
async fn a_new_primary_rate_keeps_the_long_window_count() {
    let cap = Quota::per_minute(10).with_margin(Duration::ZERO);
    let quota = Quota::per_second(10).with_margin(Duration::ZERO).and(cap);
    let limiter = Limiter::new(quota);
    let start = Instant::now();
    for _ in 0..10 {
        limiter.acquire(()).await.unwrap();
    }
    limiter.set_quota(&(), quota.scaled(5));
    assert_eq!(
        limiter.quota(&()).caps().collect::<Vec<_>>(),
        quota.caps().collect::<Vec<_>>()
    );
    limiter.acquire(()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(60));

    // A refusal without a wait while the cap has room cuts the primary rate, caps untouched.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let verdict = limiter.observe(&(), Feedback::new(Outcome::Refused, Instant::now()));
    assert!(verdict.spent.is_none());
    assert_eq!(limiter.quota(&()).caps().count(), 1);
}

/// A refusal without a wait while the key's own count says a cap is about spent: the key is
/// paused until the cap frees (capped by the caller's maximum), its rate is left alone, and the
/// verdict says which cap and when.
#[tokio::test(start_paused = true)]
async fn a_refusal_without_a_wait_on_a_spent_cap_pauses_until_it_frees() {
    let short = Quota::per_second(10).with_margin(Duration::ZERO);
    let daily = Quota::per_day(100).with_margin(Duration::ZERO);
    let limiter = Limiter::new(short.and(daily));
    let start = Instant::now();
    for _ in 0..96 {
        limiter.acquire(()).await.unwrap();
    }
    // 96 of 100 used: about spent. The server counted a few more and refuses without a wait.
    let refused = Feedback::new(Outcome::Refused, Instant::now());
    let verdict = limiter.observe(&(), refused);
    let spent = verdict.spent.expect("the daily cap is about spent");
    assert_eq!(spent.cap, short.and(daily).caps().next().unwrap());
    assert_eq!(spent.frees_at, start + Duration::from_secs(86_400));
    assert_eq!(verdict.paused_until, Some(spent.frees_at));
    assert!(verdict.paced);
    assert_eq!(verdict.rate_per_second, None);
    assert_eq!(limiter.quota(&()), short.and(daily));
    assert!(limiter.estimated_wait(&()) > Duration::from_secs(86_000));

    // With a maximum pause, the key is paused for that much only.
    let limiter = Limiter::new(short.and(daily));
    for _ in 0..100 {
        limiter.acquire(()).await.unwrap();
    }
    let now = Instant::now();
    let verdict = limiter.observe(&(), refused.max_pause(Duration::from_secs(60)));
    assert_eq!(verdict.paused_until, Some(now + Duration::from_secs(60)));
    assert!(verdict.spent.unwrap().frees_at > now + Duration::from_secs(80_000));

    // Far from spent, the same refusal is the primary rate's: it is cut, nothing is spent.
    let limiter = Limiter::new(short.and(daily));
    for _ in 0..50 {
        limiter.acquire(()).await.unwrap();
    }
    let verdict = limiter.observe(&(), Feedback::new(Outcome::Refused, Instant::now()));
    assert_eq!(verdict.spent, None);
    assert!(verdict.rate_per_second.is_some_and(|rate| rate < 10.0));
}
