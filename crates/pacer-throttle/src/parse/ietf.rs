//! The IETF `RateLimit` and `RateLimit-Policy` structured fields
//! (draft-ietf-httpapi-ratelimit-headers-10/11).
//!
//! ```text
//! RateLimit-Policy: "default";q=100;w=60, "burst";q=10;w=1
//! RateLimit: "default";r=40;t=17
//! ```

use std::time::Duration;

use http::HeaderMap;
use sfv::{BareItem, Item, List, ListEntry, Parser};

/// What the IETF fields say, for the most constrained policy the server reported on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitFields {
    /// The policy's name, when the server named it.
    pub policy: Option<String>,
    /// `r`: requests left.
    pub remaining: Option<u64>,
    /// `t`: seconds until the quota resets, clamped to `[0, max]`.
    pub reset: Option<Duration>,
    /// `q` of the matching policy: the quota.
    pub limit: Option<u64>,
    /// `w` of the matching policy: its window, clamped to `[0, max]`.
    pub window: Option<Duration>,
}

impl RateLimitFields {
    /// Whether the fields said anything usable.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Reads `RateLimit` and `RateLimit-Policy`.
///
/// A field that is not a valid structured-field list is ignored as a whole, and so is every
/// list member without its required parameter (`r` for `RateLimit`, `q` for the policy), as the
/// draft requires. When `RateLimit` names several policies, the one with the fewest requests
/// left wins (ties: the later reset).
#[must_use]
pub fn rate_limit_fields(headers: &HeaderMap, max: Duration) -> RateLimitFields {
    let seconds = |value: u64| Duration::from_secs(value).min(max);
    let current = entries(headers, "ratelimit")
        .filter_map(|(name, item)| Some((name, param(&item, "r")?, param(&item, "t"))))
        .min_by_key(|&(_, remaining, reset)| (remaining, std::cmp::Reverse(reset)));
    let policies: Vec<_> = entries(headers, "ratelimit-policy")
        .filter_map(|(name, item)| Some((name, param(&item, "q")?, param(&item, "w"))))
        .collect();
    let policy = match &current {
        Some((name, _, _)) => policies.iter().find(|(policy, _, _)| policy == name),
        // Without a RateLimit field, a single policy still tells the quota.
        None if policies.len() == 1 => policies.first(),
        None => None,
    };
    RateLimitFields {
        policy: current
            .as_ref()
            .map(|(name, _, _)| name.clone())
            .or_else(|| policy.map(|(name, _, _)| name.clone()))
            .filter(|name| !name.is_empty()),
        remaining: current.as_ref().map(|&(_, remaining, _)| remaining),
        reset: current
            .as_ref()
            .and_then(|&(_, _, reset)| reset.map(seconds)),
        limit: policy.map(|&(_, quota, _)| quota),
        window: policy.and_then(|&(_, _, window)| window.map(seconds)),
    }
}

/// The items of a structured-field list header (all its lines, joined as RFC 9651 §4.2 says),
/// with their names; nothing when the field does not parse.
fn entries(headers: &HeaderMap, name: &str) -> impl Iterator<Item = (String, Item)> {
    let lines: Option<Vec<&str>> = headers
        .get_all(name)
        .iter()
        .map(|value| value.to_str().ok())
        .collect();
    let list: List = match lines {
        Some(lines) if !lines.is_empty() => {
            Parser::new(&lines.join(", ")).parse().unwrap_or_default()
        }
        _ => List::new(),
    };
    list.into_iter().filter_map(|entry| match entry {
        ListEntry::Item(item) => {
            let name = match &item.bare_item {
                BareItem::String(name) => name.as_str().to_owned(),
                BareItem::Token(name) => name.as_str().to_owned(),
                _ => return None,
            };
            Some((name, item))
        }
        ListEntry::InnerList(_) => None,
    })
}

/// A non-negative integer parameter; anything else counts as absent.
fn param(item: &Item, key: &str) -> Option<u64> {
    let value = item
        .params
        .iter()
        .find(|(name, _)| name.as_str() == key)
        .map(|(_, value)| value)?;
    let integer: i64 = value.as_integer()?.into();
    u64::try_from(integer).ok()
}
