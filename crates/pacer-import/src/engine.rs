//! The import pipeline: read → pack into units → send (bounded concurrency) → acknowledge in
//! order → checkpoint. Nothing is acknowledged before it is delivered, dead-lettered (synced),
//! or known invalid; so a resume from the checkpoint loses nothing, and derived event ids make
//! the records it re-sends harmless.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use pacer_customerio::{
    BatchOutcome, Client, EntryOutcome, Error, Event, Operation, Packer, Pushed,
};
use pacer_retry::{Backoff, Jitter};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::budget::ReadBudget;
use crate::checkpoint::Checkpoint;
use crate::deadletter::DeadLetters;
use crate::input::{Format, Input, Item, Start};
use crate::interrupt::Interrupts;
use crate::progress::{Counters, Progress};
use crate::reason::Redactor;
use crate::record::Record;

/// How records travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Track v2 `/api/v2/batch`: many operations per request (default).
    Batch,
    /// Track v1: one request per record.
    Single,
}

/// What the engine needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The input file (`None` for stdin).
    pub input: Option<PathBuf>,
    /// Its format.
    pub format: Format,
    /// Batch or single.
    pub mode: Mode,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Operations per batch request at most.
    pub batch_size: usize,
    /// Stop at the first invalid record.
    pub strict: bool,
    /// Validate and count, send nothing.
    pub dry_run: bool,
    /// Where refused and invalid records go.
    pub dead_letter: PathBuf,
    /// Where progress is recorded (`None` for stdin).
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint.
    pub resume: bool,
    /// No progress display.
    pub quiet: bool,
    /// After a first interrupt, how long requests in flight may take to finish before the
    /// import stops without them (they are not acknowledged: a resume sends them again).
    pub drain_timeout: Duration,
    /// Takes the credentials out of server text kept in dead letters and messages.
    pub redactor: Redactor,
}

/// How an import ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Records delivered.
    pub delivered: u64,
    /// Records the server refused for good (4xx, validation).
    pub dead_lettered: u64,
    /// Invalid input records.
    pub invalid: u64,
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// 429 answers seen.
    pub throttled: u64,
    /// Retries.
    pub retries: u64,
    /// Wall time in seconds.
    #[serde(serialize_with = "seconds")]
    pub elapsed_s: Duration,
    /// Whether the import stopped early (Ctrl-C, fatal error); the checkpoint allows resuming.
    pub aborted: bool,
    /// Whether it stopped at an invalid record under `--strict` (an input error).
    #[serde(skip)]
    pub invalid_input: bool,
    /// The process's peak resident memory in MiB (Linux), to show memory stays flat.
    pub peak_rss_mib: Option<f64>,
}

/// `VmHWM` from `/proc/self/status`: the peak resident set size.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64((duration.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// A slice of the input sent together and acknowledged together.
#[derive(Debug, Default)]
struct Unit {
    seq: u64,
    end: u64,
    end_line: u64,
    /// Batch mode: the line and the encoded v2 operation of each record (the record itself is
    /// dropped once encoded, which keeps memory per record small).
    operations: Vec<(u64, Bytes)>,
    /// Single mode: the line, raw text and record.
    records: Vec<(u64, String, Record)>,
    invalid: Vec<(u64, String, String)>,
    /// Batch mode: what decides when the request is full (pacer-customerio's one packer, the
    /// outbox's too). It shares the operations' buffers with `operations`.
    packer: Packer,
}

impl Unit {
    fn is_empty(&self) -> bool {
        self.operations.is_empty() && self.records.is_empty() && self.invalid.is_empty()
    }

    fn valid(&self) -> usize {
        self.operations.len() + self.records.len()
    }
}

/// What became of a unit.
#[derive(Debug)]
struct Outcome {
    seq: u64,
    end: u64,
    end_line: u64,
    delivered: u64,
    refused: Vec<(u64, String, String)>,
    invalid: Vec<(u64, String, String)>,
    fatal: Option<String>,
}

/// How long a partly filled unit waits for more records before it is sent.
const LINGER: Duration = Duration::from_millis(50);
/// How often the checkpoint is written.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Extra rounds for a unit whose retries ran out on transient failures, before giving up.
const UNIT_ROUNDS: u32 = 4;
/// The longest server wait (a 429's or 503's `Retry-After`) the import sits out; the stack's
/// retry layer is given the same cap. A longer one stops the import at once (resumable).
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(60);

