//! One key's waiters in their lanes: who is served next (by lane, then first in, first out,
//! with a minimum share for the lower lanes), and where each waiter stands.

use std::collections::VecDeque;
use std::task::Waker;

use crate::priority::{Demand, Priority, LANES};

/// A waiter's place in its lane. Ids grow monotonically, so each lane stays sorted by id and a
/// waiter finds itself by binary search.
#[derive(Debug)]
struct Waiter {
    id: u64,
    waker: Option<Waker>,
}

/// Where a queued waiter stands: which lane, and its index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) lane: Priority,
    pub(crate) index: usize,
}

/// The waiters of one key, per lane.
///
/// The lane served next is the most urgent one with waiters, unless a lower lane is owed its
/// minimum share: each lane below the top earns `min_share` of a slot for every slot granted
/// while it has waiters, pays one for each slot it takes, and is served by the grant that
/// completes a whole one. So a lane with waiters gets at least `min_share` of the slots granted
/// while it waits, whatever the lanes above it do; its earnings are forgotten when it empties,
/// so an idle lane banks nothing for a later burst.
#[derive(Debug)]
pub(crate) struct Lanes {
    lanes: [VecDeque<Waiter>; LANES],
    /// In millionths of a slot: whole numbers, so that ten tenths make exactly one.
    earned: [u64; LANES],
    /// In millionths of a slot.
    min_share: u64,
}

/// One slot, in the millionths `earned` counts.
const SLOT: u64 = 1_000_000;

impl Lanes {
    /// `min_share` is a fraction of a slot (0 to 0.5).
    pub(crate) fn new(min_share: f64) -> Self {
        // In range by construction (the builder clamps it); rounded to a millionth.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let min_share = (min_share.clamp(0.0, 1.0) * SLOT as f64).round() as u64;
        Self {
            lanes: Default::default(),
            earned: [0; LANES],
            min_share,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty)
    }

    pub(crate) fn len_in(&self, lane: Priority) -> usize {
        self.lanes[lane.index()].len()
    }

    /// How many wait in each lane.
    pub(crate) fn demand(&self) -> Demand {
        Demand::from_lanes(self.lanes.each_ref().map(VecDeque::len))
    }

    /// The lane whose first waiter is served next, if anyone waits.
    pub(crate) fn head_lane(&self) -> Option<Priority> {
        // A lower lane owed its share goes first (the more urgent of two owed lanes first).
        let owed = Priority::ALL[1..]
            .iter()
            .copied()
            .find(|lane| !self.lanes[lane.index()].is_empty() && self.is_owed(*lane));
        owed.or_else(|| {
            Priority::ALL
                .into_iter()
                .find(|lane| !self.lanes[lane.index()].is_empty())
        })
    }

    /// Whether `lane` has earned the next slot: the grant would complete a whole one (so a
    /// share of a tenth is every tenth slot, not every eleventh).
    fn is_owed(&self, lane: Priority) -> bool {
        lane.index() > 0 && self.min_share > 0 && self.earned[lane.index()] + self.min_share >= SLOT
    }

    /// Whether a newcomer in `lane` would be served before everybody queued.
    pub(crate) fn would_lead(&self, lane: Priority) -> bool {
        match self.head_lane() {
            None => true,
            Some(head) => head.index() > lane.index() && !self.is_owed(head),
        }
    }

    /// Queues waiter `id` in `lane`. A head it displaces (it is more urgent) is woken, to drop
    /// its timer: the newcomer arms its own, and the key keeps one.
    pub(crate) fn push(&mut self, lane: Priority, id: u64, waker: Waker) {
        let before = self.head();
        let queue = &mut self.lanes[lane.index()];
        debug_assert!(queue.back().is_none_or(|w| w.id < id));
        queue.push_back(Waiter {
            id,
            waker: Some(waker),
        });
        if let Some((lane, id)) = before.filter(|_| self.head() != before) {
            let displaced = self
                .place(lane, id)
                .and_then(|place| self.lanes[lane.index()][place.index].waker.take());
            if let Some(waker) = displaced {
                waker.wake();
            }
        }
    }

    /// Where waiter `id` of `lane` stands, if it is queued.
    pub(crate) fn place(&self, lane: Priority, id: u64) -> Option<Place> {
        let index = self.lanes[lane.index()]
            .binary_search_by_key(&id, |w| w.id)
            .ok()?;
        Some(Place { lane, index })
    }

