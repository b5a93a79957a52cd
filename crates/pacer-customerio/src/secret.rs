//! Credentials that never appear in `Debug` output, logs or errors.

use std::fmt;

/// A secret string (an API key). `Debug` prints `Secret(***)`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for building an `Authorization` header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// The credentials of one workspace.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Credentials {
    /// Track API site id (not secret, but kept with its key).
    pub site_id: Option<String>,
    /// Track API key.
    pub track_api_key: Option<Secret>,
    /// App API key (Bearer).
    pub app_api_key: Option<Secret>,
    /// Pipelines API key.
    pub pipelines_api_key: Option<Secret>,
}

impl Credentials {
    /// Track credentials.
    #[must_use]
    pub fn track(site_id: impl Into<String>, api_key: impl Into<Secret>) -> Self {
        Self {
            site_id: Some(site_id.into()),
            track_api_key: Some(api_key.into()),
            ..Self::default()
        }
    }

    /// Adds an App API key.
    #[must_use]
    pub fn with_app_key(mut self, key: impl Into<Secret>) -> Self {
        self.app_api_key = Some(key.into());
        self
    }

    /// Adds a Pipelines API key.
    #[must_use]
    pub fn with_pipelines_key(mut self, key: impl Into<Secret>) -> Self {
        self.pipelines_api_key = Some(key.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_key() {
        let credentials = Credentials::track("site", "sk_live_track")
            .with_app_key("sk_live_app")
            .with_pipelines_key("sk_live_cdp");
        let printed = format!("{credentials:?} {credentials:#?}");
        assert!(!printed.contains("sk_live"), "{printed}");
        assert!(printed.contains("site"));
    }
}