/// The pause before each extra round: pacer-retry's exponential backoff from 2 s to 16 s (the
/// 2, 4, 8, 16 s the rounds waited before), with equal jitter: half of each pause fixed, half
/// drawn. Units that failed together (one outage) then come back spread out rather than in the
/// same instant, and none comes back almost at once.
fn round_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(2), Duration::from_secs(16)).jitter(Jitter::Equal)
}

/// Runs the import. A first interrupt stops reading and drains what is in flight for at most
/// [`Plan::drain_timeout`]; a second one stops at once. Either way the checkpoint covers what
/// was acknowledged, and the summary says `aborted`.
///
/// # Errors
/// Input, checkpoint or dead-letter file errors (exit code 2).
pub async fn run(
    plan: &Plan,
    client: Option<Client<Incoming>>,
    counters: Arc<Counters>,
    interrupts: Interrupts,
) -> Result<Summary, String> {
    let started = Instant::now();
    let mut checkpoint = starting_checkpoint(plan)?;
    let start = Start {
        offset: checkpoint.offset,
        line: checkpoint.line,
        headers: checkpoint.headers.clone(),
    };
    let input = Input::open(plan.input.as_deref(), plan.format, &start)?;
    checkpoint.headers = input.headers();
    // The total is only for the display: no extra pass over the input when nothing is shown.
    let total = plan
        .input
        .as_ref()
        .filter(|path| !plan.quiet && path.is_file())
        .and_then(|path| count_lines(path).ok())
        .map(|lines| lines.saturating_sub(checkpoint.line));
    let dead_letter = plan.dead_letter.display().to_string();
    // A resume cuts the dead-letter file back to what its checkpoint covered.
    let keep = checkpoint
        .dead_letter_len
        .filter(|_| checkpoint.dead_letter.as_ref() == Some(&dead_letter));
    let dead = DeadLetters::open(&plan.dead_letter, keep)?;
    checkpoint.dead_letter = Some(dead_letter);
    let mut progress = Progress::new(total, Arc::clone(&counters), plan.quiet);
    let budget = Arc::new(ReadBudget::new(READ_AHEAD_BYTES));
    let (mut items, reader) = spawn_reader(input, start.offset, Arc::clone(&budget));

    let mut pipeline = Pipeline::new(plan, client.as_ref(), &counters, checkpoint, dead);
    // At once, so that a crash before the first periodic save still finds the dead-letter
    // file's starting length.
    pipeline.save()?;
    let driven = pipeline
        .drive(&mut items, interrupts, &mut progress, &budget)
        .await;
    // The reader may wait for room that will not come now: let it go before joining it.
    budget.close();
    drop(items);
    let _ = reader.join();
    driven?;
    pipeline.save()?;
    progress.finish();
    Ok(pipeline.summary(started))
}

/// The checkpoint to start from: a fresh one for this input, or with `--resume` the saved one,
/// if it is for this same input.
fn starting_checkpoint(plan: &Plan) -> Result<Checkpoint, String> {
    let input_len = plan
        .input
        .as_ref()
        .and_then(|path| std::fs::metadata(path).ok())
        .map_or(0, |meta| meta.len());
    let fresh = Checkpoint {
        input: plan
            .input
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        input_len,
        format: Some(plan.format),
        ..Checkpoint::default()
    };
    if !plan.resume {
        return Ok(fresh);
    }
    let path = plan
        .checkpoint
        .as_ref()
        .ok_or("--resume needs a regular input file, not standard input or a stream")?;
    if !path.exists() {
        return Ok(fresh);
    }
    let saved = Checkpoint::load(path)?;
    if saved.input_len != input_len || saved.format != Some(plan.format) {
        return Err(format!(
            "the checkpoint {} is for a different input (size {} vs {input_len}); remove it to start over",
            path.display(),
            saved.input_len
        ));
    }
    Ok(saved)
}

/// Input read ahead of the pipeline at most: a few batches' worth.
const READ_AHEAD_BYTES: u64 = 8 * 1024 * 1024;

/// Reads on a thread of its own: file I/O blocks, and memory stays bounded by the channel (in
/// records) and by `budget` (in bytes: each record's input bytes until the pipeline packed it).
fn spawn_reader(
    input: Input,
    start: u64,
    budget: Arc<ReadBudget>,
) -> (
    mpsc::Receiver<Result<Item, String>>,
    std::thread::JoinHandle<()>,
) {
    let (items_tx, items) = mpsc::channel::<Result<Item, String>>(4096);
    let reader = std::thread::spawn(move || {
        let mut input = input;
        let mut read_to = start;
        loop {
            let next = input.next_item();
            if let Ok(Some(item)) = &next {
                budget.take(item.end.saturating_sub(read_to));
                read_to = item.end;
            }
            let done = !matches!(next, Ok(Some(_)));
            let message = next.map(|item| item.ok_or(()));
            let sent = match message {
                Ok(Ok(item)) => items_tx.blocking_send(Ok(item)),
                Ok(Err(())) => break,
                Err(error) => items_tx.blocking_send(Err(error)),
            };
            if sent.is_err() || done {
                break;
            }
        }
    });
    (items, reader)
}

