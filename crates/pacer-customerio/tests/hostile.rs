//! The client against a hostile server on loopback: every misbehaviour ends in a typed error
//! within a bound (time: small configured timeouts in real time, or the defaults in tokio's
//! paused time; memory: the cap's error, before the body is read).
#![cfg(feature = "https")]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use pacer_customerio::{
    ApiClass, Body, Client, ClientBuilder, Credentials, Error, Event, Roots, TimeoutPhase,
    DEFAULT_MAX_ANSWER_BYTES,
};
use pacer_retry::RetryLayer;
use pacer_testkit::{Behaviour, HostileServer};
use serde_json::json;
use tokio::time::Instant;

/// The Track key: an error must never show it, nor its Basic token.
const KEY: &str = "track-secret-key-0123";

fn builder(server: &HostileServer) -> ClientBuilder {
    Client::builder()
        .base_url(&server.base_url())
        .credentials(Credentials::track("site-id", KEY))
}

fn client(server: &HostileServer) -> Client {
    builder(server).build_https(Roots::Webpki).unwrap()
}

async fn track(client: &Client) -> Result<(), Error> {
    client.track("42", Event::new("signed_up")).await
}

#[tokio::test]
async fn a_silent_server_times_out_per_attempt() {
    let server = HostileServer::start(Behaviour::Silent).await;
    let client = builder(&server)
        .response_timeout(Duration::from_millis(200))
        .build_https(Roots::Webpki)
        .unwrap();
    let start = std::time::Instant::now();
    let error = track(&client).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(
            error,
            Error::TimedOut { phase: TimeoutPhase::ResponseHead, after } if after == Duration::from_millis(200)
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("did not answer within 200ms"),
        "{error}"
    );
    // Three attempts of 200 ms, and backoffs of at most 100 ms then 200 ms (full jitter).
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(server.requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_times_out_at_the_default_bound() {
    let server = HostileServer::start(Behaviour::Silent).await;
    let client = builder(&server)
        .retry(RetryLayer::new().max_retries(0))
        .build_https(Roots::Webpki)
        .unwrap();
    let start = Instant::now();
    let error = track(&client).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::TimedOut { phase: TimeoutPhase::ResponseHead, after } if after == Duration::from_secs(30)
        ),
        "{error:?}"
    );
    assert!(start.elapsed() <= Duration::from_secs(31));
}

#[tokio::test]
async fn a_stalled_body_times_out() {
    let server = HostileServer::start(Behaviour::StallBody).await;
    let client = builder(&server)
        .body_timeout(Duration::from_millis(200))
        .build_https(Roots::Webpki)
        .unwrap();
    let start = std::time::Instant::now();
    let error = track(&client).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::TimedOut { phase: TimeoutPhase::Body, after } if after == Duration::from_millis(200)
        ),
        "{error:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_connection_never_accepted_times_out() {
    // A listener with a backlog of one that never accepts: once its queue is full, the kernel
    // drops further SYNs, so a connect hangs, as with a host that drops packets.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let address = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let connect = tokio::net::TcpStream::connect(address);
        match tokio::time::timeout(Duration::from_millis(100), connect).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    let client = Client::builder()
        .base_url(&format!("http://{address}"))
        .credentials(Credentials::track("site-id", KEY))
        .connect_timeout(Duration::from_millis(200))
        .retry(RetryLayer::new().max_retries(0))
        .build_https(Roots::Webpki)
        .unwrap();
    let start = std::time::Instant::now();
    let error = track(&client).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::TimedOut { phase: TimeoutPhase::Connect, after } if after == Duration::from_millis(200)
        ),
        "{error:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(listener);
}

#[tokio::test]
async fn a_huge_success_body_is_refused_at_the_cap() {
    let bytes = 100 * 1024 * 1024;
    let server = HostileServer::start(Behaviour::HugeBody { status: 200, bytes }).await;
    let start = std::time::Instant::now();
    let error = track(&client(&server)).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::AnswerTooLarge { status, limit } if status == 200 && limit == DEFAULT_MAX_ANSWER_BYTES
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("1048576-byte cap"), "{error}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_configured_cap_applies_to_success_and_error_bodies() {
    let server = HostileServer::start(Behaviour::HugeBody {
        status: 200,
        bytes: 4096,
    })
    .await;
    let capped = builder(&server)
        .max_answer_bytes(1024)
        .build_https(Roots::Webpki)
        .unwrap();
    let error = track(&capped).await.unwrap_err();
    assert!(
        matches!(error, Error::AnswerTooLarge { limit: 1024, .. }),
        "{error:?}"
    );

    let server = HostileServer::start(Behaviour::ErrorBody {
        status: 400,
        bytes: 100 * 1024 * 1024,
    })
    .await;
    let error = track(&client(&server)).await.unwrap_err();
    let Error::Api { status, error } = error else {
        panic!("a 400 stays an API error, got {error:?}");
    };
    assert_eq!(status, 400);
    assert!(
        error.to_string().contains("over the 1048576-byte cap"),
        "{error}"
    );
}

#[tokio::test]
async fn server_text_in_errors_is_bounded() {
    let bytes = 512 * 1024;
    let server = HostileServer::start(Behaviour::ErrorBody { status: 400, bytes }).await;
    let error = track(&client(&server)).await.unwrap_err();
    let shown = error.to_string();
    assert!(shown.len() < 1200, "{} bytes shown", shown.len());
    // The message is the body less the 21 bytes of its `{"meta":{"error":"…"}}` envelope.
    let original = bytes - 21;
    assert!(
        shown.contains(&format!("(truncated, {original} bytes)")),
        "{}",
        &shown[shown.len() - 80..]
    );
}

