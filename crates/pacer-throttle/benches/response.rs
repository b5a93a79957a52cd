//! What one successful request costs through [`PaceLayer`]: the slot, then the response fed
//! back to the limiter.
//!
//! ```text
//! cargo bench -p pacer-throttle --bench response
//! ```
//!
//! The quota is about a billion per second, so nothing waits: what is measured is the
//! bookkeeping. `plain_200` answers a bare 200; `rate_headers_200` answers 200 with
//! `X-RateLimit-Remaining: 2000000000` and `X-RateLimit-Reset: 1` (a server's allowance, which
//! pacing ahead reads, large enough never to slow the key). Each response is one `Limiter::observe` call, one lock of the limiter;
//! before issue 22 the throttle kept its own per-key map behind a second mutex, and a response
//! with an allowance took the limiter's lock again for the quota in force.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use pacer_limit::{Limiter, Quota};
use pacer_throttle::PaceLayer;
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt};

/// Large enough that no request waits during a benchmark run.
const FAST: u32 = 1_000_000_000;

fn response(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("pace_layer");
    group.measurement_time(Duration::from_secs(3));
    for (name, headers) in [("plain_200", false), ("rate_headers_200", true)] {
        let limiter = Limiter::new(
            Quota::new(FAST, Duration::from_secs(1))
                .sliding_window()
                .with_margin(Duration::ZERO),
        );
        let mut service = ServiceBuilder::new()
            .layer(PaceLayer::new(limiter))
            .service(tower::service_fn(move |_request: Request<()>| {
                let mut response = Response::new(());
                if headers {
                    let map = response.headers_mut();
                    // Enough left that pacing ahead never slows the key: the
                    // cost of reading the allowance, not of waiting.
                    map.insert("x-ratelimit-remaining", "2000000000".parse().unwrap());
                    map.insert("x-ratelimit-reset", "1".parse().unwrap());
                }
                std::future::ready(Ok::<_, Infallible>(response))
            }));
        group.bench_function(name, |b| {
            b.iter(|| {
                run(&runtime, &mut service);
            });
        });
    }
    group.finish();
}

fn run<S>(runtime: &Runtime, service: &mut S)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    runtime.block_on(async {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        black_box(response);
    });
}

criterion_group!(benches, response);
criterion_main!(benches);