/// What woke the pipeline up.
enum Wake {
    /// The user asked to stop: drain, then stop.
    Stop,
    /// Stop now, without what is in flight: a second interrupt, or the drain took too long.
    Abort(&'static str),
    /// A unit finished (or its task failed).
    Finished(Result<Outcome, tokio::task::JoinError>),
    /// The reader's next item; `None` at the end of the input.
    Item(Option<Result<Item, String>>),
    /// The input paused with a unit partly packed.
    Linger,
}

/// The import's state between reading, sending and acknowledging.
struct Pipeline<'a> {
    plan: &'a Plan,
    client: Option<&'a Client<Incoming>>,
    counters: &'a Counters,
    checkpoint: Checkpoint,
    dead: DeadLetters,
    summary: Summary,
    in_flight: JoinSet<Outcome>,
    /// Finished units waiting for the ones before them.
    finished: BTreeMap<u64, Outcome>,
    next_seq: u64,
    acked_seq: u64,
    /// The unit being packed.
    unit: Unit,
    input_done: bool,
    stopping: bool,
    /// When a drain that has not finished stops waiting.
    drain_deadline: Option<tokio::time::Instant>,
    fatal: Option<String>,
    invalid_input: bool,
    last_checkpoint: Instant,
}

impl<'a> Pipeline<'a> {
    fn new(
        plan: &'a Plan,
        client: Option<&'a Client<Incoming>>,
        counters: &'a Counters,
        checkpoint: Checkpoint,
        dead: DeadLetters,
    ) -> Self {
        let summary = Summary {
            delivered: checkpoint.delivered,
            dead_lettered: checkpoint.dead_lettered,
            invalid: checkpoint.invalid,
            ..Summary::default()
        };
        Self {
            plan,
            client,
            counters,
            checkpoint,
            dead,
            summary,
            in_flight: JoinSet::new(),
            finished: BTreeMap::new(),
            next_seq: 0,
            acked_seq: 0,
            unit: Unit::default(),
            input_done: false,
            stopping: false,
            drain_deadline: None,
            fatal: None,
            invalid_input: false,
            last_checkpoint: Instant::now(),
        }
    }

