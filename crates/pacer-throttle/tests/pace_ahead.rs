//! Pacing ahead of a server's allowance (issue 22): a GitHub-style server that grants 5
//! requests per window and says how many remain and when the window resets. The key must
//! spend the whole allowance of each window, never more.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use pacer_limit::{Limiter, Quota};
use pacer_throttle::ThrottleLayer;
use tokio::time::Instant;

use common::{client, run_callers, too_many_requests};

const WINDOW: Duration = Duration::from_secs(1);
const ALLOWED: u32 = 5;

/// Windows aligned on `start`; answers carry `X-RateLimit-Remaining` and `X-RateLimit-Reset`
/// (the time to the window's end, in seconds to the millisecond).
#[derive(Debug)]
struct AllowanceServer {
    start: Instant,
    window: u64,
    used: u32,
    accepted: u32,
    refused: u32,
}

impl AllowanceServer {
    fn handle(&mut self) -> Response<()> {
        let elapsed = self.start.elapsed();
        let window = (elapsed.as_nanos() / WINDOW.as_nanos()) as u64;
        if window != self.window {
            (self.window, self.used) = (window, 0);
        }
        let reset = WINDOW * u32::try_from(window + 1).unwrap() - elapsed;
        let mut response = if self.used < ALLOWED {
            self.used += 1;
            self.accepted += 1;
            Response::new(())
        } else {
            self.refused += 1;
            too_many_requests("1")
        };
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", ALLOWED.into());
        headers.insert("x-ratelimit-remaining", (ALLOWED - self.used).into());
        let reset = format!("{:.3}", reset.as_secs_f64());
        headers.insert("x-ratelimit-reset", reset.parse().unwrap());
        response
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_spends_each_window_s_whole_allowance_and_no_more() {
    // The client believes 100/s; the server grants 5 per window and says so.
    let limiter = Limiter::new(Quota::per_second(100));
    let server = Arc::new(Mutex::new(AllowanceServer {
        start: Instant::now(),
        window: 0,
        used: 0,
        accepted: 0,
        refused: 0,
    }));
    let handle = Arc::clone(&server);
    let client = client(
        &limiter,
        ThrottleLayer::new(limiter.clone()),
        move |_request: Request<()>| handle.lock().unwrap().handle(),
    );
    let run = Duration::from_secs(10);
    run_callers(&client, 3, Instant::now() + run).await;
    let server = server.lock().unwrap();
    assert_eq!(server.refused, 0, "{server:?}");
    // Every window's 5, but perhaps the last one's, cut by the end of the run.
    assert!(server.accepted >= 5 * 10 - 1, "{server:?}");
}
