//! Real rate-limiting servers from Debian's packages (nginx-light, haproxy), started as child
//! processes on free loopback ports, and the in-process ones of `rust_servers.rs`, all limiting
//! per `Authorization` value, answering `200 {}` or `429` with `Retry-After: 1` (as Customer.io's
//! App API and many others do). A [`Servers`] guard stops the processes and removes their
//! directory when dropped, also when the benchmark panics.

use std::collections::HashMap;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{jitter, rust_servers};

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server may take to exit once asked to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// One server configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ServerKind {
    /// nginx `limit_req` without burst: a request closer than 10 ms (on nginx's millisecond
    /// clock) to the last accepted one is refused.
    Nginx0,
    /// nginx `limit_req burst=5 nodelay`: up to 5 requests ahead of the 10 ms schedule.
    Nginx5,
    /// nginx `limit_req burst=99 nodelay`: a bucket of 100, refilled at 100/s.
    Nginx99,
    /// HAProxy `sc_http_req_rate(0) gt 100` over `http_req_rate(1s)`: refused requests count.
    Haproxy,
    /// 100 per clock second (in process).
    FixedWindow,
    /// GitHub-style: 5 per clock second, `X-RateLimit-Reset` in epoch seconds (in process).
    GitHubSeconds,
    /// The same with `X-RateLimit-Reset` in epoch milliseconds.
    GitHubMillis,
}

impl ServerKind {
    pub(crate) const ALL: [ServerKind; 7] = [
        ServerKind::Nginx0,
        ServerKind::Nginx5,
        ServerKind::Nginx99,
        ServerKind::Haproxy,
        ServerKind::FixedWindow,
        ServerKind::GitHubSeconds,
        ServerKind::GitHubMillis,
    ];

    /// Requests per second the server allows.
    pub(crate) fn limit(self) -> f64 {
        match self {
            Self::GitHubSeconds | Self::GitHubMillis => 5.0,
            _ => 100.0,
        }
    }

    /// The in-process server of this kind, if it is one.
    fn in_process(self) -> Option<rust_servers::Kind> {
        use rust_servers::{Kind, ResetIn};
        match self {
            Self::FixedWindow => Some(Kind::FixedWindow { limit: 100 }),
            Self::GitHubSeconds => Some(Kind::GitHub {
                limit: 5,
                reset: ResetIn::EpochSeconds,
            }),
            Self::GitHubMillis => Some(Kind::GitHub {
                limit: 5,
                reset: ResetIn::EpochMillis,
            }),
            _ => None,
        }
    }