    /// Reads, sends and acknowledges until the input is done and delivered, or a stop (Ctrl-C,
    /// a fatal error) has drained what is in flight.
    async fn drive(
        &mut self,
        items: &mut mpsc::Receiver<Result<Item, String>>,
        mut interrupts: Interrupts,
        progress: &mut Progress,
        budget: &ReadBudget,
    ) -> Result<(), String> {
        let mut packed_to = self.checkpoint.offset;
        loop {
            let wake = self.wait(items, &mut interrupts).await;
            // A record is packed (or dropped) as soon as it arrives: its input bytes go back.
            if let Wake::Item(Some(Ok(item))) = &wake {
                budget.give(item.end.saturating_sub(packed_to));
                packed_to = item.end;
            }
            if let Wake::Abort(why) = wake {
                // Dropped, not acknowledged: the checkpoint ends before them.
                eprintln!(
                    "pacer-import: stopped {why}, {} requests in flight not waited for",
                    self.in_flight.len()
                );
                self.in_flight.abort_all();
                self.stopping = true;
                return Ok(());
            }
            self.handle(wake)?;
            if self.input_done && !self.stopping && !self.unit.is_empty() {
                self.dispatch_packed();
            }
            self.acknowledge_finished()?;
            if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                self.save()?;
                self.last_checkpoint = Instant::now();
            }
            progress.tick(self.retries(), self.plan.quiet);
            let unsent = !self.unit.is_empty();
            if (self.input_done || self.stopping)
                && self.in_flight.is_empty()
                && (self.stopping || !unsent)
            {
                return Ok(());
            }
        }
    }

    async fn wait(
        &mut self,
        items: &mut mpsc::Receiver<Result<Item, String>>,
        interrupts: &mut Interrupts,
    ) -> Wake {
        let room = self.in_flight.len() < self.plan.concurrency;
        let packed = !self.unit.is_empty();
        let deadline = self.drain_deadline;
        tokio::select! {
            biased;
            () = interrupts.next() => {
                if self.stopping { Wake::Abort("at a second interrupt") } else { Wake::Stop }
            }
            () = sleep_until(deadline), if deadline.is_some() => {
                Wake::Abort("when the drain timed out")
            }
            joined = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                Wake::Finished(joined.expect("a non-empty set yields"))
            }
            item = items.recv(), if !self.input_done && !self.stopping && room => Wake::Item(item),
            () = tokio::time::sleep(LINGER), if packed && room && !self.stopping => Wake::Linger,
        }
    }

    fn handle(&mut self, wake: Wake) -> Result<(), String> {
        match wake {
            Wake::Stop => self.begin_stopping(),
            Wake::Abort(_) => unreachable!("drive handles an abort itself"),
            Wake::Finished(joined) => {
                let outcome = joined.map_err(|error| format!("a sending task failed: {error}"))?;
                if let Some(error) = &outcome.fatal {
                    self.fatal.get_or_insert_with(|| error.clone());
                    self.begin_stopping();
                }
                self.finished.insert(outcome.seq, outcome);
            }
            Wake::Item(None) => self.input_done = true,
            Wake::Item(Some(Err(error))) => return Err(error),
            Wake::Item(Some(Ok(item))) => {
                if let Some(full) = pack(&mut self.unit, item, self.plan, &mut self.fatal) {
                    self.dispatch(full);
                }
                // Only an invalid record under --strict makes pack stop the import.
                if self.fatal.is_some() {
                    self.begin_stopping();
                    self.invalid_input = true;
                }
            }
            // The input paused with a unit partly packed: send it rather than wait.
            Wake::Linger => self.dispatch_packed(),
        }
        Ok(())
    }

    /// Stops reading; what is in flight may finish until the drain deadline.
    fn begin_stopping(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.drain_deadline = Some(tokio::time::Instant::now() + self.plan.drain_timeout);
        if !self.in_flight.is_empty() {
            eprintln!(
                "pacer-import: stopping: draining {} requests in flight for at most {:?} (Ctrl-C again to stop now), then writing the checkpoint",
                self.in_flight.len(),
                self.plan.drain_timeout
            );
        }
    }

    fn dispatch_packed(&mut self) {
        let unit = std::mem::take(&mut self.unit);
        self.dispatch(unit);
    }

    fn dispatch(&mut self, unit: Unit) {
        dispatch(
            &mut self.in_flight,
            unit,
            self.plan,
            self.client,
            &mut self.next_seq,
        );
    }

    /// Acknowledges the contiguous prefix of finished units.
    fn acknowledge_finished(&mut self) -> Result<(), String> {
        while let Some(outcome) = self.finished.remove(&self.acked_seq) {
            if outcome.fatal.is_some() {
                // Not acknowledged, nor anything after it: a resume sends them again.
                self.finished.clear();
                break;
            }
            acknowledge(&outcome, &mut self.summary, &mut self.dead, self.counters)?;
            self.checkpoint.offset = outcome.end;
            self.checkpoint.line = outcome.end_line;
            self.acked_seq += 1;
        }
        Ok(())
    }

    fn save(&mut self) -> Result<(), String> {
        save(
            &mut self.checkpoint,
            &self.summary,
            &mut self.dead,
            self.plan,
        )
    }

    fn retries(&self) -> u64 {
        self.client.map_or(0, |c| c.retry_layer().stats().retries)
    }

    /// The summary of a finished run, with a fatal error (if any) reported.
    fn summary(self, started: Instant) -> Summary {
        if let Some(error) = &self.fatal {
            eprintln!("pacer-import: stopped: {error}");
        }
        Summary {
            requests: self.counters.requests.load(Ordering::Relaxed),
            throttled: self.counters.throttled.load(Ordering::Relaxed),
            retries: self.retries(),
            elapsed_s: started.elapsed(),
            aborted: self.stopping,
            peak_rss_mib: peak_rss_mib(),
            invalid_input: self.invalid_input,
            ..self.summary
        }
    }
}

/// Writes a finished unit's dead letters and counts it.
fn acknowledge(
    outcome: &Outcome,
    summary: &mut Summary,
    dead: &mut DeadLetters,
    counters: &Counters,
) -> Result<(), String> {
    let write = |dead: &mut DeadLetters, kind: &str, entries: &[(u64, String, String)]| {
        entries
            .iter()
            .try_for_each(|(line, raw, reason)| dead.write(*line, kind, reason, raw))
    };
    write(dead, "refused", &outcome.refused)
        .map_err(|e| format!("cannot write dead letters: {e}"))?;
    write(dead, "invalid", &outcome.invalid)
        .map_err(|e| format!("cannot write dead letters: {e}"))?;
    summary.delivered += outcome.delivered;
    summary.dead_lettered += outcome.refused.len() as u64;
    summary.invalid += outcome.invalid.len() as u64;
    let done = outcome.delivered + (outcome.refused.len() + outcome.invalid.len()) as u64;
    counters.done.fetch_add(done, Ordering::Relaxed);
    Ok(())
}

