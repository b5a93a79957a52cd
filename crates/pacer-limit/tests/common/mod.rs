//! Helpers shared by the integration tests: a recording service and window checks.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
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
