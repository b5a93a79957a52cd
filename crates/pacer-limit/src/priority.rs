//! [`Priority`]: the lane a request waits in, and [`Demand`]: how many wait in each lane.

/// The lane a request waits in for a slot of its key's quota. Waiters of a key are served by
/// lane first (interactive, then normal, then bulk), then first in, first out within a lane; each
/// lane below the interactive one keeps a guaranteed minimum share of the slots granted while it
/// waits ([`LimiterBuilder::min_share`](crate::LimiterBuilder::min_share)), so nothing starves.
///
/// A request picks its lane with [`Limiter::acquire_with_priority`](crate::Limiter::acquire_with_priority),
/// or, through the [`Limited`](crate::Limited) service, with a `Priority` in its
/// `http::Extensions`. Without one it is [`Normal`](Self::Normal).
///
/// ```
/// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
/// use pacer::limit::Priority;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Priority::Interactive);
/// assert_eq!(Priority::default(), Priority::Normal);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Priority {
    /// Someone waits for the answer: a password-reset email, a lookup behind a page.
    Interactive,
    /// Everything else; the default.
    #[default]
    Normal,
    /// Work that may wait: an import, an outbox draining a backlog.
    Bulk,
}

impl Priority {
    /// Every lane, most urgent first: the order in which lanes are served.
    pub const ALL: [Self; LANES] = [Self::Interactive, Self::Normal, Self::Bulk];

    /// The lane's index in [`Self::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Self::Interactive => 0,
            Self::Normal => 1,
            Self::Bulk => 2,
        }
    }

    /// The lane's name in logs and metrics labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::Normal => "normal",
            Self::Bulk => "bulk",
        }
    }
}

/// How many lanes there are.
pub(crate) const LANES: usize = 3;

/// How many waiters of a key want a slot, per lane: what a [`SlotSource`](crate::SlotSource)
/// that fetches slots ahead is told, so that it may fetch far ahead for urgent waiters and only
/// just in time for bulk ones (a slot booked far ahead in a shared quota is a slot every other
/// process waits behind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Demand {
    waiting: [usize; LANES],
}

impl Demand {
    /// `waiting` waiters, all in `priority`'s lane.
    pub fn new(priority: Priority, waiting: usize) -> Self {
        let mut demand = Self::default();
        demand.waiting[priority.index()] = waiting;
        demand
    }

    pub(crate) fn from_lanes(waiting: [usize; LANES]) -> Self {
        Self { waiting }
    }

    /// How many want a slot, in every lane.
    #[must_use]
    pub fn total(&self) -> usize {
        self.waiting.iter().sum()
    }

    /// How many want a slot in `priority`'s lane.
    #[must_use]
    pub fn in_lane(&self, priority: Priority) -> usize {
        self.waiting[priority.index()]
    }

    /// How many want a slot in lanes above bulk: the waiters a source should not keep waiting
    /// for a round trip when it can fetch ahead.
    #[must_use]
    pub fn urgent(&self) -> usize {
        self.total() - self.in_lane(Priority::Bulk)
    }

    /// The same demand less one waiter served (the most urgent first): what is left once the
    /// head took its slot.
    pub fn less_one(mut self) -> Self {
        if let Some(lane) = self.waiting.iter_mut().find(|n| **n > 0) {
            *lane -= 1;
        }
        self
    }
}
