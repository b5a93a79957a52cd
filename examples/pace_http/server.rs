//! An in-process HTTP server that enforces a rate limit the way real gateways do, and keeps score
//! of what it accepted and when. The server's view is the ground truth: it sees arrival times,
//! not send times.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How the server counts requests against its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Enforcement {
    /// Never more than `limit` requests in any window; refused requests count too, as in an
    /// HAProxy `http_req_rate` rule, so a client that overshoots keeps itself locked out.
    SlidingWindow,
    /// GCRA with a burst of 1 on a microsecond clock: any request that arrives less than
    /// `window / limit` after the last accepted one is refused. The harshest evenly spaced server.
    StrictGcra,
    /// nginx's `limit_req` without `burst`, as nginx computes it: in whole milliseconds of its
    /// cached clock, with the "excess" counter of `ngx_http_limit_req_module`.
    NginxLimitReq,
}

impl Enforcement {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::SlidingWindow => "sliding window",
            Self::StrictGcra => "strict GCRA (µs)",
            Self::NginxLimitReq => "nginx limit_req (ms)",
        }
    }

    /// Whether the server wants sends evenly spaced rather than allowing a burst of `limit`.
    pub(crate) fn evenly_spaced(self) -> bool {
        self != Self::SlidingWindow
    }

    pub(crate) const ALL: [Enforcement; 3] = [
        Enforcement::SlidingWindow,
        Enforcement::StrictGcra,
        Enforcement::NginxLimitReq,
    ];
}

/// What the server saw during a run.
#[derive(Debug, Default)]
pub(crate) struct Score {
    /// Arrival instants of accepted requests, in order.
    pub accepted: Vec<Instant>,
    /// Requests answered with 429.
    pub refused: u64,
}

/// The limiter state of the server and its score.
#[derive(Debug)]
struct Gate {
    enforcement: Enforcement,
    limit: usize,
    window: Duration,
    /// Sliding window: arrivals (accepted and refused) in the last `window`.
    arrivals: VecDeque<Instant>,
    /// Strict GCRA: the earliest instant the next request is accepted.
    next_allowed: Option<Instant>,
    /// nginx: the millisecond clock's origin, and the last accepted request's millisecond and
    /// excess (in thousandths of a request), as `ngx_http_limit_req_node_t` keeps them.
    started: Instant,
    nginx_last: Option<(u128, u128)>,
    score: Score,
}

impl Gate {
    /// Decides on a request that arrived at `now`: `Err(retry_after)` refuses it.
    fn arrive(&mut self, now: Instant) -> Result<(), Duration> {
        let verdict = match self.enforcement {
            Enforcement::SlidingWindow => self.arrive_sliding(now),
            Enforcement::StrictGcra => self.arrive_gcra(now),
            Enforcement::NginxLimitReq => self.arrive_nginx(now),
        };
        match verdict {
            Ok(()) => self.score.accepted.push(now),
            Err(_) => self.score.refused += 1,
        }
        verdict
    }

    fn arrive_sliding(&mut self, now: Instant) -> Result<(), Duration> {
        while let Some(&oldest) = self.arrivals.front() {
            if now.duration_since(oldest) < self.window {
                break;
            }
            self.arrivals.pop_front();
        }
        let full = self.arrivals.len() >= self.limit;
        // Refused requests are logged as well: they count against the window.
        self.arrivals.push_back(now);
        if full {
            let oldest = self.arrivals[0];
            Err((oldest + self.window).saturating_duration_since(now))
        } else {
            Ok(())
        }
    }

    fn arrive_gcra(&mut self, now: Instant) -> Result<(), Duration> {
        match self.next_allowed {
            Some(next) if now < next => Err(next - now),
            _ => {
                self.next_allowed = Some(now + self.window / self.limit as u32);
                Ok(())
            }
        }
    }
}

impl Gate {
    /// `excess = max(0, excess - rate * ms / 1000 + 1000)`, refused when above the burst (0),
    /// with `rate` in thousandths of a request per second; a refusal changes nothing.
    fn arrive_nginx(&mut self, now: Instant) -> Result<(), Duration> {
        let now_ms = now.duration_since(self.started).as_millis();
        let rate = 1000 * self.limit as u128 * 1000 / self.window.as_millis();
        let excess = match self.nginx_last {
            None => 0,
            Some((last_ms, excess)) => {
                let elapsed_ms = now_ms - last_ms;
                (excess + 1000).saturating_sub(rate * elapsed_ms / 1000)
            }
        };
        if excess > 0 {
            // nginx itself sends no Retry-After; the time until the excess drains is the hint.
            let wait_ms = (excess * 1000).div_ceil(rate);
            return Err(Duration::from_millis(wait_ms as u64));
        }
        self.nginx_last = Some((now_ms, excess));
        Ok(())
    }
}

/// A running server on an ephemeral loopback port.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    gate: Arc<Mutex<Gate>>,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Server {
    /// Starts a server that allows `limit` requests per `window`, counted by `enforcement`.
    ///
    /// The server runs on a thread and runtime of its own, as a real server runs in a process of
    /// its own: the clients' tasks do not delay its view of arrival times.
    pub(crate) fn start(enforcement: Enforcement, limit: usize, window: Duration) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let gate = Arc::new(Mutex::new(Gate {
            enforcement,
            limit,
            window,
            arrivals: VecDeque::with_capacity(limit * 2),
            next_allowed: None,
            started: Instant::now(),
            nginx_last: None,
            score: Score::default(),
        }));
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        let serving_gate = Arc::clone(&gate);
        let thread = std::thread::Builder::new()
            .name("pace-http-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        () = accept_loop(listener, serving_gate) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("spawn the server thread");
        Self {
            addr,
            gate,
            stop,
            thread,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and hands over its score.
    pub(crate) fn finish(self) -> Score {
        let _ = self.stop.send(());
        // Dropping the runtime cancels the connection tasks too.
        self.thread.join().expect("server thread");
        std::mem::take(&mut self.gate.lock().expect("gate lock").score)
    }
}

async fn accept_loop(listener: TcpListener, gate: Arc<Mutex<Gate>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: give connections a moment to close.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let gate = Arc::clone(&gate);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let verdict = gate.lock().expect("gate lock").arrive(Instant::now());
                async move { Ok::<_, Infallible>(respond(verdict)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(verdict: Result<(), Duration>) -> Response<Full<Bytes>> {
    match verdict {
        Ok(()) => Response::new(Full::new(Bytes::from_static(b"{}"))),
        Err(retry_after) => {
            // Retry-After carries whole seconds; round up so that obeying it is always enough.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header(header::RETRY_AFTER, seconds)
                .body(Full::new(Bytes::from_static(
                    b"{\"meta\":{\"error\":\"rate limited\"}}",
                )))
                .expect("static response")
        }
    }
}
