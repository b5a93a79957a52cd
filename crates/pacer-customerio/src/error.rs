//! What went wrong, typed: Customer.io's error bodies, throttling, bad input, transport.

use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use serde_json::Value;

use crate::timeouts::TimeoutPhase;

/// The most bytes of server text kept per message (and per entry field): a server's error text
/// is for a human, and a hostile one must not fill logs or memory.
const MAX_MESSAGE_BYTES: usize = 1024;
/// The most messages kept from one error body; the rest are counted.
const MAX_MESSAGES: usize = 8;
/// The most messages and entries one error's `Display` shows; the rest are counted.
const MAX_SHOWN: usize = 5;

/// `text` cut to [`MAX_MESSAGE_BYTES`] (on a character boundary), with the original length
/// noted when it was cut.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (truncated, {} bytes)", &text[..end], text.len())
}

/// One entry of a v2 batch (or entity) refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryError {
    /// The entry's index in the request's batch, when Customer.io says.
    pub batch_index: Option<usize>,
    /// `reason`, e.g. `required`.
    pub reason: String,
    /// `field`.
    pub field: String,
    /// `message`.
    pub message: String,
}

/// Customer.io's error body, from whichever of its four envelopes it came in. Bounded whatever
/// the server sends: each message and entry field at most 1 KiB (longer text is cut and notes
/// its original length), at most 8 messages (the rest counted in a last one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// Human-readable messages: `meta.error`, `meta.errors[]` or `errors[].detail`.
    pub messages: Vec<String>,
    /// Track v2 entries: `errors[].{reason, field, message, batch_index}`.
    pub entries: Vec<EntryError>,
    /// `errors[].code` when the App API gives one ("use this rather than the text").
    pub code: Option<String>,
}

impl ApiError {
    /// Reads a response body in any of Customer.io's envelopes; plain text becomes one message.
    #[must_use]
    pub fn parse(body: &[u8]) -> Self {
        let mut error = Self::parse_unbounded(body);
        if error.messages.len() > MAX_MESSAGES {
            let more = error.messages.len() - (MAX_MESSAGES - 1);
            error.messages.truncate(MAX_MESSAGES - 1);
            error.messages.push(format!("… and {more} more messages"));
        }
        error
    }

    /// Every message, each already bounded.
    fn parse_unbounded(body: &[u8]) -> Self {
        let Ok(json) = serde_json::from_slice::<Value>(body) else {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            return Self {
                messages: if text.is_empty() {
                    vec![]
                } else {
                    vec![bounded(text)]
                },
                ..Self::default()
            };
        };
        let mut error = Self::default();
        if let Some(message) = json.pointer("/meta/error").and_then(Value::as_str) {
            error.messages.push(bounded(message));
        }
        if let Some(messages) = json.pointer("/meta/errors").and_then(Value::as_array) {
            error
                .messages
                .extend(messages.iter().filter_map(Value::as_str).map(bounded));
        }
        for item in json
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = |field: &str| item.get(field).and_then(Value::as_str).map(bounded);
            if let Some(detail) = text("detail") {
                error.messages.push(detail);
                error.code = error.code.or_else(|| text("code"));
            } else if item.get("reason").is_some() || item.get("message").is_some() {
                error.entries.push(EntryError {
                    batch_index: item
                        .get("batch_index")
                        .and_then(Value::as_u64)
                        .map(|index| index as usize),
                    reason: text("reason").unwrap_or_default(),
                    field: text("field").unwrap_or_default(),
                    message: text("message").unwrap_or_default(),
                });
            }
        }
        error
    }

    /// Replaces every occurrence of each of `secrets` in the server's text with `[redacted]`:
    /// a server (or proxy) that echoes the request's credentials must not put them in an error.
    pub(crate) fn redact(&mut self, secrets: &[String]) {
        let scrub = |text: &mut String| {
            for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
                if text.contains(secret.as_str()) {
                    *text = text.replace(secret.as_str(), "[redacted]");
                }
            }
        };
        self.messages.iter_mut().for_each(scrub);
        if let Some(code) = &mut self.code {
            scrub(code);
        }
        for entry in &mut self.entries {
            scrub(&mut entry.message);
            scrub(&mut entry.reason);
            scrub(&mut entry.field);
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.entries.iter().map(|entry| match entry.batch_index {
            Some(index) => format!(
                "entry {index}: {} ({}: {})",
                entry.message, entry.field, entry.reason
            ),
            None => format!("{} ({}: {})", entry.message, entry.field, entry.reason),
        });
        let total = self.messages.len() + self.entries.len();
        // Only what is shown is formatted: a 207 may carry thousands of entries.
        let parts: Vec<String> = self
            .messages
            .iter()
            .cloned()
            .chain(entries)
            .take(MAX_SHOWN)
            .collect();
        if parts.is_empty() {
            return f.write_str("no details");
        }
        f.write_str(&parts.join("; "))?;
        if total > MAX_SHOWN {
            write!(f, "; … and {} more", total - MAX_SHOWN)?;
        }
        Ok(())
    }
}

