//! Answers in the envelopes Customer.io uses, one per API family.

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};

/// An answer before it becomes an HTTP response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    pub(crate) content_type: &'static str,
    pub(crate) retry_after: Option<u64>,
}

impl Reply {
    pub(crate) fn json(status: StatusCode, body: &Value) -> Self {
        Self {
            status,
            body: Bytes::from(body.to_string()),
            content_type: "application/json",
            retry_after: None,
        }
    }

    /// `200 {}`: what Track answers on success.
    pub(crate) fn ok() -> Self {
        Self::json(StatusCode::OK, &json!({}))
    }

    /// `204`, no body (form submissions).
    pub(crate) fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: Bytes::new(),
            content_type: "text/plain",
            retry_after: None,
        }
    }

    /// 401 in plain text, as the real Track API answers (not JSON).
    pub(crate) fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            body: Bytes::from_static(b"Unauthorized request"),
            content_type: "text/plain; charset=utf-8",
            retry_after: None,
        }
    }

    /// Track v1: `{"meta":{"errors":[...]}}`.
    pub(crate) fn track_error(status: StatusCode, message: impl Into<String>) -> Self {
        Self::json(status, &json!({"meta": {"errors": [message.into()]}}))
    }

    /// Transactional sends: `{"meta":{"error":"..."}}`.
    pub(crate) fn transactional_error(status: StatusCode, message: impl Into<String>) -> Self {
        Self::json(status, &json!({"meta": {"error": message.into()}}))
    }

    /// App API: `{"errors":[{"detail":"...","status":"<code>"}]}` (the status is a string).
    pub(crate) fn app_error(status: StatusCode, detail: impl Into<String>) -> Self {
        Self::json(
            status,
            &json!({"errors": [{"detail": detail.into(), "status": status.as_u16().to_string()}]}),
        )
    }

    /// Track v2: `{"errors":[{"reason","field","message"}]}`.
    pub(crate) fn v2_error(status: StatusCode, error: V2Error) -> Self {
        Self::json(status, &json!({"errors": [error.to_json(None)]}))
    }

    /// 429 with `Retry-After` in whole seconds (at least 1) and the App API's body shape.
    pub(crate) fn throttled(limit: u32, window_secs: u64, retry_after_secs: u64) -> Self {
        let mut reply = Self::app_error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("rate limited to {limit} requests per {window_secs}s"),
        );
        reply.retry_after = Some(retry_after_secs.max(1));
        reply
    }

    pub(crate) fn into_response(self) -> http::Response<http_body_util::Full<Bytes>> {
        let mut response = http::Response::new(http_body_util::Full::new(self.body));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// One Track v2 validation failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct V2Error {
    pub(crate) reason: &'static str,
    pub(crate) field: String,
    pub(crate) message: String,
}

impl V2Error {
    pub(crate) fn new(reason: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self {
            reason,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn to_json(&self, batch_index: Option<usize>) -> Value {
        let mut value =
            json!({"reason": self.reason, "field": self.field, "message": self.message});
        if let Some(index) = batch_index {
            value["batch_index"] = json!(index);
        }
        value
    }
}
