//! What the user sees while the import runs: a bar on a terminal, a line every few seconds
//! otherwise.

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Counters shared by the import and its display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records acknowledged (delivered, dead-lettered or invalid).
    pub done: AtomicU64,
    /// 429 answers seen.
    pub throttled: AtomicU64,
    /// HTTP requests sent (attempts included).
    pub requests: AtomicU64,
}

/// The display.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    counters: Arc<Counters>,
    total: Option<u64>,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// A bar when stderr is a terminal and `quiet` is off, log lines otherwise.
    #[must_use]
    pub fn new(total: Option<u64>, counters: Arc<Counters>, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(total) => ProgressBar::new(total),
                None => ProgressBar::new_spinner(),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:32} {pos}/{len} records  {rate}  ETA {eta}  {msg}",
                )
                .map(|style| {
                    // Whole records per second: indicatif's own `{per_sec}` prints four decimals.
                    style.with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
                        let _ = write!(out, "{:.0}/s", state.per_sec());
                    })
                })
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            counters,
            total,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// Refreshes the display; `retries` comes from the retry layer.
    pub fn tick(&mut self, retries: u64, quiet: bool) {
        let done = self.counters.done.load(Ordering::Relaxed);
        let throttled = self.counters.throttled.load(Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(format!("429s {throttled}  retries {retries}"));
        } else if !quiet && self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            let total = self.total.map_or_else(|| "?".to_owned(), |t| t.to_string());
            eprintln!("progress: {done}/{total} records, {rate:.0}/s, 429s {throttled}, retries {retries}");
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
