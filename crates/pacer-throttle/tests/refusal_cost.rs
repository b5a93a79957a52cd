//! What a refusal with a wait costs an evenly paced key (issue 22): a strict server (nginx
//! `limit_req` without burst) answering `429` with `Retry-After: 1` to a request that arrived
//! a millisecond early pauses every caller for a second; the rate must not compound blind cuts
//! on top of that pause.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use pacer_limit::{Limiter, Quota};
use pacer_throttle::ThrottleLayer;
use tokio::time::Instant;

use common::{client, run_callers, too_many_requests, watch_rate};

const LIMIT: u32 = 100;

/// The limit in force every 50 ms while 10 callers send for `run` through the default stack to
/// a server that answers `429 Retry-After: 1` to the requests whose 0-based numbers are in
/// `refuse`, and the instants of those refusals.
async fn around_refusals(
    refuse: &'static [usize],
    run: Duration,
) -> (Vec<(Duration, u32)>, Vec<Duration>) {
    let limiter = Limiter::new(Quota::per_second(LIMIT));
    let start = Instant::now();
    let seen = Arc::new(Mutex::new((0usize, Vec::new())));
    let log = Arc::clone(&seen);
    let server = move |_request: Request<()>| {
        let mut seen = log.lock().unwrap();
        seen.0 += 1;
        if refuse.contains(&(seen.0 - 1)) {
            seen.1.push(start.elapsed());
            too_many_requests("1")
        } else {
            Response::new(())
        }
    };
    let client = client(&limiter, ThrottleLayer::new(limiter.clone()), server);
    let watcher = watch_rate(&limiter, run, Duration::from_millis(50));
    run_callers(&client, 10, start + run).await;
    let limits = watcher.await.unwrap();
    let refused_at = seen.lock().unwrap().1.clone();
    (limits, refused_at)
}

/// One isolated refusal: the key pauses for the second it was asked, then sends at 97 % of its
/// rate (a 3 % wider spacing), which shrinks back over minutes: at or above 95 % throughout
/// the next ten seconds.
#[tokio::test(start_paused = true)]
async fn an_isolated_refusal_with_a_wait_costs_its_pause_and_three_percent() {
    let (limits, refused_at) = around_refusals(&[300], Duration::from_secs(20)).await;
    let [refused_at] = refused_at[..] else {
        panic!("expected one refusal, got {refused_at:?}");
    };
    let lowest = limits.iter().map(|&(_, limit)| limit).min().unwrap();
    assert!(lowest >= 96, "{limits:?}");
    assert!(lowest < LIMIT, "the refusal changed nothing: {limits:?}");
    let after: Vec<_> = limits
        .iter()
        .filter(|&&(t, _)| t > refused_at && t <= refused_at + Duration::from_secs(10))
        .collect();
    assert!(after.iter().all(|&&(_, limit)| limit >= 95), "{after:?}");
}

/// Three refusals in a row, each a second and a half of sending after the last one's pause
/// (within two windows: a repeated round): the margin did not cover how far apart the sends
/// really arrive, so each round widens further (3 %, then twice the last step, as far as a
/// refusal per that much sending is worth: 84–88 per window), and the margin, having taken three rounds, is held rather than probed
/// away within seconds (each probe into a refusal costs a whole pause). The old rules cut the rate blind
/// (1 %, 4 %, 16 %) and climbed back into the next refusal within three windows; the rule before
/// this one widened 3 % and then cut the rate by the same blind steps (93 at the lowest).
#[tokio::test(start_paused = true)]
async fn refusals_soon_after_each_other_escalate_the_margin_and_hold_it() {
    let (limits, refused_at) = around_refusals(&[300, 450, 600], Duration::from_secs(15)).await;
    assert_eq!(refused_at.len(), 3, "{refused_at:?}");
    let lowest = limits.iter().map(|&(_, limit)| limit).min().unwrap();
    assert!((84..=88).contains(&lowest), "lowest {lowest}: {limits:?}");
    // Held: five seconds after the third round the margin has shrunk by well under 1 %.
    let third = refused_at[2];
    let held: Vec<_> = limits
        .iter()
        .filter(|&&(t, _)| {
            t > third + Duration::from_secs(2) && t <= third + Duration::from_secs(7)
        })
        .collect();
    assert!(!held.is_empty());
    assert!(
        held.iter().all(|&&(_, limit)| limit <= lowest + 1),
        "{held:?}"
    );
}

/// Three refusals each a fifth of a second of sending after the last one's pause: the margin
/// is too narrow for how far apart the sends arrive (as behind a link with jitter), so the
/// rounds escalate (3 %, 6 %, 12 %: 82 per window) and the margin, having taken three rounds,
/// is held rather than probed away within seconds (each probe into a refusal costs a whole
/// pause). The rule before widened 3 % and then cut the rate by blind steps that climb back
/// within three windows (93 at the lowest, and back to 100 into the next refusal).
#[tokio::test(start_paused = true)]
async fn quick_repeated_refusals_escalate_the_margin_and_hold_it() {
    let (limits, refused_at) = around_refusals(&[300, 320, 340], Duration::from_secs(15)).await;
    assert_eq!(refused_at.len(), 3, "{refused_at:?}");
    let lowest = limits.iter().map(|&(_, limit)| limit).min().unwrap();
    assert!((80..=84).contains(&lowest), "lowest {lowest}: {limits:?}");
    // Held: from two to ten seconds after the third round the margin has shrunk by under 2 %.
    let third = refused_at[2];
    let held: Vec<_> = limits
        .iter()
        .filter(|&&(t, _)| {
            t > third + Duration::from_secs(2) && t <= third + Duration::from_secs(10)
        })
        .collect();
    assert!(!held.is_empty());
    assert!(
        held.iter().all(|&&(_, limit)| limit <= lowest + 2),
        "{held:?}"
    );
}