    /// The table's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Nginx0 => "nginx burst=0",
            Self::Nginx5 => "nginx burst=5 nodelay",
            Self::Nginx99 => "nginx burst=99 nodelay",
            Self::Haproxy => "HAProxy req_rate(1s)",
            Self::FixedWindow => "fixed window, clock-aligned",
            Self::GitHubSeconds => "GitHub-style 5/s, reset epoch s",
            Self::GitHubMillis => "GitHub-style 5/s, reset epoch ms",
        }
    }

    /// The name `--server` takes.
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Self::Nginx0 => "nginx0",
            Self::Nginx5 => "nginx5",
            Self::Nginx99 => "nginx99",
            Self::Haproxy => "haproxy",
            Self::FixedWindow => "fixed",
            Self::GitHubSeconds => "github",
            Self::GitHubMillis => "github-ms",
        }
    }

    fn program(self) -> Option<Program> {
        match self {
            Self::Nginx0 | Self::Nginx5 | Self::Nginx99 => Some(Program::Nginx),
            Self::Haproxy => Some(Program::Haproxy),
            Self::FixedWindow | Self::GitHubSeconds | Self::GitHubMillis => None,
        }
    }

    /// The `limit_req` line of an nginx server block.
    fn nginx_limit_req(self) -> &'static str {
        match self {
            Self::Nginx0 => "limit_req zone=burst0;",
            Self::Nginx5 => "limit_req zone=burst5 burst=5 nodelay;",
            Self::Nginx99 => "limit_req zone=burst99 burst=99 nodelay;",
            _ => unreachable!("not an nginx server"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Program {
    Nginx,
    Haproxy,
}

impl Program {
    fn binary(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Self::Nginx => "nginx-light",
            Self::Haproxy => "haproxy",
        }
    }
}

/// A started server process, and how to stop it.
#[derive(Debug)]
struct Running {
    child: Child,
    /// The command that asks it to stop (`nginx -s stop`); `None`: kill it.
    stop: Option<Command>,
}

/// The running servers. Dropping it stops them and removes their directory.
#[derive(Debug)]
pub(crate) struct Servers {
    dir: PathBuf,
    children: Vec<Running>,
    addrs: HashMap<ServerKind, SocketAddr>,
}

impl Servers {
    /// Starts the servers `kinds` need (one nginx for all nginx kinds, one HAProxy), each
    /// waited for until it accepts connections. A program that is missing or does not start is
    /// reported with one `SKIPPED` line, and its kinds have no address.
    pub(crate) fn start(kinds: &[ServerKind]) -> Self {
        let dir = std::env::temp_dir().join(format!("pacer-real-servers-{}", std::process::id()));
        // A leftover of an earlier process with the same pid is ours to replace.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the servers' directory");
        let mut servers = Self {
            dir,
            children: Vec::new(),
            addrs: HashMap::new(),
        };
        for program in [Program::Nginx, Program::Haproxy] {
            let wanted: Vec<ServerKind> = kinds
                .iter()
                .copied()
                .filter(|kind| kind.program() == Some(program))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let Some(binary) = find_program(program.binary()) else {
                println!(
                    "SKIPPED {}: not installed (apt-get install {})",
                    program.binary(),
                    program.package()
                );
                continue;
            };
            match servers.start_program(program, &binary, &wanted) {
                Ok(addrs) => servers.addrs.extend(addrs),
                Err(why) => println!("SKIPPED {}: {why}", program.binary()),
            }
        }
        servers
    }

    /// Starts the in-process servers among `kinds`.
    pub(crate) async fn start_in_process(&mut self, kinds: &[ServerKind]) {
        for &kind in kinds {
            let Some(server) = kind.in_process() else {
                continue;
            };
            match rust_servers::start(server).await {
                Ok(addr) => {
                    self.addrs.insert(kind, addr);
                }
                Err(error) => println!("SKIPPED {}: {error}", kind.name()),
            }
        }
    }

    /// Puts a jitter proxy (see `jitter.rs`) in front of every running server: from now on
    /// their URLs are the proxies'.
    pub(crate) async fn behind_jitter(&mut self) {
        for addr in self.addrs.values_mut() {
            *addr = jitter::start(*addr)
                .await
                .expect("a jitter proxy on loopback");
        }
    }

    /// The base URL of `kind`'s server, when it runs.
    pub(crate) fn url(&self, kind: ServerKind) -> Option<String> {
        self.addrs.get(&kind).map(|addr| format!("http://{addr}"))
    }

    fn start_program(
        &mut self,
        program: Program,
        binary: &Path,
        kinds: &[ServerKind],
    ) -> Result<Vec<(ServerKind, SocketAddr)>, String> {
        let addrs: Vec<(ServerKind, SocketAddr)> = kinds
            .iter()
            .map(|&kind| free_port().map(|addr| (kind, addr)))
            .collect::<Result<_, _>>()
            .map_err(|error| format!("no free loopback port: {error}"))?;
        let dir = &self.dir;
        let log = dir.join(format!("{}.stderr", program.binary()));
        let (mut command, stop) = command_for(program, binary, dir, &addrs)?;
        let stderr = File::create(&log).map_err(|error| format!("cannot create log: {error}"))?;
        let stdout = stderr
            .try_clone()
            .map_err(|error| format!("cannot share log: {error}"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        self.children.push(Running { child, stop });
        let child = &mut self.children.last_mut().expect("just pushed").child;
        for &(_, addr) in &addrs {
            wait_until_listening(child, addr, || last_lines(&log, dir, program))?;
        }
        Ok(addrs)
    }
}

/// The command that starts `program` on `addrs` with its configuration written to `dir`, and
/// the command that stops it (when killing it would not do).
fn command_for(
    program: Program,
    binary: &Path,
    dir: &Path,
    addrs: &[(ServerKind, SocketAddr)],
) -> Result<(Command, Option<Command>), String> {
    let mut command = Command::new(binary);
    match program {
        Program::Nginx => {
            let config = dir.join("nginx.conf");
            fs::write(&config, nginx_config(dir, addrs))
                .map_err(|error| format!("cannot write {}: {error}", config.display()))?;
            // -e: the error log before the configuration is read (Debian's default,
            // /var/log/nginx/error.log, may not be writable).
            command
                .arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(&config);
            // `nginx -s stop` signals the master named by the pid file (SIGTERM), which stops
            // its worker: killing the master would leave the worker running. Run by the
            // binary's own path, it needs no `kill` on PATH.
            let mut stop = Command::new(binary);
            stop.args(command.get_args()).args(["-s", "stop"]);
            command.args(["-g", "daemon off;"]);
            Ok((command, Some(stop)))
        }
        Program::Haproxy => {
            let config = dir.join("haproxy.cfg");
            let [(_, addr)] = addrs[..] else {
                unreachable!("one HAProxy kind")
            };
            fs::write(&config, haproxy_config(addr))
                .map_err(|error| format!("cannot write {}: {error}", config.display()))?;
            command.arg("-f").arg(&config).arg("-db");
            Ok((command, None))
        }
    }
}

/// Waits until `child` accepts connections on `addr`; `log_tail` says why when it exits or
/// takes longer than [`START_TIMEOUT`].
fn wait_until_listening(
    child: &mut std::process::Child,
    addr: SocketAddr,
    log_tail: impl Fn() -> String,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited at start ({status}): {}", log_tail()));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(format!(
                "not accepting connections on {addr} after {START_TIMEOUT:?}: {}",
                log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for running in &mut self.children {
            running.stop();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Running {
    /// Asks the server to stop, then kills it when it has not exited in time (HAProxy, one
    /// process with `-db`, is killed at once).
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let asked = self.stop.as_mut().is_some_and(|stop| {
            stop.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        });
        if asked {
            let since = Instant::now();
            while since.elapsed() < STOP_TIMEOUT {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on: bound, read, and released for the server to take.
fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// `name` on `PATH`, or in the sbin directories where Debian installs nginx and haproxy (not on
/// every user's `PATH`).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The end of a server's logs, for a start-up failure.
fn last_lines(stderr: &Path, dir: &Path, program: Program) -> String {
    let mut text = fs::read_to_string(stderr).unwrap_or_default();
    if program == Program::Nginx {
        text.push_str(&fs::read_to_string(dir.join("error.log")).unwrap_or_default());
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    if tail.is_empty() {
        "no log output".to_owned()
    } else {
        tail
    }
}

/// One nginx, one server block per kind. `return` runs in the rewrite phase, before
/// `limit_req`'s preaccess phase, so a plain `location / { return 200 '{}'; }` is never
/// limited; `try_files` runs after preaccess and access, and its fallback, a named location,
/// gives the `200 {}` (a static file would answer POST and PUT with 405). `limit_req` counts a
/// request once, even across the internal redirect. Refusals are logged at `info`, below the
/// error log's level, so thousands of 429s do not write thousands of lines.
fn nginx_config(dir: &Path, servers: &[(ServerKind, SocketAddr)]) -> String {
    let dir = dir.display();
    let blocks: String = servers
        .iter()
        .map(|(kind, addr)| {
            format!(
                "    server {{
        listen {addr};
        root {dir};
        add_header Retry-After $retry_after always;
        location / {{
            {limit}
            try_files /.never-a-file @accepted;
        }}
        location @accepted {{
            default_type application/json;
            return 200 '{{}}';
        }}
    }}
",
                limit = kind.nginx_limit_req()
            )
        })
        .collect();
    // `REAL_SERVERS_NGINX_LOG=path` logs each request's millisecond stamp and status, to see
    // how far apart nginx saw the requests it refused.
    let access_log = std::env::var("REAL_SERVERS_NGINX_LOG").map_or_else(
        |_| "access_log off;".to_owned(),
        |path| {
            format!("log_format stamps '$msec $status $connection';\n    access_log {path} stamps;")
        },
    );
    format!(
        "worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{
    worker_connections 1024;
}}
http {{
    {access_log}
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    limit_req_zone $http_authorization zone=burst0:1m rate=100r/s;
    limit_req_zone $http_authorization zone=burst5:1m rate=100r/s;
    limit_req_zone $http_authorization zone=burst99:1m rate=100r/s;
    limit_req_status 429;
    limit_req_log_level info;
    map $status $retry_after {{
        429 1;
        default \"\";
    }}
{blocks}}}
"
    )
}

/// One HAProxy frontend answering by itself. `track-sc0` counts every request of the
/// `Authorization` value, refused ones included, in `http_req_rate(1s)` (HAProxy's frequency
/// counter: the current second plus the previous one weighted by what is left of it), and more
/// than 100 is refused.
fn haproxy_config(addr: SocketAddr) -> String {
    format!(
        "global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 30s

frontend api
    bind {addr}
    stick-table type string len 200 size 10k expire 10s store http_req_rate(1s)
    http-request track-sc0 req.hdr(authorization)
    http-request deny deny_status 429 hdr Retry-After 1 if {{ sc_http_req_rate(0) gt 100 }}
    http-request return status 200 content-type application/json string \"{{}}\"
"
    )
}
