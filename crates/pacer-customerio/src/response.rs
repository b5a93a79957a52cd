//! Customer.io's answers read back: success, partial success, or a typed error.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use pacer_throttle::parse::server_wait;
use serde_json::Value;

use crate::error::{ApiError, EntryError, Error};

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

/// Reads `response` into an [`Answer`] or the matching [`Error`].
///
/// # Errors
/// [`Error::Unauthorized`] on 401, [`Error::Throttled`] on 429, [`Error::Api`] on any other
/// status that is not a success, [`Error::Transport`] when the body cannot be read.
pub async fn read<B>(response: Response<B>) -> Result<Answer, Error>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = response.into_parts();
    let wait = server_wait(&parts.headers, &parts.extensions);
    let body = body
        .collect()
        .await
        .map_err(|error| Error::Transport(error.into()))?
        .to_bytes();
    match parts.status {
        StatusCode::UNAUTHORIZED => Err(Error::Unauthorized),
        StatusCode::TOO_MANY_REQUESTS => Err(Error::Throttled { retry_after: wait }),
        StatusCode::MULTI_STATUS => Ok(Answer {
            status: parts.status,
            rejected: ApiError::parse(&body).entries,
            body,
        }),
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
