//! Track API v2: `/api/v2/entity` (one operation) and `/api/v2/batch` (many, 207 on partial
//! failure), with the documented size limits.

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::{check_attributes, Endpoint, MAX_BATCH_BYTES, MAX_ID_BYTES, MAX_OPERATION_BYTES};
use crate::ledger::{Event, LedgerState};
use crate::reply::{Reply, V2Error};

pub(super) fn apply(endpoint: &Endpoint, body: &[u8], ledger: &mut LedgerState) -> Reply {
    match endpoint {
        Endpoint::Entity => {
            let outcome = if body.len() > MAX_OPERATION_BYTES {
                Err(too_large("", MAX_OPERATION_BYTES))
            } else {
                parse(body).and_then(|operation| apply_operation(&operation, ledger))
            };
            match outcome {
                Ok(()) => Reply::ok(),
                Err(error) => {
                    ledger.counts.invalid += 1;
                    Reply::v2_error(StatusCode::BAD_REQUEST, error)
                }
            }
        }
        Endpoint::Batch => batch(body, ledger),
        _ => Reply::v2_error(
            StatusCode::NOT_FOUND,
            V2Error::new("not_found", "", "no such endpoint"),
        ),
    }
}

fn batch(body: &[u8], ledger: &mut LedgerState) -> Reply {
    if body.len() > MAX_BATCH_BYTES {
        ledger.counts.invalid += 1;
        return Reply::v2_error(StatusCode::BAD_REQUEST, too_large("batch", MAX_BATCH_BYTES));
    }
    let operations = match parse(body).and_then(|object| {
        object
            .get("batch")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| V2Error::new("required", "batch", "batch must be an array"))
    }) {
        Ok(operations) => operations,
        Err(error) => {
            ledger.counts.invalid += 1;
            return Reply::v2_error(StatusCode::BAD_REQUEST, error);
        }
    };
    let mut errors = Vec::new();
    for (index, operation) in operations.iter().enumerate() {
        let outcome = if operation.to_string().len() > MAX_OPERATION_BYTES {
            Err(too_large("", MAX_OPERATION_BYTES))
        } else {
            match operation {
                Value::Object(operation) => apply_operation(operation, ledger),
                _ => Err(V2Error::new(
                    "invalid",
                    "",
                    "an operation must be an object",
                )),
            }
        };
        if let Err(error) = outcome {
            ledger.counts.invalid += 1;
            errors.push(error.to_json(Some(index)));
        }
    }
    if errors.is_empty() {
        Reply::ok()
    } else {
        Reply::json(StatusCode::MULTI_STATUS, &json!({ "errors": errors }))
    }
}

fn parse(body: &[u8]) -> Result<Map<String, Value>, V2Error> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(V2Error::new(
            "invalid",
            "",
            "the body must be a JSON object",
        )),
        Err(error) => Err(V2Error::new(
            "invalid",
            "",
            format!("invalid JSON: {error}"),
        )),
    }
}

fn too_large(field: &str, limit: usize) -> V2Error {
    V2Error::new(
        "too_large",
        field,
        format!("must be smaller than {} KB", limit / 1024),
    )
}

fn apply_operation(
    operation: &Map<String, Value>,
    ledger: &mut LedgerState,
) -> Result<(), V2Error> {
    let kind = text(operation, "type")?;
    let action = text(operation, "action")?;
    match kind {
        "person" => apply_person(action, operation, ledger),
        // Objects and deliveries are validated but not modelled in the ledger.
        "object" => {
            let identifiers = operation
                .get("identifiers")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    V2Error::new("required", "identifiers", "identifiers are required")
                })?;
            for field in ["object_type_id", "object_id"] {
                if !identifiers.get(field).is_some_and(Value::is_string) {
                    return Err(V2Error::new(
                        "required",
                        field,
                        format!("{field} is required"),
                    ));
                }
            }
            Ok(())
        }
        "delivery" if action == "event" => {
            let name = text(operation, "name")?;
            if ["opened", "converted", "delivered"].contains(&name) {
                Ok(())
            } else {
                Err(V2Error::new(
                    "invalid",
                    "name",
                    "must be opened, converted or delivered",
                ))
            }
        }
        _ => Err(V2Error::new(
            "invalid",
            "type",
            format!("unknown type or action: {kind} {action}"),
        )),
    }
}

fn apply_person(
    action: &str,
    operation: &Map<String, Value>,
    ledger: &mut LedgerState,
) -> Result<(), V2Error> {
    if action == "merge" {
        return Ok(());
    }
    // An anonymous event names no person: `anonymous_id` stands in for `identifiers`.
    let anonymous = matches!(action, "event" | "page" | "screen")
        && !operation.contains_key("identifiers")
        && operation
            .get("anonymous_id")
            .and_then(Value::as_str)
            .is_some_and(|id| !id.is_empty() && id.len() <= MAX_ID_BYTES);
    let id = if anonymous {
        String::new()
    } else {
        person_identifier(operation)?
    };
    let attributes = operation
        .get("attributes")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    check_attributes(&attributes)
        .map_err(|message| V2Error::new("invalid", "attributes", message))?;
    match action {
        "identify" => {
            let person = ledger.person(&id);
            if !person.suppressed {
                person.attributes.extend(attributes);
            }
        }
        "delete" => {
            ledger.people.remove(&id);
        }
        "event" | "page" | "screen" => {
            let name = text(operation, "name")?;
            ledger.record_event(Event {
                customer: (!anonymous).then_some(id),
                name: name.to_owned(),
                id: operation
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                kind: action.to_owned(),
                data: Value::Object(attributes),
            });
        }
        "suppress" => {
            let person = ledger.person(&id);
            person.suppressed = true;
            person.attributes.clear();
        }
        "unsuppress" => ledger.person(&id).suppressed = false,
        "add_device" | "delete_device" | "add_relationships" | "delete_relationships" => {}
        other => {
            return Err(V2Error::new(
                "invalid",
                "action",
                format!("unknown action {other}"),
            ))
        }
    }
    Ok(())
}

/// Exactly one of `id`, `email`, `phone`, `cio_id`.
fn person_identifier(operation: &Map<String, Value>) -> Result<String, V2Error> {
    let identifiers = operation
        .get("identifiers")
        .and_then(Value::as_object)
        .ok_or_else(|| V2Error::new("required", "identifiers", "identifiers are required"))?;
    let known: Vec<&str> = ["id", "email", "phone", "cio_id"]
        .into_iter()
        .filter_map(|key| identifiers.get(key).and_then(Value::as_str))
        .collect();
    match known.as_slice() {
        [id] if !id.is_empty() && id.len() <= MAX_ID_BYTES => Ok((*id).to_owned()),
        _ => Err(V2Error::new(
            "invalid",
            "identifiers",
            "exactly one of id, email, phone or cio_id is required",
        )),
    }
}

fn text<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a str, V2Error> {
    object
        .get(field)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| V2Error::new("required", field, format!("{field} is required")))
}
