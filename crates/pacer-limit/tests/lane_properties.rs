//! Property tests of the lanes in paused time: under random arrivals in random lanes, with
//! random cancellations, every waiter that stays is served (nothing starves, within the bound
//! its lane's minimum share sets), each lane is served first in, first out, and the quota holds.

mod common;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use common::{conforms_to_gcra, paused_runtime};
use pacer_limit::{Limiter, Priority, Quota};
use proptest::prelude::*;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Asked(usize),
    Granted(usize, Instant),
    Cancelled(usize),
}

fn lane() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Interactive),
        Just(Priority::Normal),
        Just(Priority::Bulk)
    ]
}

/// Waiters: arrival offset (ms, non-decreasing), lane, and patience (ms) before giving up.
fn waiters() -> impl Strategy<Value = Vec<(u64, Priority, Option<u64>)>> {
    prop::collection::vec(
        (
            prop_oneof![3 => Just(0u64), 2 => 0u64..30, 1 => 0u64..300],
            lane(),
            prop::option::weighted(0.25, 0u64..400),
        ),
        1..90,
    )
    .prop_map(|waiters| {
        let mut at = 0;
        waiters
            .into_iter()
            .map(|(gap, lane, patience)| {
                at += gap;
                (at, lane, patience)
            })
            .collect()
    })
}

/// Runs the waiters against one key and returns what happened, in order.
fn run(share: f64, waiters: &[(u64, Priority, Option<u64>)]) -> Vec<Event> {
    paused_runtime().block_on(async {
        let interval = Duration::from_millis(10);
        let limiter = Limiter::builder(Quota::per_second(100).gcra(1).with_margin(Duration::ZERO))
            .min_share(share)
            .build();
        let events = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let tasks: Vec<_> = waiters
            .iter()
            .enumerate()
            .map(|(id, &(at, lane, patience))| {
                let (limiter, events) = (limiter.clone(), Arc::clone(&events));
                tokio::spawn(async move {
                    tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                    let mut acquire = std::pin::pin!(limiter.acquire_with_priority((), lane));
                    // The first poll queues it (or grants it); nothing runs in between.
                    let first =
                        std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
                    events.lock().unwrap().push(Event::Asked(id));
                    let granted = match (first, patience) {
                        (Poll::Ready(result), _) => Some(result),
                        (Poll::Pending, None) => Some(acquire.await),
                        (Poll::Pending, Some(patience)) => {
                            tokio::time::timeout(Duration::from_millis(patience), acquire)
                                .await
                                .ok()
                        }
                    };
                    let event = match granted {
                        Some(result) => {
                            result.unwrap();
                            Event::Granted(id, Instant::now())
                        }
                        None => Event::Cancelled(id),
                    };
                    events.lock().unwrap().push(event);
                })
            })
            .collect();
        // Bounded: 90 waiters at 10 ms each drain well within a minute of simulated time.
        let all = async {
            for task in tasks {
                task.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60) + interval, all)
            .await
            .expect("a waiter starved");
        assert_eq!(limiter.queue_len(&()), 0);
        let events = events.lock().unwrap().clone();
        events
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn lanes_are_fifo_nobody_starves_and_the_quota_holds(
        share in prop_oneof![Just(0.1), Just(0.2), Just(0.25), Just(0.5)],
        waiters in waiters(),
    ) {
        let events = run(share, &waiters);
        let lane_of = |id: usize| waiters[id].1;

        // Everybody is accounted for once: granted, or cancelled having been patient.
        let mut outcome = vec![None; waiters.len()];
        for event in &events {
            match *event {
                Event::Granted(id, _) => outcome[id] = Some(true),
                Event::Cancelled(id) => outcome[id] = Some(false),
                Event::Asked(_) => {}
            }
        }
        for (id, outcome) in outcome.iter().enumerate() {
            prop_assert!(outcome.is_some(), "waiter {id} neither granted nor cancelled");
            if *outcome == Some(false) {
                prop_assert!(waiters[id].2.is_some(), "waiter {id} without patience cancelled");
            }
        }

        // The quota holds.
        let grants: Vec<Instant> = events.iter().filter_map(|e| match e {
            Event::Granted(_, at) => Some(*at),
            _ => None,
        }).collect();
        prop_assert!(conforms_to_gcra(&grants, Duration::from_millis(10), 1));

        // Within a lane, first in, first out.
        for lane in Priority::ALL {
            let asked: Vec<usize> = events.iter().filter_map(|e| match e {
                Event::Asked(id) if lane_of(*id) == lane && outcome[*id] == Some(true) => Some(*id),
                _ => None,
            }).collect();
            let granted: Vec<usize> = events.iter().filter_map(|e| match e {
                Event::Granted(id, _) if lane_of(*id) == lane => Some(*id),
                _ => None,
            }).collect();
            prop_assert_eq!(granted, asked, "lane {:?} out of order", lane);
        }

        // No lower-lane waiter sees more grants go by than its minimum share allows: with p
        // of its lane ahead, it earns its turn within (p + 1) / share grants, plus one grant
        // per turn when two owed lanes collide.
        let mut queued: Vec<usize> = Vec::new();
        let mut ahead_at_ask = vec![0usize; waiters.len()];
        let mut grants_seen = vec![0usize; waiters.len()];
        for event in &events {
            match *event {
                Event::Asked(id) => {
                    ahead_at_ask[id] = queued.iter().filter(|&&w| lane_of(w) == lane_of(id)).count();
                    queued.push(id);
                }
                Event::Granted(id, _) => {
                    queued.retain(|&w| w != id);
                    for &w in &queued {
                        grants_seen[w] += 1;
                    }
                }
                Event::Cancelled(id) => queued.retain(|&w| w != id),
            }
        }
        for (id, &(_, lane, _)) in waiters.iter().enumerate() {
            if lane == Priority::Interactive || outcome[id] != Some(true) {
                continue;
            }
            let turns = ahead_at_ask[id] + 1;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let bound = ((turns as f64) / share).ceil() as usize + turns;
            prop_assert!(
                grants_seen[id] <= bound,
                "waiter {} ({:?}, {} ahead) saw {} grants go by, more than {}",
                id, lane, ahead_at_ask[id], grants_seen[id], bound
            );
        }
    }
}
