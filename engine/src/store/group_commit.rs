//! Group commit: settlements and request-id records queued by many callers are written in one
//! database transaction, so one commit (one `fsync`) serves a whole batch.
//!
//! **Invariants:**
//! - a caller is answered only after the transaction holding its write has committed (or
//!   failed), so a success is as durable as a one-at-a-time commit;
//! - one failing settlement never fails its batch-mates: each is decided in memory, in queue
//!   order, before the batch writes anything (`batch_plan`), and a business refusal
//!   (overdraft, duplicate, refund too large) simply is not written;
//! - when the database fails a whole batch, every write of it is retried alone, so only the
//!   write that the database refuses fails;
//! - a batch holds at most [`GroupCommitConfig::max_batch`] writes and waits at most
//!   [`GroupCommitConfig::max_wait`] for more; with no wait, a batch is whatever queued while
//!   the previous one committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{ApplyError, SettlementWrite, StoreError};

/// How settlements are grouped into transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// Most writes in one transaction; 1 writes each settlement in its own transaction.
    pub max_batch: usize,
    /// Longest a batch waits for more writes once its first arrived.
    pub max_wait: Duration,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig { max_batch: 256, max_wait: Duration::ZERO }
    }
}

/// Records a request id of the HTTP API until it expires (replay protection).
#[derive(Clone, Debug)]
pub struct RequestIdWrite {
    /// The request's id.
    pub request_id: String,
    /// Now, ms: a record expired before this may be reused.
    pub now_ms: i64,
    /// When the record expires, ms.
    pub expires_at_ms: i64,
}

/// What one transaction writes.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Settlements, in queue order.
    pub settlements: Vec<SettlementWrite>,
    /// Request ids to record.
    pub request_ids: Vec<RequestIdWrite>,
}

/// What became of each write of a committed batch, in the batch's order.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Per settlement: written, or the business reason it was not (never `ApplyError::Store`).
    pub settlements: Vec<Result<(), ApplyError>>,
    /// Per request id: `true` when recorded, `false` when it was a replay.
    pub request_ids: Vec<bool>,
}

/// A backend that writes a [`WriteBatch`] in one transaction.
#[async_trait]
pub trait BatchWriter: Send + Sync + 'static {
    /// Writes the batch in one transaction; an `Err` means nothing of it was written.
    async fn write_batch(&self, batch: &WriteBatch) -> Result<BatchOutcome, StoreError>;
}

enum Job {
    Settle(Box<SettlementWrite>, oneshot::Sender<Result<(), ApplyError>>),
    RecordRequestId(RequestIdWrite, oneshot::Sender<Result<bool, StoreError>>),
}

/// What a group-commit writer has done since it started, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Transactions written (a batch retried write by write counts once per retry).
    pub batches: u64,
    /// Settlements written or refused in them.
    pub settlements: u64,
    /// Request ids recorded or found replayed in them.
    pub request_ids: u64,
    /// Time spent writing and committing batches, µs: near the wall time when the writer is
    /// the bottleneck.
    pub busy_micros: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    settlements: AtomicU64,
    request_ids: AtomicU64,
    busy_micros: AtomicU64,
}

impl Counters {
    fn record(&self, batch: &WriteBatch, started: Instant) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.settlements.fetch_add(batch.settlements.len() as u64, Ordering::Relaxed);
        self.request_ids.fetch_add(batch.request_ids.len() as u64, Ordering::Relaxed);
        self.busy_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// The queue in front of one writer task. Cheap to clone; the task ends when the last clone
/// is dropped.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    queue: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Settle(write, _) => write!(f, "Settle({})", write.order.transaction_id),
            Job::RecordRequestId(write, _) => write!(f, "RecordRequestId({})", write.request_id),
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Corrupt("the group-commit writer has stopped".into())
}

impl GroupCommit {
    /// Starts the writer task on the current Tokio runtime.
    pub fn start(writer: impl BatchWriter, config: GroupCommitConfig) -> Self {
        let config = GroupCommitConfig { max_batch: config.max_batch.max(1), ..config };
        let (queue, jobs) = mpsc::channel(config.max_batch * 4);
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(writer, jobs, config, counters.clone()));
        GroupCommit { queue, counters }
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> GroupCommitStats {
        let counters = &self.counters;
        GroupCommitStats {
            batches: counters.batches.load(Ordering::Relaxed),
            settlements: counters.settlements.load(Ordering::Relaxed),
            request_ids: counters.request_ids.load(Ordering::Relaxed),
            busy_micros: counters.busy_micros.load(Ordering::Relaxed),
        }
    }

