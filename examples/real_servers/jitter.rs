//! A TCP proxy that delays every chunk 20 ms plus 0–10 ms of jitter in each direction, keeping
//! the order of each connection's bytes (a chunk never overtakes the one before it): a link to
//! a distant server, on loopback. Requests of different connections reach the server with up
//! to 10 ms of jitter between them, as they would over a real network.

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The fixed part of the delay, each way.
const BASE: Duration = Duration::from_millis(20);
/// The jitter added to it, uniform in `[0, JITTER)`, each way.
const JITTER: Duration = Duration::from_millis(10);

/// Starts a proxy on a free loopback port in front of `upstream`; it runs until the process
/// ends.
pub(crate) async fn start(upstream: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(delay(client_read, server_write));
                tokio::spawn(delay(server_read, client_write));
            });
        }
    });
    Ok(addr)
}

/// Copies `from` to `to`, each chunk delivered at its own delay but never before the chunk
/// ahead of it.
async fn delay(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut rng = SmallRng::from_os_rng();
    let mut last = Instant::now();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let jitter = JITTER.mul_f64(rng.random::<f64>());
        let at = (Instant::now() + BASE + jitter).max(last);
        last = at;
        if chunks.send((at, buffer[..read].to_vec())).is_err() {
            break;
        }
    }
    drop(chunks);
    let _ = writer.await;
}