#[tokio::test]
async fn an_absurd_retry_after_fails_at_once_with_the_servers_value() {
    let server = HostileServer::start(Behaviour::RetryAfter("99999999999".into())).await;
    let start = std::time::Instant::now();
    let error = track(&client(&server)).await.unwrap_err();
    let Error::Throttled { retry_after } = error else {
        panic!("expected Throttled, got {error:?}");
    };
    assert_eq!(retry_after, Some(Duration::from_secs(99_999_999_999)));
    assert!(
        error_text(retry_after).contains("99999999999s"),
        "{}",
        error_text(retry_after)
    );
    assert_eq!(server.requests(), 1);
    assert!(start.elapsed() < Duration::from_secs(2));

    let date = "Thu, 01 Jan 2099 00:00:00 GMT";
    let server = HostileServer::start(Behaviour::RetryAfter(date.into())).await;
    let error = track(&client(&server)).await.unwrap_err();
    let Error::Throttled {
        retry_after: Some(wait),
    } = error
    else {
        panic!("expected Throttled, got {error:?}");
    };
    // Some 70 years, not the parser's one-hour clamp.
    assert!(wait > Duration::from_secs(70 * 365 * 86_400), "{wait:?}");
    assert!(error.to_string().contains("days"), "{error}");
    assert_eq!(server.requests(), 1);
}

fn error_text(retry_after: Option<Duration>) -> String {
    Error::Throttled { retry_after }.to_string()
}

#[tokio::test(start_paused = true)]
async fn a_503_asking_for_too_long_is_throttling() {
    let http = tower::service_fn(|_request: Request<Body>| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"maintenance")));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
            .headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("86400"));
        Ok::<_, Infallible>(response)
    });
    let client = Client::builder()
        .base_url("http://customerio.test")
        .credentials(Credentials::track("site-id", KEY))
        .build(http);
    let error = client.track("42", Event::new("x")).await.unwrap_err();
    assert!(
        matches!(error, Error::Throttled { retry_after: Some(wait) } if wait == Duration::from_secs(86_400)),
        "{error:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_success_that_spends_the_quota_for_a_day_pauses_for_the_cap_and_says_so() {
    let (capture, _guard) = pacer_testkit::capture();
    let server = HostileServer::start(Behaviour::ThrottlingSuccess).await;
    let client = client(&server);
    client
        .identify("42", &serde_json::Map::new())
        .await
        .unwrap();
    let queue = client.queue_stats(ApiClass::Track);
    assert!(queue.paused);
    assert!(
        queue.estimated_wait <= Duration::from_secs(60),
        "{:?}",
        queue.estimated_wait
    );
    let warned = capture.find(tracing::Level::WARN, "beyond the cap");
    assert_eq!(warned.len(), 1, "{:?}", capture.events());
    assert!(warned[0].has("86400s"), "{:?}", warned[0]);
}

#[tokio::test]
async fn an_unreadable_207_delivers_nothing() {
    let server = HostileServer::start(Behaviour::Unreadable207).await;
    let error = client(&server)
        .batch(vec![
            json!({"type": "person", "identifiers": {"id": "1"}, "action": "identify"}),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::UnreadableAnswer { status, .. } if status == 207),
        "{error:?}"
    );
    assert!(!error.to_string().contains("Bad Gateway"), "{error}");
}

#[tokio::test]
async fn a_207_entry_without_its_index_delivers_nothing() {
    let body = r#"{"errors":[{"reason":"required","field":"name","message":"name is required"}]}"#;
    let server = HostileServer::start(Behaviour::Status(207, body.into())).await;
    let error = client(&server)
        .batch(vec![
            json!({"type": "person", "identifiers": {"id": "1"}, "action": "identify"}),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::UnreadableAnswer { status, .. } if status == 207),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_200_to_a_batch_must_be_json() {
    let server = HostileServer::start(Behaviour::Status(200, "<html>all good</html>".into())).await;
    let client = client(&server);
    let operation = json!({"type": "person", "identifiers": {"id": "1"}, "action": "identify"});
    let error = client.batch(vec![operation]).await.unwrap_err();
    assert!(
        matches!(error, Error::UnreadableAnswer { status, .. } if status == 200),
        "{error:?}"
    );
    // Outside a batch, a 200 is a 200 whatever its body.
    client
        .identify("42", &serde_json::Map::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_echoed_authorization_never_reaches_the_error() {
    let server = HostileServer::start(Behaviour::EchoAuthorization).await;
    let error = track(&client(&server)).await.unwrap_err();
    let shown = format!("{error} {error:?}");
    let token = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("site-id:{KEY}"))
    };
    assert!(!shown.contains(KEY), "{shown}");
    assert!(!shown.contains(&token), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
}

#[tokio::test]
async fn ids_a_server_would_normalise_are_never_sent() {
    let server = HostileServer::start(Behaviour::Status(200, "{}".into())).await;
    let client = client(&server);
    for id in [".", "..", "", " \t", "a\nb", "\u{7f}"] {
        let error = client
            .identify(id, &serde_json::Map::new())
            .await
            .unwrap_err();
        assert!(matches!(error, Error::InvalidInput(_)), "{id:?}: {error:?}");
    }
    assert_eq!(server.requests(), 0);
    client
        .identify("...", &serde_json::Map::new())
        .await
        .unwrap();
    assert_eq!(server.requests(), 1);
}
