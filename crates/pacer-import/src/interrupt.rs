//! What the user asks while an import runs: a first interrupt (Ctrl-C) stops reading and drains
//! the requests in flight for a bounded time; a second one stops at once. Either way the
//! checkpoint covers exactly what was acknowledged, so `--resume` continues without loss.

use tokio::sync::mpsc;

/// A stream of interrupts for [`run`](crate::engine::run).
#[derive(Debug)]
#[must_use]
pub struct Interrupts {
    received: mpsc::UnboundedReceiver<()>,
}

impl Interrupts {
    /// Interrupts sent by hand (tests, an embedding program): each `send(())` is one Ctrl-C.
    pub fn channel() -> (mpsc::UnboundedSender<()>, Self) {
        let (sender, received) = mpsc::unbounded_channel();
        (sender, Self { received })
    }

    /// No interrupt ever arrives.
    pub fn never() -> Self {
        Self::channel().1
    }

    /// Ctrl-C (SIGINT), each press one interrupt. Needs a Tokio runtime.
    pub fn ctrl_c() -> Self {
        let (sender, interrupts) = Self::channel();
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if sender.send(()).is_err() {
                    break;
                }
            }
        });
        interrupts
    }

    /// The next interrupt; pending forever once no more can come.
    pub(crate) async fn next(&mut self) {
        if self.received.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}