fn save(
    checkpoint: &mut Checkpoint,
    summary: &Summary,
    dead: &mut DeadLetters,
    plan: &Plan,
) -> Result<(), String> {
    // Dead letters first: the checkpoint must never cover a line whose dead letter is not on disk.
    dead.sync()
        .map_err(|error| format!("cannot sync the dead-letter file: {error}"))?;
    checkpoint.dead_letter_len = Some(dead.len());
    checkpoint.delivered = summary.delivered;
    checkpoint.dead_lettered = summary.dead_lettered;
    checkpoint.invalid = summary.invalid;
    if let Some(path) = &plan.checkpoint {
        checkpoint
            .save(path)
            .map_err(|error| format!("cannot write the checkpoint {}: {error}", path.display()))?;
    }
    Ok(())
}

/// Adds `item` to the unit being packed; returns a full unit to send.
fn pack(unit: &mut Unit, item: Item, plan: &Plan, fatal: &mut Option<String>) -> Option<Unit> {
    let Item {
        line,
        end,
        record,
        raw,
    } = item;
    let mut ready = None;
    match record.and_then(|record| Packed::new(record, line, plan.mode)) {
        Err(reason) => {
            if plan.strict {
                // Deliver what came before, then stop: the checkpoint ends before this line.
                fatal.get_or_insert_with(|| format!("line {line}: {reason} (--strict)"));
                return Some(std::mem::take(unit)).filter(|unit| !unit.is_empty());
            }
            unit.invalid.push((line, raw, reason));
            unit.end = end;
            unit.end_line = line;
            // Invalid records count towards a full unit: acknowledged (dead-lettered) as they
            // come, never piled up waiting for a valid one. This unit ends with this record.
            let full = unit.valid() + unit.invalid.len() >= plan.batch_size;
            return full.then(|| std::mem::take(unit));
        }
        Ok(Packed::Record(record)) => {
            if unit.valid() > 0 {
                ready = Some(std::mem::take(unit));
            }
            unit.records.push((line, raw, record));
        }
        Ok(Packed::Operation(operation)) => {
            if unit.valid() + unit.invalid.len() >= plan.batch_size
                || !unit.packer.fits(operation.len())
            {
                ready = Some(std::mem::take(unit));
            }
            // `Packed::new` refused operations over 32 KB, and an empty packer takes any other.
            let pushed = unit.packer.push(operation.clone());
            debug_assert_eq!(pushed, Pushed::Packed);
            unit.operations.push((line, operation));
        }
    }
    unit.end = end;
    unit.end_line = line;
    ready
}

/// A valid record as its mode sends it.
enum Packed {
    /// Single mode: the record, for its v1 request.
    Record(Record),
    /// Batch mode: its encoded v2 operation.
    Operation(Bytes),
}

impl Packed {
    /// Batch mode encodes the record at once. An operation over Customer.io's 32 KB is an
    /// invalid record by itself; sent, it would have the whole batch refused.
    fn new(record: Record, line: u64, mode: Mode) -> Result<Self, String> {
        match mode {
            Mode::Single => Ok(Self::Record(record)),
            Mode::Batch => match Operation::from_value(record.to_operation(line)) {
                Ok(operation) => Ok(Self::Operation(operation.into_encoded())),
                Err(Error::PayloadTooLarge { size, limit }) => Err(format!(
                    "the operation is {size} bytes, over Customer.io's {limit}-byte limit"
                )),
                Err(error) => Err(error.to_string()),
            },
        }
    }
}

fn dispatch(
    in_flight: &mut JoinSet<Outcome>,
    mut unit: Unit,
    plan: &Plan,
    client: Option<&Client<Incoming>>,
    next_seq: &mut u64,
) {
    unit.seq = *next_seq;
    *next_seq += 1;
    // A unit of invalid records only has nothing to send.
    let client = client.filter(|_| unit.valid() > 0).cloned();
    let mode = plan.mode;
    let redactor = plan.redactor.clone();
    in_flight.spawn(async move {
        let delivered_before = unit.valid() as u64;
        match client {
            None => Outcome {
                // Dry run: valid records count as delivered, nothing is sent.
                seq: unit.seq,
                end: unit.end,
                end_line: unit.end_line,
                delivered: delivered_before,
                refused: Vec::new(),
                invalid: unit.invalid,
                fatal: None,
            },
            Some(client) => send_unit(&client, mode, unit, &redactor).await,
        }
    });
}

