//! What a layer reports to the limiter about one response ([`Feedback`]), and what the limiter
//! answers ([`Verdict`]): see [`Limiter::observe`](crate::Limiter::observe).

use tokio::time::Instant;

use std::time::Duration;

use crate::adaptive::Adaptive;
use crate::quota::Cap;

/// How the server answered one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Accepted (a 2xx): counts toward the rate the server takes.
    Accepted,
    /// Refused for the rate ("slow down": a 429, a 503): may pause the key and adapt its rate.
    Refused,
    /// Anything else (a 404, a 500): says nothing about the rate.
    Other,
}

/// One response of a key, as a layer read it: the outcome, when its request was sent, and the
/// server's signals (a pause it asked for, the allowance left until a reset).
///
/// ```
/// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
/// use std::time::Duration;
/// use pacer::limit::{Feedback, Limiter, Outcome, Quota};
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = Limiter::new(Quota::per_second(10));
/// let sent_at = Instant::now();
/// let until = sent_at + Duration::from_secs(1);
/// let verdict = limiter.observe(&(), Feedback::new(Outcome::Refused, sent_at).pause_until(until));
/// assert_eq!(verdict.paused_until, Some(until));
/// assert!(verdict.paced);
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct Feedback {
    pub(crate) outcome: Outcome,
    pub(crate) sent_at: Instant,
    pub(crate) pause_until: Option<Instant>,
    pub(crate) allowance: Option<(u64, Instant)>,
    pub(crate) adaptive: Adaptive,
    pub(crate) max_pause: Option<Duration>,
}

impl Feedback {
    /// A response with `outcome` to a request sent at `sent_at`, without signals; adaptation
    /// as [`Adaptive::default`].
    pub fn new(outcome: Outcome, sent_at: Instant) -> Self {
        Self {
            outcome,
            sent_at,
            pause_until: None,
            allowance: None,
            adaptive: Adaptive::default(),
            max_pause: None,
        }
    }

    /// The server asked for nothing to be sent on the key before `until` (a `Retry-After`, or
    /// a spent allowance until its reset), already capped by the caller.
    pub fn pause_until(mut self, until: Instant) -> Self {
        self.pause_until = Some(until);
        self
    }

    /// The server grants `remaining` more requests until `reset_at`: the key spends them
    /// evenly by then, never faster (pacing ahead). Leave it out to ignore the allowance.
    pub fn allowance(mut self, remaining: u64, reset_at: Instant) -> Self {
        self.allowance = Some((remaining, reset_at));
        self
    }

    /// The longest pause the limiter may decide on its own for this answer: a refusal without
    /// a wait that the key's own count puts down to a spent [`Cap`] pauses the key until the
    /// cap frees, at most this long (the stack's one wait cap). Default: until the cap frees.
    pub fn max_pause(mut self, max: Duration) -> Self {
        self.max_pause = Some(max);
        self
    }

    /// How the key's rate adapts to this answer ([`Adaptive::off`]: only pauses).
    pub fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.adaptive = adaptive;
        self
    }
}

/// What the limiter did with a [`Feedback`], for the layer to act on.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
#[must_use]
pub struct Verdict {
    /// The key admits nothing before this instant (the server's pause, or pacing ahead of a
    /// low allowance); `None` when the key is not paused.
    pub paused_until: Option<Instant>,
    /// A refusal whose retry the limiter paces: the key is paused or adapts its rate, so a
    /// retry through the limiter needs no backoff of its own.
    pub paced: bool,
    /// The key's new rate in requests per second, when this answer changed it.
    pub rate_per_second: Option<f64>,
    /// A refusal without a wait that the key's own count puts down to a spent [`Cap`] (a daily
    /// quota, say): the key is paused until the cap frees, or for the
    /// [`max_pause`](Feedback::max_pause) when it frees later. Its rate is left alone.
    pub spent: Option<Spent>,
}

/// A window stacked on a quota ([`Quota::and`](crate::Quota::and)) that the limiter's own count
/// says is (about) spent, and when it frees: see [`Verdict::spent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Spent {
    /// The cap that is spent.
    pub cap: Cap,
    /// When its oldest counted send leaves the window, so that it has room again.
    pub frees_at: Instant,
}
