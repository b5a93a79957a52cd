//! Customer.io's answers read back: success, partial success, or a typed error; every body
//! read bounded in size and time.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pacer_throttle::parse::server_signal;
use serde_json::Value;

use crate::error::{ApiError, EntryError, Error};
use crate::timeouts::{TimeoutPhase, DEFAULT_BODY_TIMEOUT};

/// The default cap on an answer's body: 1 MiB. Customer.io's answers are a few hundred bytes
/// (a 207 lists at most one entry per operation of a 500 KB batch).
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Answer {
    /// 200, 204, or 207 for a batch with refused entries.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
    /// A 207's refused entries (with their `batch_index`); empty otherwise.
    pub rejected: Vec<EntryError>,
}

impl Answer {
    /// The body as JSON (`null` when empty).
    ///
    /// # Errors
    /// [`Error::Api`] when the body is not JSON.
    pub fn json(&self) -> Result<Value, Error> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|error| Error::Api {
            status: self.status,
            error: ApiError {
                messages: vec![format!("the answer is not JSON: {error}")],
                ..ApiError::default()
            },
        })
    }
}

/// How much of an answer [`read_with`] reads, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadLimits {
    /// The most body bytes read, success or error (default [`DEFAULT_MAX_ANSWER_BYTES`]).
    pub max_bytes: usize,
    /// The longest a whole body may take once the head arrived (default 30 s); `None` waits
    /// for ever.
    pub body_timeout: Option<Duration>,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_ANSWER_BYTES,
            body_timeout: Some(DEFAULT_BODY_TIMEOUT),
        }
    }
}

impl ReadLimits {
    /// Caps bodies at `bytes`.
    #[must_use]
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Bounds the whole body's read by `timeout` (`None`: no bound).
    #[must_use]
    pub fn body_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.body_timeout = timeout;
        self
    }
}

/// Reads `response` into an [`Answer`] or the matching [`Error`], with the default
/// [`ReadLimits`] (1 MiB, 30 s).
///
/// # Errors
/// As [`read_with`].
pub async fn read<B>(response: Response<B>) -> Result<Answer, Error>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    read_with(response, &ReadLimits::default()).await
}

/// Reads `response` into an [`Answer`] or the matching [`Error`], reading at most
/// `limits.max_bytes` of its body within `limits.body_timeout`.
///
/// # Errors
/// [`Error::Unauthorized`] on 401, [`Error::Throttled`] on 429, [`Error::Api`] on any other
/// status that is not a success (with a note instead of the text when its body is over the
/// cap), [`Error::AnswerTooLarge`] when a success's body is over the cap,
/// [`Error::TimedOut`] when the body does not end in time, [`Error::UnreadableAnswer`] for a
/// 207 that does not say which entries were refused, [`Error::Transport`] when the body cannot
/// be read.
pub async fn read_with<B>(response: Response<B>, limits: &ReadLimits) -> Result<Answer, Error>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = response.into_parts();
    let status = parts.status;
    // What the server asked for, unclamped: the message says what it sent.
    let wait = server_signal(&parts.headers, &parts.extensions)
        .and_then(|signal| signal.requested.or(signal.wait));
    let body = match collect(body, limits).await {
        Ok(body) => body,
        Err(Collect::TooLarge) => return Err(too_large(status, wait, limits.max_bytes)),
        Err(Collect::TimedOut(after)) => {
            return Err(Error::TimedOut {
                phase: TimeoutPhase::Body,
                after,
            })
        }
        Err(Collect::Failed(error)) => return Err(Error::Transport(error)),
    };
    match status {
        StatusCode::UNAUTHORIZED => Err(Error::Unauthorized),
        StatusCode::TOO_MANY_REQUESTS => Err(Error::Throttled { retry_after: wait }),
        StatusCode::MULTI_STATUS => match rejected_entries(&body) {
            Ok(rejected) => Ok(Answer {
                status,
                rejected,
                body,
            }),
            Err(reason) => {
                tracing::warn!(%status, reason, "unreadable batch answer; no entry counts as delivered");
                Err(Error::UnreadableAnswer { status, reason })
            }
        },
        status if status.is_success() => Ok(Answer {
            status,
            body,
            rejected: Vec::new(),
        }),
        status => Err(Error::Api {
            status,
            error: ApiError::parse(&body),
        }),
    }
}

/// Why a body was not read whole.
enum Collect {
    TooLarge,
    TimedOut(Duration),
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// The body, read up to the cap and within the timeout.
async fn collect<B>(body: B, limits: &ReadLimits) -> Result<Bytes, Collect>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A declared length over the cap fails before a byte is read.
    if body.size_hint().lower() > limits.max_bytes as u64 {
        return Err(Collect::TooLarge);
    }
    let collecting = Limited::new(body, limits.max_bytes).collect();
    let collected = match limits.body_timeout {
        Some(after) => tokio::time::timeout(after, collecting)
            .await
            .map_err(|_| Collect::TimedOut(after))?,
        None => collecting.await,
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(Collect::TooLarge),
        Err(error) => Err(Collect::Failed(error)),
    }
}

