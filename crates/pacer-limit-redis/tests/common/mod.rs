//! Helpers shared by the integration tests: limiters sharing a test's own `redis-server`, and
//! window checks.
#![allow(dead_code)]

pub(crate) mod shared;

#[allow(unused_imports)]
pub(crate) use pacer_testkit::max_in_any_window;