    /// How many are served before the waiter at `place` (0: it is the head), as far as the
    /// queue knows now: everybody ahead in its lane and in the lanes above, but never more than
    /// its minimum share allows. Newcomers in a lane above may still push it back, within that
    /// bound.
    pub(crate) fn ahead_of(&self, place: Place) -> usize {
        if self.head_lane() == Some(place.lane) && place.index == 0 {
            return 0;
        }
        let above: usize = self.lanes[..place.lane.index()]
            .iter()
            .map(VecDeque::len)
            .sum();
        let by_lane = (above + place.index).max(1);
        self.share_bound(place.lane, place.index)
            .map_or(by_lane, |bound| by_lane.min(bound))
    }

    /// How many are served before a newcomer in `lane`.
    pub(crate) fn ahead_of_newcomer(&self, lane: Priority) -> usize {
        if self.would_lead(lane) {
            return 0;
        }
        let index = self.len_in(lane);
        let above: usize = self.lanes[..=lane.index()].iter().map(VecDeque::len).sum();
        let by_lane = above.max(1);
        self.share_bound(lane, index)
            .map_or(by_lane, |bound| by_lane.min(bound))
    }

    /// About the most slots granted before the `index`-th waiter of a lower `lane` has its
    /// turn, by its minimum share alone; `None` for the top lane or without a share.
    fn share_bound(&self, lane: Priority, index: usize) -> Option<usize> {
        if lane.index() == 0 || self.min_share == 0 {
            return None;
        }
        // It takes its turn once it earned `index + 1` slots, earning `min_share` per grant.
        let owed = (index as u64 + 1)
            .saturating_mul(SLOT)
            .saturating_sub(self.earned[lane.index()]);
        let grants = owed.div_ceil(self.min_share);
        Some(usize::try_from(grants).unwrap_or(usize::MAX).max(1))
    }

    /// Stores the waker to use when this waiter's turn may have come.
    pub(crate) fn set_waker(&mut self, place: Place, waker: &Waker) {
        let slot = &mut self.lanes[place.lane.index()][place.index].waker;
        match slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// The waiter served next: its lane and id.
    fn head(&self) -> Option<(Priority, u64)> {
        let lane = self.head_lane()?;
        Some((lane, self.lanes[lane.index()].front()?.id))
    }

    /// Runs `change`, then wakes the head if it is another waiter than before, so that it arms
    /// the key's timer: a head displaced by a lane that earned its turn, granted, or cancelled
    /// never strands the queue.
    fn rehead(&mut self, change: impl FnOnce(&mut Self)) {
        let before = self.head();
        change(self);
        if self.head() != before {
            self.wake_head();
        }
    }

    /// The head at `place` took a slot: it leaves the queue (see [`Self::count_grant`]).
    pub(crate) fn grant(&mut self, place: Place) {
        self.rehead(|lanes| {
            lanes.earn(place.lane);
            lanes.take_out(place);
        });
    }

    /// A waiter of `served`'s lane took a slot (a newcomer that led the queue): the lanes that
    /// wait earn their share, the served one pays for it.
    pub(crate) fn count_grant(&mut self, served: Priority) {
        self.rehead(|lanes| lanes.earn(served));
    }

    /// Removes the waiter at `place` (refused or cancelled).
    pub(crate) fn remove(&mut self, place: Place) {
        self.rehead(|lanes| lanes.take_out(place));
    }

    fn earn(&mut self, served: Priority) {
        for lane in 1..LANES {
            if !self.lanes[lane].is_empty() {
                self.earned[lane] += self.min_share;
            }
        }
        // Never below zero: a lane served in its own right banks no debt either.
        let served = served.index();
        self.earned[served] = self.earned[served].saturating_sub(SLOT);
    }

    /// How many wait in `lane` and the lanes above it: what its queue bound counts.
    pub(crate) fn len_up_to(&self, lane: Priority) -> usize {
        self.lanes[..=lane.index()].iter().map(VecDeque::len).sum()
    }

    fn take_out(&mut self, place: Place) {
        let queue = &mut self.lanes[place.lane.index()];
        queue.remove(place.index);
        if queue.is_empty() {
            self.earned[place.lane.index()] = 0;
        }
    }

    /// Wakes the waiter served next, so that it asks for its slot (and arms the key's timer).
    pub(crate) fn wake_head(&mut self) {
        let Some(lane) = self.head_lane() else {
            return;
        };
        if let Some(waker) = self.lanes[lane.index()]
            .front_mut()
            .and_then(|w| w.waker.take())
        {
            waker.wake();
        }
    }

    /// Wakes every waiter so each re-checks its maximum wait.
    pub(crate) fn wake_all(&mut self) {
        for waiter in self.lanes.iter_mut().flatten() {
            if let Some(waker) = waiter.waker.take() {
                waker.wake();
            }
        }
    }
}
