//! Pipelines (CDP) API: single calls and batches. Without `X-Strict-Mode: 1` an invalid or
//! oversized payload answers 200 and is dropped, as the real service does.

use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use super::{json_object, Endpoint, MAX_BATCH_BYTES, MAX_OPERATION_BYTES};
use crate::ledger::{Event, LedgerState};
use crate::reply::Reply;

pub(super) fn apply(
    endpoint: &Endpoint,
    headers: &HeaderMap,
    body: &[u8],
    ledger: &mut LedgerState,
) -> Reply {
    let strict = headers
        .get("x-strict-mode")
        .is_some_and(|value| value.as_bytes() == b"1");
    let outcome = match endpoint {
        Endpoint::PipelinesBatch => batch(body),
        Endpoint::PipelinesCall(kind) => single(kind, body).map(|call| vec![call]),
        _ => Err("no such endpoint".to_owned()),
    };
    match outcome {
        Ok(calls) => {
            for call in calls {
                record(&call, ledger);
                ledger.pipelines.push(Value::Object(call));
            }
            Reply::ok()
        }
        Err(message) => {
            ledger.counts.invalid += 1;
            if strict {
                Reply::json(
                    StatusCode::BAD_REQUEST,
                    &json!({"errors": [{"message": message}]}),
                )
            } else {
                // Permissive mode: 200, and nothing happens.
                Reply::ok()
            }
        }
    }
}

fn batch(body: &[u8]) -> Result<Vec<Map<String, Value>>, String> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(format!(
            "a batch must be smaller than {} KB",
            MAX_BATCH_BYTES / 1024
        ));
    }
    let object = json_object(body)?;
    let entries = object
        .get("batch")
        .and_then(Value::as_array)
        .ok_or("batch must be an array")?;
    entries
        .iter()
        .map(|entry| {
            let text = entry.to_string();
            let kind = entry
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            single(kind, text.as_bytes())
        })
        .collect()
}

fn single(kind: &str, body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.len() > MAX_OPERATION_BYTES {
        return Err(format!(
            "a call must be smaller than {} KB",
            MAX_OPERATION_BYTES / 1024
        ));
    }
    let mut call = json_object(body)?;
    if !["identify", "track", "page", "screen", "group", "alias"].contains(&kind) {
        return Err(format!("unknown type {kind:?}"));
    }
    let has_user = ["userId", "anonymousId"].iter().any(|field| {
        call.get(*field)
            .and_then(Value::as_str)
            .is_some_and(|id| !id.is_empty())
    });
    if !has_user {
        return Err("userId or anonymousId is required".into());
    }
    if kind == "track" && !call.get("event").is_some_and(Value::is_string) {
        return Err("event is required".into());
    }
    call.insert("type".into(), Value::from(kind));
    Ok(call)
}

/// Identify and track calls also land on people and events, so one ledger answers both APIs.
fn record(call: &Map<String, Value>, ledger: &mut LedgerState) {
    let user = call
        .get("userId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match call.get("type").and_then(Value::as_str) {
        Some("identify") => {
            if let (Some(user), Some(traits)) =
                (user, call.get("traits").and_then(Value::as_object))
            {
                ledger.person(&user).attributes.extend(traits.clone());
            }
        }
        Some("track") => {
            ledger.record_event(Event {
                customer: user,
                name: call["event"].as_str().unwrap_or_default().to_owned(),
                id: call
                    .get("messageId")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                kind: "event".into(),
                data: call.get("properties").cloned().unwrap_or(Value::Null),
            });
        }
        _ => {}
    }
}