/// Sends a unit, with a few extra rounds when the stack's own retries ran out on transient
/// failures; a unit that still fails is fatal (not acknowledged, so a resume re-sends it).
async fn send_unit(
    client: &Client<Incoming>,
    mode: Mode,
    unit: Unit,
    redactor: &Redactor,
) -> Outcome {
    let mut outcome = Outcome {
        seq: unit.seq,
        end: unit.end,
        end_line: unit.end_line,
        delivered: 0,
        refused: Vec::new(),
        invalid: unit.invalid,
        fatal: None,
    };
    match mode {
        Mode::Batch => {
            // `Bytes` clones share their buffers: no copy of the payload.
            let operations: Vec<Bytes> = unit
                .operations
                .iter()
                .map(|(_, operation)| operation.clone())
                .collect();
            let (entries, failure) = send_batch(client, &operations, redactor).await;
            // An entry still waiting for an answer when a request failed leaves the unit
            // unacknowledged (fatal): a resume sends it again, harmlessly. Entries settled in
            // earlier requests keep their outcome.
            let failure = failure.map(|error| redactor.describe(&error));
            for ((line, operation), entry) in unit.operations.into_iter().zip(entries) {
                match entry {
                    Some(Settled::Answered(EntryOutcome::Delivered)) => outcome.delivered += 1,
                    Some(Settled::Answered(
                        EntryOutcome::Refused(entry) | EntryOutcome::Retry(entry),
                    )) => {
                        let reason =
                            format!("{} ({}: {})", entry.message, entry.field, entry.reason);
                        let reason = crate::reason::cut(&redactor.redact(&reason));
                        outcome.refused.push((line, text(&operation), reason));
                    }
                    Some(Settled::RefusedAlone(error)) => {
                        let reason = redactor.describe(&error);
                        outcome.refused.push((line, text(&operation), reason));
                    }
                    None => {
                        let why = failure
                            .as_deref()
                            .unwrap_or("an entry's outcome is unknown");
                        outcome.fatal.get_or_insert_with(|| why.to_owned());
                    }
                    Some(Settled::Answered(_)) => {
                        outcome
                            .fatal
                            .get_or_insert_with(|| "an entry's outcome is unknown".into());
                    }
                }
            }
        }
        Mode::Single => {
            for (line, raw, record) in unit.records {
                let result = with_rounds(|| send_one(client, &record, line), redactor).await;
                match result {
                    Ok(()) => outcome.delivered += 1,
                    Err(error) if error.refuses_content() => {
                        outcome.refused.push((line, raw, redactor.describe(&error)))
                    }
                    Err(error) => {
                        outcome.fatal = Some(redactor.describe(&error));
                        break;
                    }
                }
            }
        }
    }
    outcome
}

/// What became of one entry of a batch.
enum Settled {
    /// Customer.io answered for it in the batch's answer (accepted, or refused in a 207).
    Answered(EntryOutcome),
    /// Customer.io refused, for what it carries, a request holding this entry alone.
    RefusedAlone(Error),
}

