//! Which endpoint a request is for, and the handlers that apply it to the ledger.

mod app;
mod pipelines;
mod track_v1;
mod track_v2;

use http::{HeaderMap, Method};
use serde_json::{Map, Value};

use crate::config::Api;
use crate::ledger::LedgerState;
use crate::reply::Reply;

/// How an endpoint authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    /// HTTP Basic `site_id:track_api_key`.
    Track,
    /// `Bearer <app_api_key>`.
    App,
    /// HTTP Basic `<pipelines_api_key>:` (empty password).
    Pipelines,
}

/// Every endpoint the mock implements. Path parameters are percent-decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Region,
    Identify(String),
    DeleteCustomer(String),
    TrackEvent(String),
    AnonymousEvent,
    AddDevice(String),
    DeleteDevice(String, String),
    Suppress(String),
    Unsuppress(String),
    Merge,
    SubmitForm(String),
    Entity,
    Batch,
    SendEmail,
    SendPush,
    TriggerBroadcast(String),
    CustomerAttributes(String),
    PipelinesBatch,
    PipelinesCall(&'static str),
}

impl Endpoint {
    /// The endpoint of `method` on `path` (not yet decoded), or why there is none.
    pub(crate) fn of(method: &Method, path: &str) -> Result<Self, &'static str> {
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect::<Option<_>>()
            .ok_or("malformed percent-encoding in the path")?;
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let endpoint = match (method, segments.as_slice()) {
            (&Method::GET, ["api", "v1", "accounts", "region"]) => Self::Region,
            (&Method::PUT, ["api", "v1", "customers", id]) => Self::Identify(id.to_string()),
            (&Method::DELETE, ["api", "v1", "customers", id]) => {
                Self::DeleteCustomer(id.to_string())
            }
            (&Method::POST, ["api", "v1", "customers", id, "events"]) => {
                Self::TrackEvent(id.to_string())
            }
            (&Method::PUT, ["api", "v1", "customers", id, "devices"]) => {
                Self::AddDevice(id.to_string())
            }
            (&Method::DELETE, ["api", "v1", "customers", id, "devices", device]) => {
                Self::DeleteDevice(id.to_string(), device.to_string())
            }
            (&Method::POST, ["api", "v1", "customers", id, "suppress"]) => {
                Self::Suppress(id.to_string())
            }
            (&Method::POST, ["api", "v1", "customers", id, "unsuppress"]) => {
                Self::Unsuppress(id.to_string())
            }
            (&Method::POST, ["api", "v1", "events"]) => Self::AnonymousEvent,
            (&Method::POST, ["api", "v1", "merge_customers"]) => Self::Merge,
            (&Method::POST, ["api", "v1", "forms", form, "submit"]) => {
                Self::SubmitForm(form.to_string())
            }
            (&Method::POST, ["api", "v2", "entity"]) => Self::Entity,
            (&Method::POST, ["api", "v2", "batch"]) => Self::Batch,
            (&Method::POST, ["v1", "send", "email"]) => Self::SendEmail,
            (&Method::POST, ["v1", "send", "push"]) => Self::SendPush,
            (&Method::POST, ["v1", "campaigns", id, "triggers"]) => {
                Self::TriggerBroadcast(id.to_string())
            }
            (&Method::GET, ["v1", "customers", id, "attributes"]) => {
                Self::CustomerAttributes(id.to_string())
            }
            (&Method::POST, ["v1", "batch"]) => Self::PipelinesBatch,
            (&Method::POST, ["v1", kind]) => match *kind {
                "identify" => Self::PipelinesCall("identify"),
                "track" => Self::PipelinesCall("track"),
                "page" => Self::PipelinesCall("page"),
                "screen" => Self::PipelinesCall("screen"),
                "group" => Self::PipelinesCall("group"),
                "alias" => Self::PipelinesCall("alias"),
                _ => return Err("no such endpoint"),
            },
            _ => return Err("no such endpoint"),
        };
        Ok(endpoint)
    }

    /// The API class whose limit the endpoint spends.
    pub(crate) fn class(&self) -> Api {
        match self {
            Self::SendEmail | Self::SendPush => Api::Transactional,
            Self::TriggerBroadcast(_) => Api::Broadcast,
            Self::CustomerAttributes(_) => Api::App,
            Self::PipelinesBatch | Self::PipelinesCall(_) => Api::Pipelines,
            _ => Api::Track,
        }
    }

    /// How the endpoint authenticates.
    pub(crate) fn auth(&self) -> Auth {
        match self.class() {
            Api::Track => Auth::Track,
            Api::Pipelines => Auth::Pipelines,
            _ => Auth::App,
        }
    }

    /// Applies the request to the ledger and answers it.
    pub(crate) fn apply(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        ledger: &mut LedgerState,
    ) -> Reply {
        match self {
            Self::SendEmail
            | Self::SendPush
            | Self::TriggerBroadcast(_)
            | Self::CustomerAttributes(_) => app::apply(self, body, ledger),
            Self::PipelinesBatch | Self::PipelinesCall(_) => {
                pipelines::apply(self, headers, body, ledger)
            }
            Self::Entity | Self::Batch => track_v2::apply(self, body, ledger),
            _ => track_v1::apply(self, body, ledger),
        }
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            decoded.push(value);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// The body as a JSON object; an empty body is an empty object.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(error) => Err(format!("invalid JSON: {error}")),
    }
}

