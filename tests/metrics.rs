//! Every metric the layers report (feature `metrics`), read back from `metrics-util`'s
//! debugging recorder: the names and labels documented in the crate docs, with the values a
//! known run must give.
#![cfg(all(feature = "metrics", feature = "retry"))]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use metrics_util::debugging::DebuggingRecorder;
use pacer::limit::{Limiter, Quota};
use pacer::retry::{Idempotent, RetryLayer};
use pacer::throttle::PaceLayer;
use pacer_testkit::metrics::readings;
use tower::{ServiceBuilder, ServiceExt};

/// A stack over a server that refuses the first request with `429, Retry-After: 1`, answers
/// every request to `/down` with 503, and accepts the rest.
async fn run_stack() {
    let limiter = Limiter::<&'static str>::builder(Quota::per_second(10)).build();
    let key = |_: &Request<()>| "track";
    let seen = Arc::new(AtomicUsize::new(0));
    let server = move |request: Request<()>| {
        let nth = seen.fetch_add(1, Ordering::SeqCst);
        let response = if nth == 0 {
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", "1")
                .body(())
                .unwrap()
        } else if request.uri().path() == "/down" {
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(())
                .unwrap()
        } else {
            Response::new(())
        };
        async move { Ok::<_, Infallible>(response) }
    };
    let stack = |retry: RetryLayer| {
        ServiceBuilder::new()
            .layer(retry)
            .layer(PaceLayer::keyed(limiter.clone(), key))
            .service_fn(server.clone())
    };
    let client = stack(RetryLayer::new().no_budget());
    let request = |path: &str| {
        let mut request = Request::post(path).body(()).unwrap();
        request.extensions_mut().insert(Idempotent);
        request
    };
    // Refused, paused 1 s, retried at the key's next slot: accepted.
    let first = client.clone().oneshot(request("/events")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // Four callers at once: three queue behind the first.
    let callers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client.clone().oneshot(request("/events"))))
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    // Always 503: three attempts, then the retry layer gives up.
    let down = client.clone().oneshot(request("/down")).await.unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    // A retry budget of nothing: the 503 is returned at once.
    let budgeted = stack(RetryLayer::new().budget(0.0, 0));
    let spent = budgeted.oneshot(request("/down")).await.unwrap();
    assert_eq!(spent.status(), StatusCode::SERVICE_UNAVAILABLE);
    // No slot free right now: refused at once.
    assert!(limiter.try_acquire(&"track").is_err());
}

#[test]
fn every_layer_reports_its_decisions() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(run_stack()));
    let metrics = readings(&snapshotter);
    let get = |name: &str| {
        *metrics
            .get(name)
            .unwrap_or_else(|| panic!("no {name} among {metrics:#?}"))
    };
    // The limiter: 1 + 1 (retry) + 4 + 3 (the 503 and its two retries) + 1 (budgeted) slots.
    assert_eq!(
        get("pacer_limit_admitted_total{key=\"track\",priority=normal}"),
        10.0
    );
    assert_eq!(
        get("pacer_limit_wait_seconds{key=\"track\",priority=normal}"),
        10.0
    );
    assert_eq!(
        get("pacer_limit_queue_length{key=\"track\",priority=normal}"),
        0.0
    );
    assert_eq!(
        get("pacer_limit_refused_total{key=\"track\",priority=normal,reason=max_wait}"),
        1.0
    );
    // The throttle layer: the 429 and the four 503s (three attempts, one budgeted), one pause,
    // a learned rate.
    assert_eq!(
        get("pacer_throttle_refusals_total{key=\"track\",status=429}"),
        1.0
    );
    assert_eq!(
        get("pacer_throttle_refusals_total{key=\"track\",status=503}"),
        4.0
    );
    assert_eq!(get("pacer_throttle_pauses_total{key=\"track\"}"), 1.0);
    let rate = get("pacer_throttle_rate_per_second{key=\"track\"}");
    assert!(rate > 0.0 && rate <= 10.0, "{rate}");
    // The retry layer: one retry of the 429, two of the 503, then it gave up.
    assert_eq!(get("pacer_retry_retries_total{reason=429}"), 1.0);
    assert_eq!(get("pacer_retry_retries_total{reason=503}"), 2.0);
    assert_eq!(
        get("pacer_retry_gave_up_total{reason=503,why=exhausted}"),
        1.0
    );
    assert_eq!(get("pacer_retry_gave_up_total{reason=503,why=budget}"), 1.0);
}

/// A server's wait beyond the cap is counted, for a success (a spent quota resetting in a day)
/// as for a refusal.
#[test]
fn a_wait_beyond_the_cap_is_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let limiter = Limiter::<&'static str>::builder(Quota::per_second(10)).build();
            let client = ServiceBuilder::new()
                .layer(PaceLayer::keyed(limiter.clone(), |_: &Request<()>| "track"))
                .service_fn(|_request: Request<()>| async {
                    let response = Response::builder()
                        .header("x-ratelimit-remaining", "0")
                        .header("x-ratelimit-reset", "86400")
                        .body(())
                        .unwrap();
                    Ok::<_, Infallible>(response)
                });
            let response = client.oneshot(Request::new(())).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        });
    });
    let metrics = readings(&snapshotter);
    assert_eq!(
        metrics.get("pacer_throttle_pauses_capped_total{key=\"track\",status=200}"),
        Some(&1.0),
        "{metrics:#?}"
    );
}

/// Redis going away is counted once per outage.
#[cfg(feature = "redis")]
#[test]
fn a_redis_fallback_is_counted() {
    use pacer::redis::{LimiterBuilderExt, RedisStore, SharedQuota};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(mut redis) = pacer_testkit::RedisServer::start() else {
        return;
    };
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let store = RedisStore::connect(&redis.url(), "metrics").await.unwrap();
            let limiter = Limiter::builder(Quota::per_second(1000))
                .shared(
                    SharedQuota::new(store, 1)
                        .timeout(Duration::from_millis(200))
                        .retry_every(Duration::from_secs(5)),
                )
                .build();
            limiter.acquire(()).await.unwrap();
            redis.kill();
            for _ in 0..3 {
                let _ = tokio::time::timeout(Duration::from_secs(3), limiter.acquire(())).await;
            }
        });
    });
    let metrics = readings(&snapshotter);
    assert_eq!(
        metrics.get("pacer_limit_redis_fallbacks_total{}"),
        Some(&1.0),
        "{metrics:#?}"
    );
}
