//! `--processes`: each client of a fleet in an OS process of its own. The benchmark runs
//! itself again as a member (`--member …`, never typed by hand): the member builds its client
//! with its own Redis connection, sends from the agreed start until the agreed end, and prints
//! what its transport saw, as offsets from the start, for the parent to add up.
//!
//! The start is a wall-clock instant (`SystemTime`), the one clock every process on the
//! machine shares; each process turns it into its own `Instant` once.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::clients::{self, Contender, Tally, Transport};

/// What a member needs to know: its client, the server, the shared quota and the run's times.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) contender: Contender,
    pub(crate) base_url: String,
    pub(crate) redis_url: String,
    pub(crate) run_number: u64,
    pub(crate) clients: u32,
    pub(crate) tasks: usize,
    pub(crate) seconds: u32,
    /// The run's start, in microseconds since the Unix epoch.
    pub(crate) start_micros: u128,
}

impl Member {
    /// The arguments that make the benchmark run as this member.
    fn args(&self) -> Vec<String> {
        let index = Contender::ALL
            .iter()
            .position(|&c| c == self.contender)
            .expect("a contender of ALL");
        [
            "--member".to_owned(),
            index.to_string(),
            self.base_url.clone(),
            self.redis_url.clone(),
            self.run_number.to_string(),
            self.clients.to_string(),
            self.tasks.to_string(),
            self.seconds.to_string(),
            self.start_micros.to_string(),
        ]
        .into()
    }

    /// Parses what follows `--member` (see [`args`](Self::args)).
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let [index, base_url, redis_url, run, clients, tasks, seconds, start] = args else {
            return Err("--member takes 8 values".to_owned());
        };
        let number = |text: &str| {
            text.parse::<u128>()
                .map_err(|_| format!("not a number: {text:?}"))
        };
        let index = usize::try_from(number(index)?).map_err(|e| e.to_string())?;
        Ok(Self {
            contender: *Contender::ALL.get(index).ok_or("no such contender")?,
            base_url: base_url.clone(),
            redis_url: redis_url.clone(),
            run_number: u64::try_from(number(run)?).map_err(|e| e.to_string())?,
            clients: u32::try_from(number(clients)?).map_err(|e| e.to_string())?,
            tasks: usize::try_from(number(tasks)?).map_err(|e| e.to_string())?,
            seconds: u32::try_from(number(seconds)?).map_err(|e| e.to_string())?,
            start_micros: number(start)?,
        })
    }

    /// Starts this member as a child process of the benchmark, its report on stdout.
    pub(crate) fn spawn(&self) -> Child {
        Command::new(std::env::current_exe().expect("the benchmark's own path"))
            .args(self.args())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the benchmark runs itself as a fleet member")
    }

    /// Runs the member: sends until the end, then prints `ok <µs>` and `refused <µs>` per
    /// request (when it was handed to hyper, from the start), `errors <n>`, `gave_up <n>` and
    /// at most one `first_error <text>`.
    pub(crate) async fn run(self) {
        let shared = clients::shared_quota(
            &self.redis_url,
            &run_namespace(self.run_number),
            self.clients,
        )
        .await
        .expect("the benchmark's redis-server answers");
        let tally = Arc::new(Tally::default());
        let client = self.contender.client(
            Transport::new(Arc::clone(&tally), None),
            &self.base_url,
            self.run_number,
            Some(shared),
        );
        let start = instant_of(self.start_micros);
        let deadline = start + Duration::from_secs(self.seconds.into());
        tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
        let senders: Vec<_> = (0..self.tasks)
            .map(|task| {
                tokio::spawn(crate::send_until(
                    client.clone(),
                    task,
                    tokio::time::Instant::from_std(deadline),
                ))
            })
            .collect();
        let (mut errors, mut gave_up, mut first_error) = (0, 0, None);
        for sender in senders {
            let sent = sender.await.expect("sender task");
            errors += sent.errors;
            gave_up += sent.gave_up;
            first_error = first_error.or(sent.first_error);
        }
        drop(client);
        let mut report = String::new();
        for (word, sent) in [("ok", tally.ok_sent()), ("refused", tally.refused_sent())] {
            for at in sent {
                let offset = at.saturating_duration_since(start).as_micros();
                report.push_str(&format!("{word} {offset}\n"));
            }
        }
        report.push_str(&format!("errors {errors}\ngave_up {gave_up}\n"));
        if let Some(error) = first_error {
            report.push_str(&format!("first_error {}\n", error.replace('\n', " ")));
        }
        print!("{report}");
    }
}

/// What the members of a fleet reported, added up, as instants of this process.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) ok_sent: Vec<Instant>,
    pub(crate) refused_sent: Vec<Instant>,
    pub(crate) errors: u64,
    pub(crate) gave_up: u64,
    pub(crate) first_error: Option<String>,
}

impl Report {
    /// Adds one member's report (see [`Member::run`]), its offsets taken from `start`.
    pub(crate) fn add(&mut self, output: &str, start: Instant) {
        for line in output.lines() {
            let Some((word, value)) = line.split_once(' ') else {
                continue;
            };
            let micros = || value.parse::<u64>().ok().map(Duration::from_micros);
            match word {
                "ok" => self.ok_sent.extend(micros().map(|d| start + d)),
                "refused" => self.refused_sent.extend(micros().map(|d| start + d)),
                "errors" => self.errors += value.parse::<u64>().unwrap_or(0),
                "gave_up" => self.gave_up += value.parse::<u64>().unwrap_or(0),
                "first_error" => {
                    self.first_error.get_or_insert_with(|| value.to_owned());
                }
                _ => {}
            }
        }
        self.ok_sent.sort_unstable();
        self.refused_sent.sort_unstable();
    }
}

/// The member's report (its stdout), waiting at most `bound`: a member still running then is
/// killed, and what it printed so far is its report.
pub(crate) fn output_within(mut child: Child, bound: Duration) -> String {
    let started = Instant::now();
    let mut stdout = child.stdout.take().expect("a piped stdout");
    // Read on a thread of its own, so a chatty member cannot block on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < bound => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                eprintln!("real_servers: a fleet member outlived its run; killed");
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    reader.join().unwrap_or_default()
}

/// The namespace of one run's quota in Redis, the same in every member.
pub(crate) fn run_namespace(run_number: u64) -> String {
    format!("run-{run_number}")
}

/// Microseconds since the Unix epoch, `ahead` from now.
pub(crate) fn wall_micros(ahead: Duration) -> u128 {
    (SystemTime::now() + ahead)
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_micros()
}

/// This process's `Instant` for a wall-clock instant (microseconds since the Unix epoch).
pub(crate) fn instant_of(micros: u128) -> Instant {
    let now = wall_micros(Duration::ZERO);
    let now_instant = Instant::now();
    if micros >= now {
        now_instant + Duration::from_micros(u64::try_from(micros - now).unwrap_or(u64::MAX))
    } else {
        now_instant
            .checked_sub(Duration::from_micros(
                u64::try_from(now - micros).unwrap_or(u64::MAX),
            ))
            .unwrap_or(now_instant)
    }
}