/// Customer.io's identifier limit: 150 bytes.
pub(crate) const MAX_ID_BYTES: usize = 150;
/// Customer.io's attribute value limit: 1000 bytes.
pub(crate) const MAX_VALUE_BYTES: usize = 1000;
/// Customer.io's limit of attributes per call.
pub(crate) const MAX_ATTRIBUTES: usize = 300;
/// One v2 operation or Pipelines call: 32 KB.
pub(crate) const MAX_OPERATION_BYTES: usize = 32 * 1024;
/// A v2 or Pipelines batch: 500 KB.
pub(crate) const MAX_BATCH_BYTES: usize = 500 * 1024;

/// Checks attribute count and value sizes; the error says which attribute.
pub(crate) fn check_attributes(attributes: &Map<String, Value>) -> Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "too many attributes: {} (at most {MAX_ATTRIBUTES})",
            attributes.len()
        ));
    }
    for (name, value) in attributes {
        let size = match value {
            Value::String(text) => text.len(),
            other => other.to_string().len(),
        };
        if size > MAX_VALUE_BYTES {
            return Err(format!(
                "value for attribute '{name}' cannot be longer than {MAX_VALUE_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_slash_stays_inside_its_segment() {
        let endpoint = Endpoint::of(
            &Method::PUT,
            "/api/v1/customers/..%2F..%2Fv1%2Fsend%2Femail",
        );
        assert_eq!(
            endpoint,
            Ok(Endpoint::Identify("../../v1/send/email".into()))
        );
        assert_eq!(
            Endpoint::of(&Method::PUT, "/api/v1/customers/jane%2Bnews%40example.com"),
            Ok(Endpoint::Identify("jane+news@example.com".into()))
        );
        assert!(Endpoint::of(&Method::PUT, "/api/v1/customers/%zz").is_err());
        assert!(Endpoint::of(&Method::POST, "/v1/send/sms-nope").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Hostile paths never panic the router: they map to an endpoint or to a clean refusal.
        #[test]
        fn any_path_is_routed_or_refused(path in r"(/[a-z0-9%./\-]{0,12}){0,7}", method in 0..4_usize) {
            let method = [Method::GET, Method::PUT, Method::POST, Method::DELETE][method].clone();
            let _ = Endpoint::of(&method, &path);
        }

        #[test]
        fn any_body_is_answered(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut ledger = LedgerState::default();
            for endpoint in [Endpoint::Identify("1".into()), Endpoint::TrackEvent("1".into()), Endpoint::Batch, Endpoint::Entity, Endpoint::SendEmail, Endpoint::PipelinesBatch, Endpoint::Merge] {
                let reply = endpoint.apply(&HeaderMap::new(), &body, &mut ledger);
                prop_assert!(reply.status.as_u16() < 500);
            }
        }
    }
}
