//! How many bytes of input the reader thread may have read ahead of the pipeline. The channel
//! between them bounds the number of records; this bounds their size, so records near the
//! 1 MiB line cap cannot pile up to gigabytes ahead of the sending.

use std::sync::{Condvar, Mutex};

/// Input bytes read but not yet packed, at most [`ReadBudget::new`]'s cap (a single record
/// larger than the cap still passes, alone).
#[derive(Debug)]
pub(crate) struct ReadBudget {
    state: Mutex<State>,
    freed: Condvar,
    cap: u64,
}

#[derive(Debug, Default)]
struct State {
    used: u64,
    closed: bool,
}

impl ReadBudget {
    pub(crate) fn new(cap: u64) -> Self {
        Self {
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            cap,
        }
    }

    /// Takes `bytes`, blocking the reader thread while the pipeline holds too many. Returns at
    /// once once [`close`](Self::close)d.
    pub(crate) fn take(&self, bytes: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !state.closed && state.used > 0 && state.used + bytes > self.cap {
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.used += bytes;
    }

    /// Gives back `bytes` the pipeline has packed.
    pub(crate) fn give(&self, bytes: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.used = state.used.saturating_sub(bytes);
        self.freed.notify_one();
    }

    /// Lets the reader go, whatever it holds: the pipeline stopped taking.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.closed = true;
        self.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// The reader waits for room, gets it when bytes are given back, and is let go on close.
    #[test]
    fn takes_wait_for_room_and_close_lets_the_reader_go() {
        let budget = Arc::new(ReadBudget::new(100));
        budget.take(60);
        let passed = Arc::new(AtomicBool::new(false));
        let reader = {
            let (budget, passed) = (Arc::clone(&budget), Arc::clone(&passed));
            std::thread::spawn(move || {
                budget.take(50);
                passed.store(true, Ordering::SeqCst);
                budget.take(1000);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!passed.load(Ordering::SeqCst), "took past the cap");
        budget.give(60);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !passed.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "room was given back");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Now it waits to take 1000 with 50 held; closing lets it go.
        budget.close();
        reader.join().unwrap();
    }
}
