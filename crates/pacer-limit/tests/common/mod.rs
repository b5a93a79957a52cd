//! Helpers shared by the integration tests: a recording service, window checks, and the
//! arrivals, paused runtime and perfect schedule of the property tests.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use pacer_limit::{Model, Quota};
use proptest::prelude::*;
use tokio::time::Instant;

/// The instants at which the inner service was called, in call order.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    sends: Arc<Mutex<Vec<Instant>>>,
}

impl Recorder {
    /// A service that records the instant of every call and answers 200 at once.
    pub(crate) fn service(
        &self,
    ) -> impl tower::Service<
        Request<()>,
        Response = Response<()>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
           + Send {
        let sends = Arc::clone(&self.sends);
        tower::service_fn(move |_req: Request<()>| {
            sends.lock().unwrap().push(Instant::now());
            async { Ok::<_, Infallible>(Response::new(())) }
        })
    }

    pub(crate) fn sends(&self) -> Vec<Instant> {
        self.sends.lock().unwrap().clone()
    }
}

#[allow(unused_imports)]
pub(crate) use pacer_testkit::max_in_any_window;

/// The smallest gap between two consecutive sends.
pub(crate) fn min_gap(sends: &[Instant]) -> Option<Duration> {
    let mut sorted = sends.to_vec();
    sorted.sort();
    sorted.windows(2).map(|w| w[1] - w[0]).min()
}

/// Whether `sends` conform to GCRA with `interval` and `burst`, as a strict server checks them.
pub(crate) fn conforms_to_gcra(sends: &[Instant], interval: Duration, burst: u32) -> bool {
    let mut sorted = sends.to_vec();
    sorted.sort();
    let tolerance = interval * (burst - 1);
    let mut tat: Option<Instant> = None;
    for &t in &sorted {
        let current = tat.unwrap_or(t);
        if t + tolerance < current {
            return false;
        }
        tat = Some(current.max(t) + interval);
    }
    true
}

/// A current-thread runtime in paused time.
pub(crate) fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Up to `most` arrival offsets in milliseconds, non-decreasing, with bursts and idle gaps of
/// up to `longest_idle_ms`.
pub(crate) fn arrivals(longest_idle_ms: u64, most: usize) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(
        prop_oneof![3 => Just(0u64), 2 => 0u64..20, 1 => 0u64..longest_idle_ms],
        1..most,
    )
    .prop_map(|gaps| {
        gaps.iter()
            .scan(0, |t, gap| {
                *t += gap;
                Some(*t)
            })
            .collect()
    })
}

/// The greedy FIFO schedule a perfect limiter produces: each request at the later of its
/// arrival, its predecessor's grant, each cap's next free slot ([`Quota::and`]) and the
/// quota's own.
pub(crate) fn reference_schedule(quota: &Quota, arrivals: &[Duration]) -> Vec<Duration> {
    let interval = quota.emission_interval();
    let mut grants: Vec<Duration> = Vec::new();
    let mut tat = Duration::ZERO;
    for &arrival in arrivals {
        let mut at = arrival.max(grants.last().copied().unwrap_or(Duration::ZERO));
        for cap in quota.caps() {
            let cap_limit = cap.limit() as usize;
            if grants.len() >= cap_limit {
                at = at.max(grants[grants.len() - cap_limit] + cap.effective_window());
            }
        }
        match quota.model() {
            Model::SlidingWindow => {
                let limit = quota.limit() as usize;
                if grants.len() >= limit {
                    at = at.max(grants[grants.len() - limit] + quota.effective_window());
                }
            }
            Model::Gcra { burst } => {
                at = at.max(tat.saturating_sub(interval * (burst.get() - 1)));
                tat = tat.max(at) + interval;
            }
            _ => unreachable!("a model the reference does not know"),
        }
        grants.push(at);
    }
    grants
}