    /// Writes a settlement in the next batch; answers once that batch has committed.
    pub async fn settle(&self, write: SettlementWrite) -> Result<(), ApplyError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job::Settle(Box::new(write), reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Records a request id in the next batch; answers once that batch has committed.
    pub async fn record_request_id(&self, write: RequestIdWrite) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job::RecordRequestId(write, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(
    writer: impl BatchWriter,
    mut jobs: mpsc::Receiver<Job>,
    config: GroupCommitConfig,
    counters: Arc<Counters>,
) {
    let mut pending = Vec::with_capacity(config.max_batch);
    while let Some(first) = jobs.recv().await {
        pending.push(first);
        while pending.len() < config.max_batch {
            match jobs.try_recv() {
                Ok(job) => pending.push(job),
                Err(_) => break,
            }
        }
        if !config.max_wait.is_zero() && pending.len() < config.max_batch {
            let deadline = tokio::time::Instant::now() + config.max_wait;
            while pending.len() < config.max_batch {
                match tokio::time::timeout_at(deadline, jobs.recv()).await {
                    Ok(Some(job)) => pending.push(job),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        write_and_answer(&writer, std::mem::take(&mut pending), &counters).await;
    }
}

/// Writes `batch` in one transaction and counts it.
async fn write_counted(
    writer: &impl BatchWriter,
    batch: &WriteBatch,
    counters: &Counters,
) -> Result<BatchOutcome, StoreError> {
    let started = Instant::now();
    let written = writer.write_batch(batch).await;
    counters.record(batch, started);
    written
}

/// Writes `jobs` in one transaction and answers each caller; when the database fails the whole
/// batch, writes each job alone so that only the job it refuses fails.
async fn write_and_answer(writer: &impl BatchWriter, jobs: Vec<Job>, counters: &Counters) {
    let (batch, replies) = split(jobs);
    match write_counted(writer, &batch, counters).await {
        Ok(outcome) => answer(replies, outcome),
        Err(err) if replies.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                reply.fail(err);
            }
        }
        Err(_) => {
            let WriteBatch { settlements, request_ids } = batch;
            let mut replies = replies.into_iter();
            for write in settlements {
                let reply = replies.next().expect("one reply per settlement");
                let alone = WriteBatch { settlements: vec![write], request_ids: Vec::new() };
                match write_counted(writer, &alone, counters).await {
                    Ok(outcome) => answer(vec![reply], outcome),
                    Err(err) => reply.fail(err),
                }
            }
            for write in request_ids {
                let reply = replies.next().expect("one reply per request id");
                let alone = WriteBatch { settlements: Vec::new(), request_ids: vec![write] };
                match write_counted(writer, &alone, counters).await {
                    Ok(outcome) => answer(vec![reply], outcome),
                    Err(err) => reply.fail(err),
                }
            }
        }
    }
}

/// A caller waiting for its write.
enum Reply {
    Settle(oneshot::Sender<Result<(), ApplyError>>),
    RecordRequestId(oneshot::Sender<Result<bool, StoreError>>),
}

impl Reply {
    fn fail(self, err: StoreError) {
        // A caller that gave up (its request was cancelled) is not waiting; nothing to do.
        let _ = match self {
            Reply::Settle(reply) => reply.send(Err(ApplyError::Store(err))).map_err(drop),
            Reply::RecordRequestId(reply) => reply.send(Err(err)).map_err(drop),
        };
    }
}

/// The batch and its replies: settlements' replies first, then request ids', in batch order.
fn split(jobs: Vec<Job>) -> (WriteBatch, Vec<Reply>) {
    let mut batch = WriteBatch::default();
    let (mut settle_replies, mut request_replies) = (Vec::new(), Vec::new());
    for job in jobs {
        match job {
            Job::Settle(write, reply) => {
                batch.settlements.push(*write);
                settle_replies.push(Reply::Settle(reply));
            }
            Job::RecordRequestId(write, reply) => {
                batch.request_ids.push(write);
                request_replies.push(Reply::RecordRequestId(reply));
            }
        }
    }
    settle_replies.extend(request_replies);
    (batch, settle_replies)
}

fn answer(replies: Vec<Reply>, outcome: BatchOutcome) {
    let mut settlements = outcome.settlements.into_iter();
    let mut request_ids = outcome.request_ids.into_iter();
    for reply in replies {
        let _ = match reply {
            Reply::Settle(reply) => {
                reply.send(settlements.next().unwrap_or_else(|| Err(missing().into()))).map_err(drop)
            }
            Reply::RecordRequestId(reply) => reply.send(request_ids.next().ok_or_else(missing)).map_err(drop),
        };
    }
}

fn missing() -> StoreError {
    StoreError::Corrupt("a batch answered fewer writes than it was given".into())
}
