//! `classify_error` on real transport errors: hyper, hyper-util and reqwest failing over
//! loopback (a closed port, a server that closes mid-response, a silent server, a dropped
//! connection), each recognised by its type's predicate rather than its text.
#![cfg(feature = "hyper")]

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pacer_retry::{classify_error, RetryReason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Legacy = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn legacy() -> Legacy {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An address nothing listens on: bound, then closed.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}/")
}

/// A server that reads one request, writes `reply` and closes the connection.
async fn server_answering(reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = [0_u8; 4096];
        let _ = stream.read(&mut buffer).await;
        let _ = stream.write_all(reply).await;
        let _ = stream.shutdown().await;
    });
    format!("http://{address}/")
}

/// A server that accepts and then says nothing, holding the connection open.
async fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    format!("http://{address}/")
}

/// Wraps an error the way a service's own error type does (ReqwestService, the Customer.io
/// client): the cause is only reachable as the source.
#[derive(Debug)]
struct Wrapped(Box<dyn StdError + Send + Sync>);

impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the call failed")
    }
}

impl StdError for Wrapped {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.0.as_ref())
    }
}

fn classify_wrapped(error: impl StdError + Send + Sync + 'static) -> Option<RetryReason> {
    let direct = classify_error(&error);
    let wrapped = classify_error(&Wrapped(Box::new(error)));
    assert_eq!(direct, wrapped, "wrapping changed the verdict");
    direct
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_and_refused() {
    let uri: Uri = closed_port().parse().unwrap();
    let error = legacy().get(uri).await.unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    let reason = classify_wrapped(error);
    assert_eq!(reason, Some(RetryReason::Refused));
    assert!(reason.unwrap().request_not_processed());
}

/// A connector failing with no `io::Error` below it (a resolver's, say): `is_connect` alone
/// makes it refused.
#[tokio::test]
async fn a_connect_error_without_a_known_cause_is_refused() {
    let connector = tower::service_fn(|_: Uri| {
        std::future::ready(Err::<TokioIo<TcpStream>, _>(Box::<
            dyn StdError + Send + Sync,
        >::from("no such host")))
    });
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let error = client
        .get(Uri::from_static("http://nowhere.invalid/"))
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert_eq!(classify_wrapped(error), Some(RetryReason::Refused));
}

#[tokio::test]
async fn a_server_closing_before_answering_is_an_incomplete_message() {
    let uri: Uri = server_answering(b"").await.parse().unwrap();
    let error = legacy().get(uri).await.unwrap_err();
    let hyper = error
        .source()
        .and_then(|source| source.downcast_ref::<hyper::Error>())
        .expect("a hyper::Error below the client's");
    assert!(hyper.is_incomplete_message(), "{hyper:?}");
    let reason = classify_wrapped(error);
    assert_eq!(reason, Some(RetryReason::Connection));
    assert!(!reason.unwrap().request_not_processed());
}

#[tokio::test]
async fn a_server_closing_mid_head_is_an_incomplete_message() {
    let uri: Uri = server_answering(b"HTTP/1.1 200 OK\r\nContent-Le")
        .await
        .parse()
        .unwrap();
    let error = legacy().get(uri).await.unwrap_err();
    assert_eq!(classify_wrapped(error), Some(RetryReason::Connection));
}

/// A hyper HTTP/1 sender whose connection task was dropped before it sent anything.
async fn sender_whose_connection_was_dropped(
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let address = silent_server().await;
    let stream = TcpStream::connect(address.trim_start_matches("http://").trim_end_matches('/'))
        .await
        .unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    drop(connection);
    sender
}

/// hyper hands back a request its connection never started as canceled: nothing reached the
/// server, so even a POST may go again.
#[tokio::test]
async fn a_request_on_a_dropped_connection_is_canceled_and_refused() {
    let mut sender = sender_whose_connection_was_dropped().await;
    let request = Request::post("/").body(Empty::new()).unwrap();
    let error = sender.send_request(request).await.unwrap_err();
    assert!(error.is_canceled(), "{error:?}");
    let reason = classify_wrapped(error);
    assert_eq!(reason, Some(RetryReason::Refused));
    assert!(reason.unwrap().request_not_processed());
}

#[tokio::test]
async fn waiting_on_a_dropped_connection_is_closed() {
    let mut sender = sender_whose_connection_was_dropped().await;
    let error = sender.ready().await.unwrap_err();
    assert!(error.is_closed(), "{error:?}");
    assert_eq!(classify_wrapped(error), Some(RetryReason::Connection));
}

/// hyper's own timer: a connection that sends no request head in time (paused time, so the
/// 5 s pass at once).
#[tokio::test(start_paused = true)]
async fn hyper_timeouts_are_timeouts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let _client = TcpStream::connect(address).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let service = hyper::service::service_fn(|_request| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new()))
    });
    let error = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .serve_connection(TokioIo::new(stream), service)
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(classify_wrapped(error), Some(RetryReason::Timeout));
}

/// A per-attempt timeout around a request to a server that never answers (paused time).
#[tokio::test(start_paused = true)]
async fn an_elapsed_attempt_is_a_timeout() {
    let uri: Uri = silent_server().await.parse().unwrap();
    let error = tokio::time::timeout(Duration::from_secs(10), legacy().get(uri))
        .await
        .unwrap_err();
    assert_eq!(classify_wrapped(error), Some(RetryReason::Timeout));
}

/// The text of hyper's messages no longer decides anything: only the types do.
#[test]
fn look_alike_messages_are_not_recognised() {
    for text in [
        "connection closed before message completed",
        "operation timed out",
        "error trying to connect",
    ] {
        let error = Wrapped(text.into());
        assert_eq!(classify_error(&error), None, "{text}");
    }
}

#[cfg(feature = "reqwest")]
mod reqwest_errors {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_a_reqwest_connect_error_and_refused() {
        let error = reqwest::Client::new()
            .get(closed_port())
            .send()
            .await
            .unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        let reason = classify_wrapped(error);
        assert_eq!(reason, Some(RetryReason::Refused));
        assert!(reason.unwrap().request_not_processed());
    }

    /// reqwest's own timeout (its private `TimedOut`), against a server that never answers
    /// (paused time, so the 10 s pass at once).
    #[tokio::test(start_paused = true)]
    async fn a_reqwest_timeout_is_a_timeout() {
        let error = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .get(silent_server().await)
            .send()
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        assert_eq!(classify_wrapped(error), Some(RetryReason::Timeout));
    }

    #[tokio::test]
    async fn a_server_closing_before_answering_through_reqwest_is_a_broken_connection() {
        let error = reqwest::Client::new()
            .get(server_answering(b"").await)
            .send()
            .await
            .unwrap_err();
        assert_eq!(classify_wrapped(error), Some(RetryReason::Connection));
    }
}
