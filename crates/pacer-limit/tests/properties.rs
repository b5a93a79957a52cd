//! Property tests in paused time: under random arrivals, quotas and cancellations, the limiter
//! never exceeds its quota and never wastes capacity.

mod common;

use std::time::Duration;

use common::{arrivals, conforms_to_gcra, max_in_any_window, paused_runtime, reference_schedule};
use pacer_limit::{Limiter, Model, Quota};
use proptest::prelude::*;
use tokio::time::Instant;

/// A quota whose interval is a whole number of milliseconds, so that paused time (which moves in
/// whole milliseconds) grants exactly at the instants the reference schedule predicts.
fn quota() -> impl Strategy<Value = Quota> {
    (1u32..20, 1u64..40, 0u64..3, any::<bool>(), 1u32..20).prop_map(
        |(limit, interval_ms, margin_units, sliding, burst)| {
            let effective = Duration::from_millis(interval_ms * u64::from(limit));
            let margin = Duration::from_millis(margin_units * u64::from(limit));
            let quota = Quota::new(
                limit,
                effective
                    .saturating_sub(margin)
                    .max(Duration::from_millis(1)),
            )
            .sliding_window()
            .with_margin(Duration::ZERO);
            let quota = quota.with_margin(effective - quota.window());
            if sliding {
                quota.sliding_window()
            } else {
                quota.gcra(burst.min(limit))
            }
        },
    )
}

/// Checks the quota's own invariant on real grant instants.
fn assert_within_quota(quota: &Quota, grants: &[Instant]) -> Result<(), TestCaseError> {
    match quota.model() {
        Model::SlidingWindow => {
            let most = max_in_any_window(grants, quota.effective_window());
            prop_assert!(most <= quota.limit() as usize, "{most} sends in one window");
        }
        Model::Gcra { burst } => {
            prop_assert!(conforms_to_gcra(
                grants,
                quota.emission_interval(),
                burst.get()
            ));
        }
        _ => unreachable!(),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Never more than the quota, and never later than a perfect FIFO limiter.
    #[test]
    fn grants_match_the_perfect_schedule(quota in quota(), arrivals in arrivals(500, 120)) {
        let grants = paused_runtime().block_on(async {
            let limiter = Limiter::new(quota);
            let start = Instant::now();
            let tasks: Vec<_> = arrivals.iter().map(|&ms| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
                    limiter.acquire(()).await.unwrap();
                    Instant::now()
                })
            }).collect();
            let mut grants = Vec::new();
            for task in tasks {
                grants.push(task.await.unwrap());
            }
            grants.into_iter().map(|g| g - start).collect::<Vec<_>>()
        });
        let origin = Instant::now();
        let instants: Vec<Instant> = grants.iter().map(|&d| origin + d).collect();
        assert_within_quota(&quota, &instants)?;

        let arrivals: Vec<Duration> = arrivals.iter().map(|&ms| Duration::from_millis(ms)).collect();
        let mut expected = reference_schedule(&quota, &arrivals);
        let mut actual = grants;
        expected.sort();
        actual.sort();
        prop_assert_eq!(actual, expected);
    }

    /// Waiters cancelled at random times take no capacity with them: the quota still holds, and
    /// the first request after everything settles gets the next free slot exactly.
    #[test]
    fn cancellations_lose_no_capacity(
        quota in quota(),
        arrivals in arrivals(500, 120),
        patience in prop::collection::vec(prop::option::weighted(0.4, 0u64..300), 120),
    ) {
        let (grants, asked, next, queued) = paused_runtime().block_on(async {
            let limiter = Limiter::new(quota);
            let start = Instant::now();
            let tasks: Vec<_> = arrivals.iter().zip(&patience).map(|(&ms, &patience)| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
                    let acquire = limiter.acquire(());
                    let granted = match patience {
                        Some(p) => tokio::time::timeout(Duration::from_millis(p), acquire).await.ok(),
                        None => Some(acquire.await),
                    };
                    granted.map(|result| {
                        result.unwrap();
                        Instant::now()
                    })
                })
            }).collect();
            let mut grants = Vec::new();
            for task in tasks {
                grants.extend(task.await.unwrap());
            }
            let queued = limiter.queue_len(&());
            let asked = Instant::now();
            limiter.acquire(()).await.unwrap();
            (grants, asked, Instant::now(), queued)
        });
        prop_assert_eq!(queued, 0);
        let mut all = grants.clone();
        all.push(next);
        assert_within_quota(&quota, &all)?;

        // A perfect limiter, given the grants that really happened, puts one more request asked
        // for at `asked` exactly here. Replaying real grants as arrivals reproduces them.
        let origin = *all.iter().chain([&asked]).min().unwrap();
        let mut replay: Vec<Duration> = grants.iter().map(|&g| g - origin).collect();
        replay.sort();
        replay.push(asked - origin);
        let expected = *reference_schedule(&quota, &replay).last().unwrap();
        prop_assert_eq!(next - origin, expected);
    }
}
