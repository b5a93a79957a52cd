//! An axum service whose sign-up handler hands each sign-up to the pacer outbox: the handler
//! validates and stores the `identify` and the `track` and answers at once, without waiting
//! for Customer.io; the outbox delivers them as Track v2 batches through the pacer stack (one
//! Track slot per batch of hundreds, retries that cannot double an event). The example starts
//! the mock Customer.io, serves the app on loopback, posts a few sign-ups to it, shuts the
//! outbox down (draining it), and prints what Customer.io (the mock) received.
//!
//! The outbox here is in memory: a crash loses what it holds. For durability across deploys
//! and crashes, build it with `build_redis` (features `outbox,redis`) instead of `build`.
//!
//! ```text
//! cargo run --features outbox --example axum_signup
//! ```

use std::error::Error;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use pacer::customerio::{Client, Credentials, Event, Roots};
use pacer::outbox::{EnqueueError, Outbox};
use pacer_mock::{MockConfig, MockServer};
use serde_json::{json, Value};

/// The handler: store the identify and the sign-up event in the outbox, and answer.
async fn sign_up(
    State(outbox): State<Outbox>,
    Json(body): Json<Value>,
) -> Result<StatusCode, (StatusCode, String)> {
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    let email = body["email"].as_str().unwrap_or_default().to_owned();
    let attributes = json!({ "email": email });
    let stored = async {
        outbox.identify(&id, &attributes).await?;
        outbox
            .track(
                &id,
                Event::new("signed_up").data(json!({"plan": body["plan"]})),
            )
            .await
    };
    match stored.await {
        Ok(_receipt) => Ok(StatusCode::ACCEPTED),
        // Bad input is the caller's problem, refused before anything is stored.
        Err(error @ EnqueueError::Invalid(_)) => Err((StatusCode::BAD_REQUEST, error.to_string())),
        // A full outbox (Customer.io far behind) or an unreachable store: tell the caller to
        // come back rather than lose the sign-up silently.
        Err(error) => Err((StatusCode::SERVICE_UNAVAILABLE, error.to_string())),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mock = MockServer::start(MockConfig::default()).await?;
    let customerio = Client::builder()
        .base_url(&mock.base_url())
        .credentials(Credentials::track("site-id", "track-key"))
        .build_https(Roots::Webpki)?;

    let outbox = Outbox::builder(customerio).build();

    let app = Router::new()
        .route("/signup", post(sign_up))
        .with_state(outbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!(
        "app on http://{addr}, Customer.io mock on {}",
        mock.base_url()
    );

    // Three sign-ups, the last with an empty id (refused before reaching Customer.io).
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for (id, email) in [
        ("u-1", "ada@example.com"),
        ("u-2", "grace@example.com"),
        ("", "nobody@example.com"),
    ] {
        let body = json!({"id": id, "email": email, "plan": "pro"}).to_string();
        let request = http::Request::post(format!("http://{addr}/signup"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = http.request(request).await?;
        println!("POST /signup {id:?} -> {}", response.status());
    }
    // On a deploy: stop taking sign-ups, deliver what is stored, say what could not be.
    let report = outbox.shutdown(std::time::Duration::from_secs(10)).await;
    println!(
        "outbox: {} delivered, {} dead-lettered, {} left",
        report.delivered, report.dead, report.left
    );
    println!(
        "Customer.io received {} people and {} events",
        mock.ledger().people_count(),
        mock.ledger().events().len()
    );
    Ok(())
}
