//! Where each API lives, and which limit it spends.

/// The Customer.io surfaces limited separately: the key of the default limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiClass {
    /// Track API v1 and v2.
    Track,
    /// App API reads and writes (10/s).
    App,
    /// Transactional sends (`/v1/send/*`).
    Transactional,
    /// API-triggered broadcasts (1 per 10 s).
    Broadcast,
    /// Pipelines API.
    Pipelines,
}

/// The data centre of the workspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Region {
    /// `track.customer.io`, `api.customer.io`, `cdp.customer.io`.
    #[default]
    Us,
    /// `track-eu.customer.io`, `api-eu.customer.io`, `cdp-eu.customer.io`.
    Eu,
}

/// Base URLs of the three APIs (no trailing slash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// Track API v1/v2.
    pub track: String,
    /// App API.
    pub app: String,
    /// Pipelines API.
    pub pipelines: String,
}

impl Endpoints {
    /// The real service in `region`.
    #[must_use]
    pub fn region(region: Region) -> Self {
        let (track, app, pipelines) = match region {
            Region::Us => ("track", "api", "cdp"),
            Region::Eu => ("track-eu", "api-eu", "cdp-eu"),
        };
        Self {
            track: format!("https://{track}.customer.io"),
            app: format!("https://{app}.customer.io"),
            pipelines: format!("https://{pipelines}.customer.io"),
        }
    }

    /// One base URL for all three APIs, e.g. the mock server's.
    #[must_use]
    pub fn all_at(base: &str) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        Self {
            track: base.clone(),
            app: base.clone(),
            pipelines: base,
        }
    }

    pub(crate) fn base(&self, class: ApiClass) -> &str {
        match class {
            ApiClass::Track => &self.track,
            ApiClass::Pipelines => &self.pipelines,
            ApiClass::App | ApiClass::Transactional | ApiClass::Broadcast => &self.app,
        }
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::region(Region::Us)
    }
}
