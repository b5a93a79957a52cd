//! App API: transactional email and push, broadcast triggers, and one read (attributes).

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::{json_object, Endpoint};
use crate::ledger::LedgerState;
use crate::reply::Reply;

/// Recipients across `to`, `cc` and `bcc`.
const MAX_RECIPIENTS: usize = 15;
/// Transactional payload without attachments: 1 MB.
const MAX_TRANSACTIONAL_BYTES: usize = 1024 * 1024;

pub(super) fn apply(endpoint: &Endpoint, body: &[u8], ledger: &mut LedgerState) -> Reply {
    match endpoint {
        Endpoint::SendEmail | Endpoint::SendPush => transactional(endpoint, body, ledger),
        Endpoint::TriggerBroadcast(id) => match json_object(body) {
            Ok(object) => {
                ledger.broadcasts.push((id.clone(), Value::Object(object)));
                Reply::json(StatusCode::OK, &json!({"id": ledger.broadcasts.len()}))
            }
            Err(message) => {
                ledger.counts.invalid += 1;
                Reply::app_error(StatusCode::UNPROCESSABLE_ENTITY, message)
            }
        },
        Endpoint::CustomerAttributes(id) => match ledger.people.get(id) {
            Some(person) => Reply::json(
                StatusCode::OK,
                &json!({"customer": {"id": id, "attributes": person.attributes}}),
            ),
            None => Reply::app_error(StatusCode::NOT_FOUND, format!("customer {id:?} not found")),
        },
        _ => Reply::app_error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

fn transactional(endpoint: &Endpoint, body: &[u8], ledger: &mut LedgerState) -> Reply {
    let checked = if body.len() > MAX_TRANSACTIONAL_BYTES {
        Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload size exceeds the limit".to_owned(),
        ))
    } else {
        json_object(body)
            .map_err(|message| (StatusCode::BAD_REQUEST, message))
            .and_then(|object| validate(endpoint, &object).map(|()| object))
    };
    match checked {
        Ok(object) => {
            ledger.transactional.push(Value::Object(object));
            let delivery_id = format!("dlv_{:08}", ledger.transactional.len());
            Reply::json(
                StatusCode::OK,
                &json!({"delivery_id": delivery_id, "queued_at": 0}),
            )
        }
        Err((status, message)) => {
            ledger.counts.invalid += 1;
            Reply::transactional_error(status, message)
        }
    }
}

fn validate(endpoint: &Endpoint, object: &Map<String, Value>) -> Result<(), (StatusCode, String)> {
    let bad = |message: &str| (StatusCode::BAD_REQUEST, message.to_owned());
    match object.get("transactional_message_id") {
        Some(Value::Number(_)) => {}
        Some(Value::String(name)) if !name.is_empty() => {}
        _ => return Err(bad("transactional_message_id is required")),
    }
    let identifiers = object
        .get("identifiers")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("identifiers are required"))?;
    let known = ["id", "email", "cio_id"]
        .iter()
        .filter(|key| identifiers.get(**key).is_some_and(Value::is_string))
        .count();
    if known != 1 || identifiers.len() != 1 {
        return Err(bad(
            "identifiers must hold exactly one of id, email or cio_id",
        ));
    }
    if *endpoint == Endpoint::SendEmail {
        let recipients: usize = ["to", "cc", "bcc"]
            .iter()
            .filter_map(|field| object.get(*field).and_then(Value::as_str))
            .map(|list| list.split(',').filter(|r| !r.trim().is_empty()).count())
            .sum();
        if recipients > MAX_RECIPIENTS {
            return Err(bad("at most 15 recipients across to, cc and bcc"));
        }
    }
    Ok(())
}
