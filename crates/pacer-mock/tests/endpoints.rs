//! The mock over real HTTP on loopback: auth, validation, envelopes, limits, faults, ledger.

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pacer_mock::{Api, Faults, Limit, MockConfig, MockServer};
use serde_json::{json, Value};

#[derive(Clone, Copy)]
enum Credentials {
    None,
    Track,
    App,
    Pipelines,
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

async fn call(
    mock: &MockServer,
    method: Method,
    path: &str,
    credentials: Credentials,
    body: &str,
) -> Answer {
    try_call(mock, method, path, credentials, body, &[])
        .await
        .expect("an answer")
}

async fn try_call(
    mock: &MockServer,
    method: Method,
    path: &str,
    credentials: Credentials,
    body: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, hyper_util::client::legacy::Error> {
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{}{path}", mock.base_url()))
        .header("content-type", "application/json");
    match credentials {
        Credentials::None => {}
        Credentials::Track => {
            request = request.header("authorization", basic("site-id", "track-key"))
        }
        Credentials::App => request = request.header("authorization", "Bearer app-key"),
        Credentials::Pipelines => request = request.header("authorization", basic("cdp-key", "")),
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Ok(Answer {
        status,
        retry_after,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

async fn mock() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

#[tokio::test]
async fn unauthorized_is_plain_text() {
    let mock = mock().await;
    for credentials in [Credentials::None, Credentials::App] {
        let answer = call(&mock, Method::PUT, "/api/v1/customers/1", credentials, "{}").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.text, "Unauthorized request");
    }
    assert_eq!(mock.ledger().people_count(), 0);
    assert_eq!(mock.ledger().counts().unauthorized, 2);
}

#[tokio::test]
async fn identify_and_track_land_in_the_ledger_and_events_deduplicate() {
    let mock = mock().await;
    let answer = call(
        &mock,
        Method::PUT,
        "/api/v1/customers/42",
        Credentials::Track,
        r#"{"email":"a@x.com","plan":"pro"}"#,
    )
    .await;
    assert_eq!((answer.status, answer.json()), (StatusCode::OK, json!({})));
    let event = r#"{"name":"signed_up","id":"01HZX3J5Q5N8K1W2E3R4T5Y6U7","data":{"source":"ads"}}"#;
    for _ in 0..3 {
        let answer = call(
            &mock,
            Method::POST,
            "/api/v1/customers/42/events",
            Credentials::Track,
            event,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let person = mock.ledger().person("42").unwrap();
    assert_eq!(person.attributes["plan"], "pro");
    let events = mock.ledger().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data, json!({"source": "ads"}));
    assert_eq!(mock.ledger().counts().duplicate_events, 2);
}

#[tokio::test]
async fn path_ids_are_percent_decoded_within_their_segment() {
    let mock = mock().await;
    let answer = call(
        &mock,
        Method::PUT,
        "/api/v1/customers/..%2F..%2Fv1%2Fsend%2Femail",
        Credentials::Track,
        "{}",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(mock.ledger().person("../../v1/send/email").is_some());
    assert!(mock.ledger().transactional().is_empty());
}

#[tokio::test]
async fn track_v1_validation_uses_the_meta_errors_envelope() {
    let mock = mock().await;
    let long = "x".repeat(1001);
    let body = json!({ "bio": long }).to_string();
    let answer = call(
        &mock,
        Method::PUT,
        "/api/v1/customers/1",
        Credentials::Track,
        &body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.json(),
        json!({"meta": {"errors": ["value for attribute 'bio' cannot be longer than 1000 bytes"]}})
    );
    let answer = call(
        &mock,
        Method::POST,
        "/api/v1/customers/1/events",
        Credentials::Track,
        r#"{"data":{}}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["meta"]["errors"][0], "name is required");
}

#[tokio::test]
async fn v2_batch_reports_partial_failures_with_207() {
    let mock = mock().await;
    let batch = json!({"batch": [
        {"type": "person", "action": "identify", "identifiers": {"id": "1"}, "attributes": {"a": 1}},
        {"type": "person", "action": "event", "identifiers": {"id": "1"}},
        {"type": "person", "action": "identify", "identifiers": {"id": "1", "email": "a@x.com"}},
        {"type": "person", "action": "event", "identifiers": {"id": "1"}, "name": "ok", "id": "E1"},
    ]});
    let answer = call(
        &mock,
        Method::POST,
        "/api/v2/batch",
        Credentials::Track,
        &batch.to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::MULTI_STATUS);
    let errors = answer.json()["errors"].as_array().unwrap().clone();
    let indexes: Vec<_> = errors
        .iter()
        .map(|e| e["batch_index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [1, 2]);
    assert_eq!(errors[0]["field"], "name");
    assert_eq!(mock.ledger().person("1").unwrap().attributes["a"], 1);
    assert_eq!(mock.ledger().events().len(), 1);
}

#[tokio::test]
async fn v2_size_limits_are_enforced() {
    let mock = mock().await;
    let big = "x".repeat(33 * 1024);
    let entity = json!({"type": "person", "action": "identify", "identifiers": {"id": "1"}, "attributes": {"a": big}});
    let answer = call(
        &mock,
        Method::POST,
        "/api/v2/entity",
        Credentials::Track,
        &entity.to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["errors"][0]["reason"], "too_large");
    let operation = json!({"type": "person", "action": "identify", "identifiers": {"id": "1"}, "attributes": {"a": "x".repeat(900)}});
    let batch = json!({"batch": vec![operation; 600]});
    let answer = call(
        &mock,
        Method::POST,
        "/api/v2/batch",
        Credentials::Track,
        &batch.to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["errors"][0]["field"], "batch");
}

#[tokio::test]
async fn transactional_errors_use_meta_error_and_sends_are_recorded() {
    let mock = mock().await;
    let answer = call(
        &mock,
        Method::POST,
        "/v1/send/email",
        Credentials::App,
        r#"{"identifiers":{"id":"1"}}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.json(),
        json!({"meta": {"error": "transactional_message_id is required"}})
    );
    let send = json!({"transactional_message_id": 44, "to": "a@x.com", "identifiers": {"id": "1"}});
    let answer = call(
        &mock,
        Method::POST,
        "/v1/send/email",
        Credentials::App,
        &send.to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.json()["delivery_id"].is_string());
    assert_eq!(mock.ledger().transactional().len(), 1);
    // The App API wants the Bearer key, not Track's Basic credentials.
    let answer = call(
        &mock,
        Method::POST,
        "/v1/send/email",
        Credentials::Track,
        &send.to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn app_reads_answer_404_in_the_errors_envelope() {
    let mock = mock().await;
    let answer = call(
        &mock,
        Method::GET,
        "/v1/customers/nobody/attributes",
        Credentials::App,
        "",
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json()["errors"][0]["status"], "404");
    call(
        &mock,
        Method::PUT,
        "/api/v1/customers/7",
        Credentials::Track,
        r#"{"plan":"pro"}"#,
    )
    .await;
    let answer = call(
        &mock,
        Method::GET,
        "/v1/customers/7/attributes",
        Credentials::App,
        "",
    )
    .await;
    assert_eq!(answer.json()["customer"]["attributes"]["plan"], "pro");
}

#[tokio::test]
async fn over_the_limit_answers_429_with_retry_after() {
    let mock = MockServer::start(MockConfig::default().limit(Api::App, Some(Limit::per_second(3))))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let answer = call(
            &mock,
            Method::GET,
            "/v1/customers/1/attributes",
            Credentials::App,
            "",
        )
        .await;
        statuses.push(answer.status.as_u16());
        last = Some(answer);
    }
    assert_eq!(statuses, [404, 404, 404, 429]);
    let last = last.unwrap();
    assert_eq!(last.retry_after.as_deref(), Some("1"));
    assert_eq!(last.json()["errors"][0]["status"], "429");
    assert_eq!(
        last.json()["errors"][0]["detail"],
        "rate limited to 3 requests per 1s"
    );
    assert_eq!(mock.ledger().counts().throttled, 1);
}

#[tokio::test]
async fn pipelines_drops_invalid_payloads_silently_unless_strict() {
    let mock = mock().await;
    let invalid = r#"{"event":"no user"}"#;
    let answer = call(
        &mock,
        Method::POST,
        "/v1/track",
        Credentials::Pipelines,
        invalid,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let strict = try_call(
        &mock,
        Method::POST,
        "/v1/track",
        Credentials::Pipelines,
        invalid,
        &[("x-strict-mode", "1")],
    )
    .await
    .unwrap();
    assert_eq!(strict.status, StatusCode::BAD_REQUEST);
    let batch = json!({"batch": [
        {"type": "identify", "userId": "9", "traits": {"plan": "pro"}},
        {"type": "track", "userId": "9", "event": "paid", "messageId": "m1"},
    ]});
    let answer = try_call(
        &mock,
        Method::POST,
        "/v1/batch",
        Credentials::Pipelines,
        &batch.to_string(),
        &[("x-strict-mode", "1")],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(mock.ledger().person("9").unwrap().attributes["plan"], "pro");
    assert_eq!(mock.ledger().pipelines().len(), 2);
    assert_eq!(mock.ledger().events().len(), 1);
}

#[tokio::test]
async fn a_connection_dropped_after_applying_loses_the_answer_not_the_write() {
    let faults = Faults {
        drop_after: 1.0,
        ..Faults::default()
    };
    let mock = MockServer::start(MockConfig::default().faults(faults))
        .await
        .unwrap();
    let outcome = try_call(
        &mock,
        Method::PUT,
        "/api/v1/customers/5",
        Credentials::Track,
        r#"{"a":1}"#,
        &[],
    )
    .await;
    assert!(outcome.is_err(), "the client sees a broken connection");
    assert!(
        mock.ledger().person("5").is_some(),
        "but the write was applied"
    );
    assert_eq!(mock.ledger().counts().dropped, 1);
}

#[tokio::test]
async fn injected_server_errors_apply_nothing() {
    let faults = Faults {
        server_errors: 1.0,
        ..Faults::default()
    };
    let mock = MockServer::start(MockConfig::default().faults(faults))
        .await
        .unwrap();
    let answer = call(
        &mock,
        Method::PUT,
        "/api/v1/customers/5",
        Credentials::Track,
        "{}",
    )
    .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(mock.ledger().person("5").is_none());
    assert_eq!(mock.ledger().counts().faults, 1);
}