/// Sends one packed batch ([`Client::send_packed`], in rounds when transient failures outlast
/// the stack's retries) and says what became of each entry, in order: `None` for an entry
/// still waiting for an answer when a request failed (the failure comes back beside).
///
/// - Entries Customer.io refused for a reason that may pass ([`EntryOutcome::Retry`]) are
///   sent again, up to [`UNIT_ROUNDS`] times; those still refused come back as they are.
/// - A request refused whole for what it carries ([`Error::refuses_content`], e.g. a 400 for
///   one malformed operation) is split in halves until the operation at fault is alone: one
///   bad record costs its unit at most about `2 log2(n)` more requests, not `n` dead letters.
///   The refused requests are each answered in full, so none of their entries was delivered.
async fn send_batch(
    client: &Client<Incoming>,
    operations: &[Bytes],
    redactor: &Redactor,
) -> (Vec<Option<Settled>>, Option<Error>) {
    let mut entries: Vec<Option<Settled>> = operations.iter().map(|_| None).collect();
    // Each group is one request: the entries' indices, and the round it is in.
    let mut groups: Vec<(Vec<usize>, u32)> = vec![((0..operations.len()).collect(), 0)];
    while let Some((group, round)) = groups.pop() {
        let batch: Vec<Bytes> = group
            .iter()
            .map(|&index| operations[index].clone())
            .collect();
        let answered = match with_rounds(|| client.send_packed(&batch), redactor).await {
            Ok(BatchOutcome { entries, .. }) => entries,
            Err(error) if error.refuses_content() && group.len() > 1 => {
                tracing::info!(
                    error = %redactor.describe(&error),
                    operations = group.len(),
                    "batch refused whole; splitting it to find the operation at fault"
                );
                let mut first = group;
                let second = first.split_off(first.len() / 2);
                groups.push((second, round));
                groups.push((first, round));
                continue;
            }
            Err(error) if error.refuses_content() => {
                entries[group[0]] = Some(Settled::RefusedAlone(error));
                continue;
            }
            Err(error) => return (entries, Some(error)),
        };
        let mut again = Vec::new();
        for (index, entry) in group.into_iter().zip(answered) {
            if matches!(entry, EntryOutcome::Retry(_)) && round < UNIT_ROUNDS {
                again.push(index);
            }
            entries[index] = Some(Settled::Answered(entry));
        }
        if !again.is_empty() {
            tracing::warn!(
                entries = again.len(),
                round,
                "Customer.io asked for entries again"
            );
            groups.push((again, round + 1));
        }
    }
    // An entry without an answer is never counted delivered.
    let missing = entries
        .iter()
        .any(Option::is_none)
        .then(|| Error::UnreadableAnswer {
            status: http::StatusCode::MULTI_STATUS,
            reason: "fewer outcomes than entries".into(),
        });
    (entries, missing)
}

async fn send_one(client: &Client<Incoming>, record: &Record, line: u64) -> Result<(), Error> {
    match record {
        Record::Person { .. } => {
            let (key, _, attributes) = record
                .person_identity()
                .ok_or_else(|| Error::InvalidInput("a person needs an id or an email".into()))?;
            client.identify(key, &attributes).await
        }
        Record::Event {
            person,
            name,
            timestamp,
            data,
            ..
        } => {
            let mut event = Event::new(name.clone()).data(Value::Object(data.clone()));
            if let Some(id) = record.event_id(line) {
                event = event.id(id);
            }
            if let Some(timestamp) = timestamp {
                event = event.timestamp(*timestamp);
            }
            client.track(person, event).await
        }
    }
}

fn text(operation: &Bytes) -> String {
    String::from_utf8_lossy(operation).into_owned()
}

/// Whether waiting a few rounds can mend `error`: an outage (a refused or reset connection,
/// 5xx, a 429 within [`MAX_SERVER_WAIT`]) can. A server that never answers in time (the stack
/// already retried it), sends an answer too large or unreadable, asks for a longer wait, or
/// refuses the credentials will do the same again: the unit stops the import at once.
fn rounds_help(error: &Error) -> bool {
    match error {
        Error::Throttled {
            retry_after: Some(wait),
        } => *wait <= MAX_SERVER_WAIT,
        Error::Api { status, .. } if *status == http::StatusCode::FORBIDDEN => false,
        Error::Unauthorized
        | Error::TimedOut { .. }
        | Error::AnswerTooLarge { .. }
        | Error::UnreadableAnswer { .. } => false,
        _ => true,
    }
}

