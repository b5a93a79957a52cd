//! The client's lanes, in paused time: interactive calls go before queued bulk batches of the
//! same quota and wait at most their bound (then fail, not sent); bulk batches wait as long as
//! they must.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use pacer_customerio::{
    ApiClass, Body, Client, ClientBuilder, Credentials, Error, Event, Identifier, Operation,
    Requests,
};
use pacer_limit::{Priority, Reason};
use tokio::time::Instant;

/// Paths of the requests the in-memory server saw, with their arrival instants.
type Log = Arc<Mutex<Vec<(Instant, String)>>>;

/// A client over an in-memory server answering 200 `{}`; Track paced at 10/s exactly.
fn client() -> (Client<Full<Bytes>>, Log) {
    client_from(Client::builder().quota(
        ApiClass::Track,
        pacer_limit::Quota::per_second(10).with_margin(Duration::ZERO),
    ))
}

/// `builder`'s client over an in-memory server answering 200 `{}`, logging each request.
fn client_from(builder: ClientBuilder) -> (Client<Full<Bytes>>, Log) {
    let log = Log::default();
    let seen = Arc::clone(&log);
    let http = tower::service_fn(move |request: Request<Body>| {
        seen.lock()
            .unwrap()
            .push((Instant::now(), request.uri().path().to_owned()));
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}")))) }
    });
    let client = builder
        .base_url("http://customerio.test")
        .credentials(Credentials::track("site", "key").with_app_key("app"))
        .build(http);
    (client, log)
}

fn operation(n: usize) -> Bytes {
    let person = Identifier::Id(n.to_string());
    Operation::event(&person, Event::new("imported").id(format!("01J{n:023}")))
        .unwrap()
        .encoded()
        .clone()
}

#[test]
fn transactional_sends_and_lookups_are_interactive_the_rest_normal() {
    let requests = Requests::new(
        pacer_customerio::Endpoints::default(),
        Credentials::track("site", "key").with_app_key("app"),
    );
    let lane = |request: Request<Body>| request.extensions().get::<Priority>().copied();
    let email = serde_json::json!({"transactional_message_id": 1, "to": "a@x.com", "identifiers": {"id": "1"}});
    assert_eq!(
        lane(requests.send_email(&email).unwrap()),
        Some(Priority::Interactive)
    );
    assert_eq!(
        lane(requests.send_push(&email).unwrap()),
        Some(Priority::Interactive)
    );
    assert_eq!(
        lane(requests.customer_attributes("1").unwrap()),
        Some(Priority::Interactive)
    );
    assert_eq!(lane(requests.track("1", Event::new("e")).unwrap()), None);
}

#[tokio::test(start_paused = true)]
async fn an_interactive_call_overtakes_queued_bulk_batches() {
    let (client, log) = client();
    // An import queues 20 packed batches on the Track quota (one slot each, 100 ms apart).
    let import: Vec<_> = (0..20)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.send_packed(&[operation(n)]).await })
        })
        .collect();
    for _ in 0..1_000 {
        if client
            .queue_stats(ApiClass::Track)
            .lane(Priority::Bulk)
            .waiting
            == 19
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    let queue = client.queue_stats(ApiClass::Track);
    assert_eq!(queue.lane(Priority::Bulk).waiting, 19);
    assert_eq!(
        queue.lane(Priority::Interactive).estimated_wait,
        Duration::from_millis(100)
    );
    // A user-facing track call, marked interactive: it takes the next slot, not the 20th.
    let start = Instant::now();
    let mut request = client
        .requests()
        .track("42", Event::new("clicked"))
        .unwrap();
    request.extensions_mut().insert(Priority::Interactive);
    client.send(request).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    // The import is not refused however long it waits: every batch is delivered.
    for batch in import {
        batch.await.unwrap().unwrap();
    }
    let paths: Vec<String> = log.lock().unwrap().iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(paths.len(), 21);
    assert_eq!(paths[1], "/api/v1/customers/42/events");
}

#[tokio::test(start_paused = true)]
async fn interactive_calls_fail_fast_beyond_their_bound_and_are_not_sent() {
    let (client, log) = client();
    // 15 lookups at once on the App API (10/s): the first 10 get a slot within the 1 s bound,
    // the other 5 would wait longer and fail at once.
    let start = Instant::now();
    let lookups: Vec<_> = (0..15)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let result = client.customer_attributes(&n.to_string()).await;
                (result, Instant::now())
            })
        })
        .collect();
    let mut refused = 0;
    for lookup in lookups {
        match lookup.await.unwrap() {
            (Ok(_), _) => {}
            (Err(Error::RateLimited(limited)), at) => {
                assert_eq!(limited.reason(), Reason::MaxWait);
                assert!(limited.retry_after().unwrap() > Duration::from_secs(1));
                // At once, not after waiting.
                assert_eq!(at, start);
                refused += 1;
            }
            (Err(other), _) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(refused, 5);
    assert_eq!(log.lock().unwrap().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn the_interactive_bound_is_settable() {
    let (client, log) = client_from(Client::builder().max_wait_in(Priority::Interactive, None));
    let lookups: Vec<_> = (0..15)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.customer_attributes(&n.to_string()).await })
        })
        .collect();
    for lookup in lookups {
        lookup.await.unwrap().unwrap();
    }
    assert_eq!(log.lock().unwrap().len(), 15);
}