/// The error of a Customer.io call.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Customer.io refused the request (4xx/5xx other than 429), with its error body.
    Api {
        /// The status.
        status: StatusCode,
        /// The parsed body.
        error: ApiError,
    },
    /// 401: wrong or missing credentials (the body is plain text; the key is never echoed).
    Unauthorized,
    /// Throttled (429) and not resolved by retries: the last answer was a 429, or the server
    /// (with a 429 or a 503) asked for a wait beyond what the stack accepts (a
    /// [`WaitTooLong`](pacer_throttle::WaitTooLong), from the throttle or the retry layer; the
    /// cap is [`ClientBuilder::max_server_wait`](crate::ClientBuilder::max_server_wait)).
    Throttled {
        /// The server's Retry-After, if it gave one (none means a daily quota), as the server
        /// asked (unclamped: `Retry-After: 99999999999` is 99999999999 s here).
        retry_after: Option<Duration>,
    },
    /// Throttled (429) without a `Retry-After` while a window stacked on the API class's quota
    /// (a daily quota, see [`ClientBuilder::daily_quota`](crate::ClientBuilder::daily_quota))
    /// is spent by the client's own count, and it frees later than
    /// [`ClientBuilder::max_server_wait`](crate::ClientBuilder::max_server_wait): the class is
    /// paused for that long and the request fails at once rather than retry into the quota.
    QuotaSpent {
        /// The spent window's limit.
        limit: u32,
        /// The spent window's length (a day for a daily quota).
        window: Duration,
        /// How long until the window has room again.
        frees_in: Duration,
        /// When the window has room again, on the wall clock.
        frees_at: SystemTime,
    },
    /// The payload is over a documented size limit; nothing was sent.
    PayloadTooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The input cannot make a valid request (empty, blank, `.` or `..` id, an id with control
    /// characters or over 150 bytes, missing credentials).
    InvalidInput(String),
    /// No answer, or no whole answer, within a configured bound (see
    /// [`ClientBuilder`](crate::ClientBuilder)'s `connect_timeout`, `response_timeout` and
    /// `body_timeout`): the server accepted and went silent, or stalled mid-body.
    TimedOut {
        /// What was awaited.
        phase: TimeoutPhase,
        /// The bound it exceeded.
        after: Duration,
    },
    /// The answer's body is over the size cap (see
    /// [`ClientBuilder::max_answer_bytes`](crate::ClientBuilder::max_answer_bytes)); reading
    /// stopped at the cap. Whether the request was processed is unknown.
    AnswerTooLarge {
        /// The answer's status (a success; an error status keeps its own error).
        status: StatusCode,
        /// The cap in bytes.
        limit: usize,
    },
    /// A batch answer that cannot be read (a 207 whose body is not Customer.io's
    /// `{"errors":[{"batch_index":…}]}`, or a 200 to a batch whose body is not JSON): it does not
    /// say which entries were delivered, so none may be counted delivered. Worth retrying (the
    /// batch's operations are idempotent).
    UnreadableAnswer {
        /// The status.
        status: StatusCode,
        /// Why it cannot be read (never the body itself).
        reason: String,
    },
    /// The client's own limiter refused the request, which was not sent: its turn would come
    /// later than its lane's maximum wait (by default 1 s for interactive calls, see
    /// [`ClientBuilder::max_wait_in`](crate::ClientBuilder::max_wait_in)), or the queue is
    /// full. `retry_after` says when its turn would have come.
    RateLimited(pacer_limit::RateLimited),
    /// The request did not get an answer: connection, timeout or retry layer errors. It holds
    /// the stack's error as it came, so it downcasts to its type: a
    /// [`RetriesExhausted`](pacer_retry::RetriesExhausted) after retries, the HTTP client's own
    /// error otherwise; [`pacer_retry::find`] looks through the whole chain.
    Transport(Box<dyn StdError + Send + Sync>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Api { status, error } => write!(f, "Customer.io answered {status}: {error}"),
            Error::Unauthorized => {
                f.write_str("Customer.io answered 401: check the site id and API key")
            }
            Error::Throttled {
                retry_after: Some(wait),
            } => {
                write!(f, "Customer.io throttled the request; retry after {wait:?}")?;
                let days = wait.as_secs() / 86_400;
                if days >= 1 {
                    // The server's own value, unclamped: say what it amounts to.
                    write!(f, " (about {days} days)")?;
                }
                Ok(())
            }
            Error::Throttled { retry_after: None } => f.write_str(
                "Customer.io throttled the request without a Retry-After (a daily quota?)",
            ),
            Error::QuotaSpent {
                limit,
                window,
                frees_in,
                frees_at,
            } => {
                write!(
                    f,
                    "Customer.io throttled the request without a Retry-After and the quota of \
                     {limit} per {window:?} is spent: it frees in {frees_in:?}, at {}",
                    httpdate::fmt_http_date(*frees_at)
                )
            }
            Error::PayloadTooLarge { size, limit } => {
                write!(
                    f,
                    "payload of {size} bytes is over Customer.io's {limit}-byte limit; not sent"
                )
            }
            Error::InvalidInput(why) => write!(f, "invalid input: {why}"),
            Error::TimedOut { phase, after } => {
                write!(f, "Customer.io did not {phase} within {after:?}")
            }
            Error::AnswerTooLarge { status, limit } => write!(
                f,
                "Customer.io answered {status} with a body over the {limit}-byte cap; not read"
            ),
            Error::UnreadableAnswer { status, reason } => write!(
                f,
                "Customer.io answered {status} with a body that cannot be read ({reason}); \
                 no entry counts as delivered"
            ),
            Error::RateLimited(limited) => write!(f, "not sent: {limited}"),
            Error::Transport(error) => write!(f, "request failed: {error}"),
        }
    }
}

