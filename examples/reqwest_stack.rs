//! The pacer stack over a `reqwest::Client`: the Customer.io client, and the layers composed by
//! hand for another API, both against the in-process mock Customer.io.
//!
//! ```text
//! cargo run --release --features reqwest --example reqwest_stack
//! ```
//!
//! 200 people identified from 20 tasks through the Customer.io client at its default Track
//! quota (100/s, evenly spaced): about 2 s, no 429. Then events to the same mock's Track API
//! from 10 tasks for 2 s through retry → rate limit → throttle composed by hand over the same
//! reqwest client, at `Quota::per_second(100)`.

use std::error::Error;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use pacer::customerio::{Client, Credentials};
use pacer::limit::{Limiter, Quota};
use pacer::reqwest::ReqwestService;
use pacer::retry::{Idempotent, RetryLayer};
use pacer::throttle::PaceLayer;
use pacer_mock::{MockConfig, MockServer};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mock = MockServer::start(MockConfig::default()).await?;
    // Your reqwest client, with whatever TLS, proxy and timeouts you configure.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // 1. The Customer.io client over reqwest.
    let client = Client::builder()
        .base_url(&mock.base_url())
        .credentials(Credentials::track("site-id", "track-key"))
        .build(ReqwestService::new(http.clone()));
    let start = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                for n in 0..10 {
                    client
                        .identify(&format!("person-{task}-{n}"), &serde_json::json!({}))
                        .await?;
                }
                Ok::<_, pacer::customerio::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "Customer.io client over reqwest: {} people in {elapsed:.1} s ({:.0}/s against 100/s), {} x 429 seen by the mock",
        mock.ledger().people_count(),
        200.0 / elapsed,
        mock.ledger().counts().throttled
    );

    // 2. The layers by hand over the same reqwest client, for any API.
    let limiter = Limiter::new(Quota::per_second(100));
    let stack = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(PaceLayer::new(limiter))
        .service(ReqwestService::new(http));
    let url = format!("{}/api/v1/customers/by-hand/events", mock.base_url());
    let throttled_before = mock.ledger().counts().throttled;
    let deadline = Instant::now() + Duration::from_secs(2);
    let senders: Vec<_> = (0..10)
        .map(|_| {
            let (stack, url) = (stack.clone(), url.clone());
            tokio::spawn(async move {
                let mut accepted = 0u32;
                while Instant::now() < deadline {
                    let mut request = Request::post(&url)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        // Basic site-id:track-key, the mock's Track credentials.
                        .header(
                            http::header::AUTHORIZATION,
                            "Basic c2l0ZS1pZDp0cmFjay1rZXk=",
                        )
                        .body(Full::new(Bytes::from_static(b"{\"name\":\"by_hand\"}")))
                        .expect("a valid request");
                    request.extensions_mut().insert(Idempotent);
                    let response = stack.clone().oneshot(request).await?;
                    accepted += u32::from(response.status() == StatusCode::OK);
                }
                Ok::<_, tower::BoxError>(accepted)
            })
        })
        .collect();
    let mut accepted = 0;
    for sender in senders {
        accepted += sender.await?.map_err(|error| error.to_string())?;
    }
    println!(
        "hand-composed stack over reqwest: {accepted} events accepted from 10 tasks sending for 2 s, {} x 429",
        mock.ledger().counts().throttled - throttled_before
    );
    Ok(())
}
