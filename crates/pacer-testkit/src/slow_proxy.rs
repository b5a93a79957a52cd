//! A TCP proxy on loopback that delays everything the server sends back, by an amount a test
//! changes while it runs: a slow server without touching the server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Forwards connections from its own loopback port to `127.0.0.1:<target>`, holding each
/// chunk of the server's replies for the current delay. Runs until the process ends.
#[derive(Debug, Clone)]
pub struct SlowProxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
}

impl SlowProxy {
    /// Starts forwarding to `target` (a loopback port), with no delay.
    ///
    /// # Panics
    /// When no loopback port is free.
    #[must_use]
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&delay_ms);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (client_in, server_out) = (client.try_clone(), server.try_clone());
                let (Ok(client_in), Ok(server_out)) = (client_in, server_out) else {
                    continue;
                };
                std::thread::spawn(move || pump(client_in, server_out, None));
                let delay = Arc::clone(&delay);
                std::thread::spawn(move || pump(server, client, Some(delay)));
            }
        });
        Self { port, delay_ms }
    }

    /// The proxy's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Holds every reply chunk from now on for `delay`.
    pub fn set_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(millis, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either side closes, sleeping for `delay` before each chunk.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Option<Arc<AtomicU64>>) {
    let mut buffer = [0_u8; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer) {
        if read == 0 {
            break;
        }
        if let Some(delay) = &delay {
            std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