impl Error {
    /// Whether Customer.io refused the request for what it carries (a 4xx other than 401, 403,
    /// 408 and 429, or a payload this client would not send): sending it again as it is would
    /// fail again, but a batch so refused may be split to find the operation at fault. Refused
    /// credentials, permissions, throttling and every failure to get an answer say nothing of
    /// the content.
    #[must_use]
    pub fn refuses_content(&self) -> bool {
        match self {
            Error::Api { status, .. } => {
                status.is_client_error() && ![401, 403, 408, 429].contains(&status.as_u16())
            }
            Error::PayloadTooLarge { .. } | Error::InvalidInput(_) => true,
            _ => false,
        }
    }
}

impl From<Box<dyn StdError + Send + Sync>> for Error {
    /// Maps an error of the stack (its `BoxError`) by downcasting: the client's own response
    /// timeout becomes [`Error::TimedOut`]; a server's 429 or 503 wait that is too long (a
    /// [`WaitTooLong`](pacer_throttle::WaitTooLong), from the throttle or the retry layer) becomes
    /// [`Error::Throttled`] with that wait; the limiter's refusal [`Error::RateLimited`];
    /// anything else [`Error::Transport`], unchanged.
    fn from(error: Box<dyn StdError + Send + Sync>) -> Self {
        // The limiter's own refusal, as it came (not one in a chain of attempts, some of
        // which may have been sent).
        if let Some(limited) = error.downcast_ref::<pacer_limit::RateLimited>() {
            return Error::RateLimited(*limited);
        }
        if let Some(timed_out) = pacer_retry::find::<crate::timeouts::ResponseTimedOut>(&*error) {
            return Error::TimedOut {
                phase: TimeoutPhase::ResponseHead,
                after: timed_out.after(),
            };
        }
        // A 503 asking for too long a wait is throttling too ("come back in a day"), not a
        // broken connection.
        let throttled = |status: StatusCode, wait: Duration| {
            matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
            .then_some(Error::Throttled {
                retry_after: Some(wait),
            })
        };
        // Anywhere in the chain: a classifier that retries them wraps them in RetriesExhausted.
        // One type whichever layer gave up (the retry layer's `ServerWaitTooLong` is it too).
        let mapped =
            pacer_retry::find::<pacer_throttle::WaitTooLong>(&*error).and_then(|too_long| {
                match (too_long.spent_cap(), too_long.frees_at()) {
                    (Some(cap), Some(frees_at)) => Some(Error::QuotaSpent {
                        limit: cap.limit(),
                        window: cap.window(),
                        frees_in: too_long.wait(),
                        frees_at,
                    }),
                    _ => throttled(too_long.status(), too_long.wait()),
                }
            });
        mapped.unwrap_or(Error::Transport(error))
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Transport(error) => Some(&**error),
            Error::RateLimited(limited) => Some(limited),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_four_envelopes_and_plain_text() {
        let meta_error =
            ApiError::parse(br#"{"meta":{"error":"Attachment must be base64 encoded"}}"#);
        assert_eq!(meta_error.messages, ["Attachment must be base64 encoded"]);
        let meta_errors = ApiError::parse(br#"{"meta":{"errors":["a","b"]}}"#);
        assert_eq!(meta_errors.messages, ["a", "b"]);
        let app = ApiError::parse(
            br#"{"errors":[{"detail":"rate limited to 10 requests per 1s","status":"429","code":"rate_limited"}]}"#,
        );
        assert_eq!(app.messages, ["rate limited to 10 requests per 1s"]);
        assert_eq!(app.code.as_deref(), Some("rate_limited"));
        let v2 = ApiError::parse(br#"{"errors":[{"batch_index":3,"reason":"required","field":"name","message":"name is required"}]}"#);
        assert_eq!(v2.entries[0].batch_index, Some(3));
        assert_eq!(v2.to_string(), "entry 3: name is required (name: required)");
        let text = ApiError::parse(b"Unauthorized request");
        assert_eq!(text.messages, ["Unauthorized request"]);
        assert_eq!(ApiError::parse(b"").to_string(), "no details");
    }

    #[test]
    fn server_text_is_bounded_in_size_and_count() {
        let long = "é".repeat(1000);
        let body = serde_json::json!({"meta": {"errors": vec![long.as_str(); 20]}}).to_string();
        let error = ApiError::parse(body.as_bytes());
        assert_eq!(error.messages.len(), MAX_MESSAGES);
        assert_eq!(error.messages[MAX_MESSAGES - 1], "… and 13 more messages");
        let first = &error.messages[0];
        assert!(first.len() <= MAX_MESSAGE_BYTES + 40, "{}", first.len());
        assert!(first.ends_with("… (truncated, 2000 bytes)"), "{first}");
        let shown = error.to_string();
        assert!(shown.ends_with("; … and 3 more"), "{shown}");
        assert!(
            shown.len() < MAX_SHOWN * (MAX_MESSAGE_BYTES + 40),
            "{}",
            shown.len()
        );

        let entries: Vec<_> = (0..1000)
            .map(|index| serde_json::json!({"batch_index": index, "reason": "r", "field": "f", "message": "m"}))
            .collect();
        let body = serde_json::json!({ "errors": entries }).to_string();
        let error = ApiError::parse(body.as_bytes());
        assert_eq!(
            error.entries.len(),
            1000,
            "every refused entry is kept for its index"
        );
        assert!(error.to_string().ends_with("; … and 995 more"));
    }

    #[test]
    fn echoed_secrets_are_redacted() {
        let mut error =
            ApiError::parse(br#"{"meta":{"error":"bad key: Basic c2l0ZTprZXk= (site:key)"}}"#);
        error.redact(&["Basic c2l0ZTprZXk=".to_owned(), "site:key".to_owned()]);
        assert_eq!(error.messages, ["bad key: [redacted] ([redacted])"]);
    }
}
