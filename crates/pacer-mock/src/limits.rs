//! Server-side rate limits, per workspace and API class, in the model the test picked.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Api, Limit, ServerModel};

/// The state of one limit.
#[derive(Debug)]
enum Counter {
    Sliding(VecDeque<Instant>),
    Gcra { tat: Option<Instant> },
    Fixed { window_start: Instant, count: u32 },
}

/// All limits of the server, keyed by workspace and class.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    counters: HashMap<(String, Api), Counter>,
}

impl Limits {
    /// Admits a request at `now`, or returns how long until one would be admitted.
    pub(crate) fn admit(
        &mut self,
        workspace: &str,
        class: Api,
        limit: Limit,
        now: Instant,
    ) -> Result<(), Duration> {
        let counter = self
            .counters
            .entry((workspace.to_owned(), class))
            .or_insert_with(|| match limit.model {
                ServerModel::SlidingWindow => Counter::Sliding(VecDeque::new()),
                ServerModel::Gcra => Counter::Gcra { tat: None },
                ServerModel::FixedWindow => Counter::Fixed {
                    window_start: now,
                    count: 0,
                },
            });
        let max = limit.limit.max(1);
        match counter {
            Counter::Sliding(accepted) => {
                while accepted
                    .front()
                    .is_some_and(|&at| now.duration_since(at) >= limit.window)
                {
                    accepted.pop_front();
                }
                if accepted.len() >= max as usize {
                    return Err(accepted[0] + limit.window - now);
                }
                accepted.push_back(now);
                Ok(())
            }
            Counter::Gcra { tat } => {
                let interval = limit.window / max;
                let tolerance = interval * (max - 1);
                let current = tat.unwrap_or(now).max(now);
                if current > now + tolerance {
                    return Err(current - tolerance - now);
                }
                *tat = Some(current + interval);
                Ok(())
            }
            Counter::Fixed {
                window_start,
                count,
            } => {
                while now.duration_since(*window_start) >= limit.window {
                    *window_start += limit.window;
                    *count = 0;
                }
                if *count >= max {
                    return Err(*window_start + limit.window - now);
                }
                *count += 1;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(model: ServerModel, offsets_ms: &[u64]) -> Vec<bool> {
        let start = Instant::now();
        let mut limits = Limits::default();
        let limit = Limit::new(2, Duration::from_secs(1)).model(model);
        offsets_ms
            .iter()
            .map(|&ms| {
                limits
                    .admit("w", Api::Track, limit, start + Duration::from_millis(ms))
                    .is_ok()
            })
            .collect()
    }

    #[test]
    fn each_model_counts_its_way() {
        let arrivals = [0, 10, 20, 600, 1005, 1015, 1020];
        assert_eq!(
            admitted(ServerModel::SlidingWindow, &arrivals),
            [true, true, false, false, true, true, false]
        );
        assert_eq!(
            admitted(ServerModel::Gcra, &arrivals),
            [true, true, false, true, true, false, false]
        );
        assert_eq!(
            admitted(ServerModel::FixedWindow, &arrivals),
            [true, true, false, false, true, true, false]
        );
    }
}
