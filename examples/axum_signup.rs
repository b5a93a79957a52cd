//! An axum service whose sign-up handler forwards each sign-up to Customer.io through the
//! pacer stack: one shared client, paced per API class, with retries that cannot double an
//! event. The example starts the mock Customer.io, serves the app on loopback, posts a few
//! sign-ups to it, and prints what Customer.io (the mock) received.
//!
//! ```text
//! cargo run --example axum_signup
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
use pacer_mock::{MockConfig, MockServer};
use serde_json::{json, Value};

/// The handler: identify the new user and record the sign-up event.
async fn sign_up(
    State(customerio): State<Client>,
    Json(body): Json<Value>,
) -> Result<StatusCode, (StatusCode, String)> {
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    let email = body["email"].as_str().unwrap_or_default().to_owned();
    let attributes = json!({ "email": email });
    let forward = async {
        customerio
            .identify(&id, attributes.as_object().expect("an object"))
            .await?;
        customerio
            .track(
                &id,
                Event::new("signed_up").data(json!({"plan": body["plan"]})),
            )
            .await
    };
    match forward.await {
        Ok(()) => Ok(StatusCode::CREATED),
        // Bad input is the caller's problem; anything else is ours (and never echoes the key).
        Err(error @ pacer::customerio::Error::InvalidInput(_)) => {
            Err((StatusCode::BAD_REQUEST, error.to_string()))
        }
        Err(error) => Err((StatusCode::BAD_GATEWAY, error.to_string())),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mock = MockServer::start(MockConfig::default()).await?;
    let customerio = Client::builder()
        .base_url(&mock.base_url())
        .credentials(Credentials::track("site-id", "track-key"))
        .build_https(Roots::Webpki)?;

    let app = Router::new()
        .route("/signup", post(sign_up))
        .with_state(customerio);
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
    println!(
        "Customer.io received {} people and {} events",
        mock.ledger().people_count(),
        mock.ledger().events().len()
    );
    Ok(())
}