/// Retries an operation whose transient failures outlasted the stack's retries, a few rounds
/// with growing, jittered pauses ([`round_backoff`]); unauthorized fails at once (nothing will
/// change).
async fn with_rounds<T, F, Fut>(mut operation: F, redactor: &Redactor) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let backoff = round_backoff();
    // Seeded from the OS only once a round is needed: most operations never need one.
    let mut rng: Option<SmallRng> = None;
    let mut round = 0;
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error)
                if error.refuses_content() || !rounds_help(&error) || round >= UNIT_ROUNDS =>
            {
                return Err(error)
            }
            Err(error) => {
                round += 1;
                let error = redactor.describe(&error);
                tracing::warn!(%error, round, "retrying a unit after transient failures");
                let rng = rng.get_or_insert_with(SmallRng::from_os_rng);
                let pause = backoff.delay(round - 1, backoff.base(), rand::Rng::random(rng));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Resolves at `deadline`; never without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Lines in a file, counted fast, for the progress total.
fn count_lines(path: &std::path::Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0_u8; 256 * 1024];
    let mut lines = 0;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(lines);
        }
        lines += buffer[..read].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn plan(mode: Mode) -> Plan {
        Plan {
            input: None,
            format: Format::Ndjson,
            mode,
            concurrency: 1,
            batch_size: 1000,
            strict: false,
            dry_run: true,
            dead_letter: PathBuf::from("unused.dead.ndjson"),
            checkpoint: None,
            resume: false,
            quiet: true,
            drain_timeout: Duration::from_secs(30),
            redactor: Redactor::default(),
        }
    }

    fn item(line: u64, json: &str) -> Item {
        Item {
            line,
            end: line * 100,
            record: Record::from_json(json),
            raw: json.to_owned(),
        }
    }

    /// Two units failing together through every round: each pause stays within the old
    /// 2ⁿ s bound and above half of it, and the two units' pauses differ (jitter).
    #[tokio::test(start_paused = true)]
    async fn extra_rounds_wait_jittered_bounded_pauses() {
        async fn pauses() -> Vec<Duration> {
            let mut calls = Vec::new();
            let result: Result<(), Error> = with_rounds(
                || {
                    calls.push(tokio::time::Instant::now());
                    async { Err(Error::Transport("connection reset".into())) }
                },
                &Redactor::default(),
            )
            .await;
            assert!(matches!(result, Err(Error::Transport(_))));
            calls.windows(2).map(|pair| pair[1] - pair[0]).collect()
        }
        let (first, second) = tokio::join!(pauses(), pauses());
        for pauses in [&first, &second] {
            assert_eq!(pauses.len(), UNIT_ROUNDS as usize, "{pauses:?}");
            for (round, pause) in pauses.iter().enumerate() {
                let bound = Duration::from_secs(2 << round);
                // The timer wheel rounds a pause up to the next millisecond.
                assert!(
                    *pause >= bound / 2 && *pause <= bound + Duration::from_millis(1),
                    "round {round}: {pause:?} outside {:?}..={bound:?}",
                    bound / 2
                );
            }
        }
        assert_ne!(first, second, "two units paused in lockstep");
    }

    /// Permanent and unauthorized failures take no extra round.
    #[tokio::test(start_paused = true)]
    async fn permanent_failures_take_no_round() {
        for error in [Error::Unauthorized, Error::InvalidInput("no".into())] {
            let started = tokio::time::Instant::now();
            let mut error = Some(error);
            let mut calls = 0;
            let result: Result<(), Error> = with_rounds(
                || {
                    calls += 1;
                    std::future::ready(Err(error.take().expect("called once")))
                },
                &Redactor::default(),
            )
            .await;
            assert!(result.is_err());
            assert_eq!(calls, 1);
            assert_eq!(started.elapsed(), Duration::ZERO);
        }
    }

    /// A run of invalid records fills units by itself, each ending at its last record, so they
    /// are dead-lettered and checkpointed as they come instead of piling up in memory.
    #[test]
    fn invalid_records_fill_units_and_never_wait_for_a_valid_one() {
        let (mut plan, mut unit, mut fatal) = (plan(Mode::Batch), Unit::default(), None);
        plan.batch_size = 100;
        let full: Vec<Unit> = (1..=250)
            .filter_map(|line| {
                pack(
                    &mut unit,
                    item(line, r#"{"type":"person"}"#),
                    &plan,
                    &mut fatal,
                )
            })
            .collect();
        assert_eq!(full.len(), 2);
        for (n, unit) in full.iter().enumerate() {
            assert_eq!(unit.invalid.len(), 100);
            assert_eq!(unit.end_line, 100 * (n as u64 + 1));
            assert_eq!(unit.end, unit.end_line * 100);
        }
        assert_eq!(unit.invalid.len(), 50);
    }

    /// 40 attributes of 1000 bytes are each within Customer.io's limits, but their operation
    /// is over 32 KB: that record alone is invalid, its neighbours still go.
    #[test]
    fn an_operation_over_32_kb_is_invalid_alone() {
        let big: Map<String, Value> = (0..40)
            .map(|n| (format!("a{n}"), Value::String("x".repeat(1000))))
            .collect();
        let big = serde_json::json!({"id": "2", "attributes": big}).to_string();
        let (plan, mut unit, mut fatal) = (plan(Mode::Batch), Unit::default(), None);
        for (line, json) in [
            (1, r#"{"id":"1"}"#),
            (2, big.as_str()),
            (3, r#"{"id":"3"}"#),
        ] {
            assert!(pack(&mut unit, item(line, json), &plan, &mut fatal).is_none());
        }
        assert_eq!(fatal, None);
        assert_eq!(unit.operations.len(), 2);
        assert_eq!(unit.invalid.len(), 1);
        let (line, _, reason) = &unit.invalid[0];
        assert_eq!(*line, 2);
        assert!(reason.contains("32768-byte"), "{reason}");
        assert_eq!((unit.end, unit.end_line), (300, 3));
    }
}
