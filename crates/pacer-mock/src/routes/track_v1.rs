//! Track API v1: people, events, devices, suppression, merges, forms.

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::{check_attributes, json_object, Endpoint, MAX_ID_BYTES};
use crate::ledger::{Event, LedgerState};
use crate::reply::Reply;

pub(super) fn apply(endpoint: &Endpoint, body: &[u8], ledger: &mut LedgerState) -> Reply {
    match run(endpoint, body, ledger) {
        Ok(reply) => reply,
        Err(message) => {
            ledger.counts.invalid += 1;
            Reply::track_error(StatusCode::BAD_REQUEST, message)
        }
    }
}

fn run(endpoint: &Endpoint, body: &[u8], ledger: &mut LedgerState) -> Result<Reply, String> {
    let object = json_object(body)?;
    match endpoint {
        Endpoint::Region => Ok(Reply::json(
            StatusCode::OK,
            &json!({"url": "https://track.customer.io", "region": "us", "environment_id": 1}),
        )),
        Endpoint::Identify(id) => identify(id, object, ledger),
        Endpoint::DeleteCustomer(id) => {
            check_id(id)?;
            ledger.people.remove(id);
            Ok(Reply::ok())
        }
        Endpoint::TrackEvent(id) => {
            check_id(id)?;
            ledger.record_event(event(Some(id.clone()), &object)?);
            Ok(Reply::ok())
        }
        Endpoint::AnonymousEvent => {
            ledger.record_event(event(None, &object)?);
            Ok(Reply::ok())
        }
        Endpoint::AddDevice(id) => add_device(id, &object, ledger),
        Endpoint::DeleteDevice(id, device) => {
            check_id(id)?;
            if let Some(person) = ledger.people.get_mut(id) {
                person.devices.remove(device);
            }
            Ok(Reply::ok())
        }
        Endpoint::Suppress(id) => {
            check_id(id)?;
            let person = ledger.person(id);
            person.suppressed = true;
            person.attributes.clear();
            Ok(Reply::ok())
        }
        Endpoint::Unsuppress(id) => {
            check_id(id)?;
            ledger.person(id).suppressed = false;
            Ok(Reply::ok())
        }
        Endpoint::Merge => merge(&object, ledger),
        Endpoint::SubmitForm(_) => submit_form(&object),
        _ => Err("not a Track v1 endpoint".into()),
    }
}

/// `PUT /api/v1/customers/{id}`: adds or updates the person's attributes.
fn identify(
    id: &str,
    attributes: Map<String, Value>,
    ledger: &mut LedgerState,
) -> Result<Reply, String> {
    check_id(id)?;
    check_attributes(&attributes)?;
    let person = ledger.person(id);
    if person.suppressed {
        // Suppressed identifiers are not re-added; Customer.io answers 200 regardless.
        return Ok(Reply::ok());
    }
    person.attributes.extend(attributes);
    Ok(Reply::ok())
}

/// `PUT /api/v1/customers/{id}/devices`: `device.id` is the token.
fn add_device(
    id: &str,
    object: &Map<String, Value>,
    ledger: &mut LedgerState,
) -> Result<Reply, String> {
    check_id(id)?;
    let token = object
        .get("device")
        .and_then(|device| device.get("id"))
        .and_then(Value::as_str)
        .filter(|token| !token.is_empty())
        .ok_or("device.id is required")?;
    ledger.person(id).devices.insert(token.to_owned());
    Ok(Reply::ok())
}

/// `POST /api/v1/merge_customers`: the secondary's attributes (where the primary has none) and
/// devices move to the primary, which must exist; a missing secondary is a no-op.
fn merge(object: &Map<String, Value>, ledger: &mut LedgerState) -> Result<Reply, String> {
    let primary = single_identifier(object, "primary")?;
    let secondary = single_identifier(object, "secondary")?;
    let Some(merged) = ledger.people.remove(&secondary) else {
        return Ok(Reply::ok());
    };
    let person = ledger
        .people
        .get_mut(&primary)
        .ok_or("the primary person must exist")?;
    for (name, value) in merged.attributes {
        person.attributes.entry(name).or_insert(value);
    }
    person.devices.extend(merged.devices);
    Ok(Reply::ok())
}

/// `POST /api/v1/forms/{id}/submit`: `data` holds exactly one of `email` or `id`, all strings.
fn submit_form(object: &Map<String, Value>) -> Result<Reply, String> {
    let data = object
        .get("data")
        .and_then(Value::as_object)
        .ok_or("data is required")?;
    let keys = ["email", "id"]
        .iter()
        .filter(|key| data.contains_key(**key))
        .count();
    if keys != 1 || !data.values().all(Value::is_string) {
        return Err("data must hold exactly one of email or id, and only strings".into());
    }
    Ok(Reply::no_content())
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("an identifier is required".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "identifier cannot be longer than {MAX_ID_BYTES} bytes"
        ));
    }
    Ok(())
}

/// A v1 event body: `name` required; `id`, `type`, `timestamp`, `data` optional.
fn event(customer: Option<String>, object: &Map<String, Value>) -> Result<Event, String> {
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .ok_or("name is required")?;
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("event");
    if !["event", "page", "screen"].contains(&kind) {
        return Err(format!("type must be event, page or screen, not {kind:?}"));
    }
    if let Some(timestamp) = object.get("timestamp") {
        if !timestamp.is_u64() {
            return Err("timestamp must be unix seconds".into());
        }
    }
    Ok(Event {
        customer,
        name: name.to_owned(),
        id: object.get("id").and_then(Value::as_str).map(str::to_owned),
        kind: kind.to_owned(),
        data: object.get("data").cloned().unwrap_or(Value::Null),
    })
}

/// `{"primary": {"id": "..."}}`: exactly one key, whose value names the person.
fn single_identifier(object: &Map<String, Value>, field: &str) -> Result<String, String> {
    let identifiers = object
        .get(field)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{field} is required"))?;
    match identifiers.iter().next() {
        Some((_, Value::String(id))) if identifiers.len() == 1 => Ok(id.clone()),
        _ => Err(format!("{field} must hold exactly one identifier")),
    }
}
