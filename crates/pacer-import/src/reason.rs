//! Why a record was refused or an import stopped, as text fit to print and to store once per
//! record: the whole error chain, with the credentials taken out of any server text that
//! echoed them, and at most [`MAX_REASON_BYTES`] of it.

use std::error::Error as StdError;
use std::fmt;

use base64::Engine as _;

/// The most text kept of one reason (per dead-lettered record, or a fatal error).
pub const MAX_REASON_BYTES: usize = 1024;

/// Takes credentials out of text a server sent back (a proxy or a server echoing the
/// `Authorization` header, an error page quoting the request).
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("redacts", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// Redacts Track API credentials: the key, and `site_id:key` plain and in base64 (as HTTP
    /// Basic auth sends them).
    #[must_use]
    pub fn track(site_id: &str, api_key: &str) -> Self {
        let pair = format!("{site_id}:{api_key}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
        let mut secrets: Vec<String> = [encoded, pair, api_key.to_owned()]
            .into_iter()
            .filter(|secret| secret.len() >= 4)
            .collect();
        // Longest first, so a secret inside another is not cut out of it first.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        Self { secrets }
    }

    /// `text` with every secret replaced by `[redacted]`.
    #[must_use]
    pub fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), "[redacted]")
        })
    }

    /// The error and every source below it, `: `-separated (a source whose text its parent
    /// already shows is not repeated), redacted and cut to [`MAX_REASON_BYTES`].
    #[must_use]
    pub fn describe(&self, error: &(dyn StdError + 'static)) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        cut(&self.redact(&text))
    }
}

/// `text` cut to [`MAX_REASON_BYTES`] at a character boundary, saying how long it was.
#[must_use]
pub fn cut(text: &str) -> String {
    if text.len() <= MAX_REASON_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_REASON_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut from {} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Layer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|layer| layer as _)
        }
    }

    #[test]
    fn the_whole_chain_is_told_once() {
        let error = Layer(
            "request failed: gave up after 5 attempts",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer("connection refused", None))),
            ))),
        );
        assert_eq!(
            Redactor::default().describe(&error),
            "request failed: gave up after 5 attempts: client error (Connect): connection refused"
        );
        let repeated = Layer(
            "transport: connection reset",
            Some(Box::new(Layer("connection reset", None))),
        );
        assert_eq!(
            Redactor::default().describe(&repeated),
            "transport: connection reset"
        );
    }

    #[test]
    fn credentials_echoed_by_a_server_are_redacted() {
        let redactor = Redactor::track("site-7", "sk_live_secret");
        let echoed = format!(
            "400: bad request, you sent Authorization: Basic {} and key sk_live_secret",
            base64::engine::general_purpose::STANDARD.encode("site-7:sk_live_secret")
        );
        let redacted = redactor.redact(&echoed);
        assert!(!redacted.contains("sk_live_secret"), "{redacted}");
        assert!(!redacted.contains("c2l0ZS03"), "{redacted}");
        assert_eq!(redacted.matches("[redacted]").count(), 2, "{redacted}");
        assert!(!format!("{redactor:?}").contains("secret"));
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary_with_its_length() {
        let text = "é".repeat(1000);
        let short = cut(&text);
        assert!(short.len() <= MAX_REASON_BYTES + 40, "{}", short.len());
        assert!(short.ends_with("… (cut from 2000 bytes)"), "{short}");
        assert_eq!(cut("short"), "short");
    }
}