/// The error of an answer whose body is over the cap: a refusal keeps its meaning (its status
/// says what happened, the body only why), a success cannot be trusted.
fn too_large(status: StatusCode, wait: Option<Duration>, limit: usize) -> Error {
    tracing::warn!(%status, limit, "answer body over the cap; not read");
    match status {
        StatusCode::UNAUTHORIZED => Error::Unauthorized,
        StatusCode::TOO_MANY_REQUESTS => Error::Throttled { retry_after: wait },
        status if status.is_success() => Error::AnswerTooLarge { status, limit },
        status => Error::Api {
            status,
            error: ApiError {
                messages: vec![format!(
                    "the error body is over the {limit}-byte cap; not read"
                )],
                ..ApiError::default()
            },
        },
    }
}

/// A 207's refused entries, or why it does not say which they are: its body must be
/// `{"errors":[…]}` with at least one entry, each with its `batch_index`. Anything else would
/// count every entry delivered when some may not be.
fn rejected_entries(body: &[u8]) -> Result<Vec<EntryError>, String> {
    let json: Value = serde_json::from_slice(body).map_err(|error| format!("not JSON: {error}"))?;
    let items = json
        .get("errors")
        .and_then(Value::as_array)
        .ok_or("no \"errors\" list")?;
    if items.is_empty() {
        return Err("a 207 that refuses no entry".to_owned());
    }
    if let Some(at) = items
        .iter()
        .position(|item| item.get("batch_index").and_then(Value::as_u64).is_none())
    {
        return Err(format!("errors[{at}] has no batch_index"));
    }
    let entries = ApiError::parse(body).entries;
    if entries.len() != items.len() {
        return Err("an entry without a reason or message".to_owned());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn answer(status: u16, body: &'static str) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_207_must_say_which_entries_it_refused() {
        let read = |body| block_on(read(answer(207, body)));
        let good = read(
            r#"{"errors":[{"batch_index":2,"reason":"required","field":"name","message":"x"}]}"#,
        );
        assert_eq!(good.unwrap().rejected[0].batch_index, Some(2));
        for bad in [
            "<html>bad gateway</html>",
            "",
            "{}",
            r#"{"errors":[]}"#,
            r#"{"errors":[{"reason":"required","message":"no index"}]}"#,
            r#"{"errors":[{"batch_index":1,"reason":"r","message":"m"},{"batch_index":"2","reason":"r"}]}"#,
            r#"{"errors":[{"batch_index":1}]}"#,
        ] {
            let error = read(bad).unwrap_err();
            assert!(
                matches!(error, Error::UnreadableAnswer { status, .. } if status == 207),
                "{bad}: {error:?}"
            );
        }
    }

    /// A body that announces no length and yields `chunks` chunks of `size` bytes: what a
    /// chunked answer looks like, so the cap must stop it as it streams.
    struct Unannounced {
        chunks: usize,
        size: usize,
        yielded: usize,
    }

    impl http_body::Body for Unannounced {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            if self.yielded == self.chunks {
                return std::task::Poll::Ready(None);
            }
            self.yielded += 1;
            let chunk = Bytes::from(vec![b'x'; self.size]);
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
        }
    }

    #[test]
    fn an_unannounced_body_stops_at_the_cap() {
        let response = Response::new(Unannounced {
            chunks: 10_000,
            size: 64 * 1024,
            yielded: 0,
        });
        let limits = ReadLimits::default();
        let error = block_on(async {
            let (parts, body) = response.into_parts();
            let mut body = Box::pin(body);
            let result = {
                let response = Response::from_parts(parts, body.as_mut());
                read_with(response, &limits).await
            };
            (result, body.yielded)
        });
        assert!(
            matches!(error.0, Err(Error::AnswerTooLarge { .. })),
            "{:?}",
            error.0
        );
        // 1 MiB is 16 chunks of 64 KiB: the 17th goes over, and nothing after it is read.
        assert_eq!(error.1, 17);
    }

    #[test]
    fn bodies_over_the_cap_are_not_read() {
        let limits = ReadLimits::default().max_bytes(8);
        let read = |status, body| block_on(read_with(answer(status, body), &limits));
        assert!(matches!(
            read(200, "123456789"),
            Err(Error::AnswerTooLarge { limit: 8, .. })
        ));
        assert!(read(200, "12345678").is_ok());
        let Err(Error::Api { status, error }) = read(400, "123456789") else {
            panic!("an error status keeps its error");
        };
        assert_eq!(status, 400);
        assert!(error.to_string().contains("8-byte cap"), "{error}");
        assert!(matches!(read(401, "123456789"), Err(Error::Unauthorized)));
    }
}
