//! Pushes to platforms (SPEC §7), as the store keeps them: the outbox, batches and streams.
//!
//! Every settled order and every authorization change writes an outbox row in the same
//! database transaction ([`crate::store::Store::apply_settlement`],
//! [`crate::store::Store::set_authorization`]), so nothing is settled without its push being
//! recorded and nothing is pushed that did not commit. A *stream* is one subscription
//! (platform, [`PushKind`]); the instance holding a stream's lease seals its waiting rows into
//! [`PushBatch`]es and sends them in order. Sending (HTTP, signatures, the ack rule) is the
//! host's business; this module only names what the store hands over.

use std::fmt;

use crate::bill::Bill;
use crate::ids::{PlatformId, SubCid};

/// Failed attempts after which a batch is dead-lettered (the seed's 应答机制: three).
pub const MAX_ATTEMPTS: u32 = 3;
/// Most bill rows in one push (the seed: `total` is at most 500).
pub const MAX_BILLS_PER_BATCH: u32 = 500;

/// The two kinds of push, numbered as `subscribe`'s `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PushKind {
    /// Bill rows (type 1), in batches of at most [`MAX_BILLS_PER_BATCH`].
    Bills,
    /// One authorization change (type 2) per push.
    Authorization,
}

impl PushKind {
    /// The wire and storage number: 1 or 2.
    pub fn code(self) -> i64 {
        match self {
            PushKind::Bills => 1,
            PushKind::Authorization => 2,
        }
    }

    /// The kind of a wire or storage number.
    pub fn from_code(code: i64) -> Option<PushKind> {
        match code {
            1 => Some(PushKind::Bills),
            2 => Some(PushKind::Authorization),
            _ => None,
        }
    }

    /// Rows sealed into one batch: 500 bills, or one authorization change.
    pub fn rows_per_batch(self) -> u32 {
        match self {
            PushKind::Bills => MAX_BILLS_PER_BATCH,
            PushKind::Authorization => 1,
        }
    }

    /// A short name for operators and metrics: `bills` or `authorization`.
    pub fn name(self) -> &'static str {
        match self {
            PushKind::Bills => "bills",
            PushKind::Authorization => "authorization",
        }
    }
}

impl fmt::Display for PushKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a batch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// Acknowledged by the platform.
    Delivered,
    /// Failed [`MAX_ATTEMPTS`] times; kept for operators, who may re-queue it.
    Dead,
}

impl BatchStatus {
    /// The storage number: 0, 1 or 2.
    pub fn code(self) -> i64 {
        match self {
            BatchStatus::Pending => 0,
            BatchStatus::Delivered => 1,
            BatchStatus::Dead => 2,
        }
    }

    /// The status of a storage number.
    pub fn from_code(code: i64) -> Option<BatchStatus> {
        match code {
            0 => Some(BatchStatus::Pending),
            1 => Some(BatchStatus::Delivered),
            2 => Some(BatchStatus::Dead),
            _ => None,
        }
    }

    /// `pending`, `delivered` or `dead`.
    pub fn name(self) -> &'static str {
        match self {
            BatchStatus::Pending => "pending",
            BatchStatus::Delivered => "delivered",
            BatchStatus::Dead => "dead",
        }
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stream an instance has claimed: it alone seals and sends this stream's batches until it
/// releases the stream or its lease runs out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushStream {
    /// The platform.
    pub platform_id: PlatformId,
    /// The platform's appId (for operators; never a metrics label).
    pub app_id: String,
    /// Bills or authorization changes.
    pub kind: PushKind,
    /// The subscribed URL, as stored.
    pub notify_url: String,
    /// Whether waiting rows may be sealed into new batches now (for bills: the push interval
    /// has passed since the stream was last sealed).
    pub seal_due: bool,
    /// The claim token; every later call about this stream must present it.
    pub claim: String,
}

/// The oldest pending batch of a stream: the next one to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushBatch {
    /// Batch id (sent as `X-Carbon-Push-Id`, so receivers can drop a repeat).
    pub id: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not to be sent before this time, ms.
    pub next_attempt_at_ms: i64,
}

/// What a batch carries, built at send time from the rows it references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushPayload {
    /// Bill rows in outbox order (the order they were settled in).
    Bills(Vec<Bill>),
    /// One authorization change.
    Authorization {
        /// The platform's own cid of the person.
        cid: SubCid,
        /// 1 authorized, -1 cancelled.
        change: i64,
    },
}

/// How a failed attempt was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The batch waits for another attempt at this time, ms.
    RetryAt(i64),
    /// That was the last attempt: the batch is dead-lettered.
    DeadLettered,
    /// The batch was no longer pending (re-queued or recorded meanwhile); nothing changed.
    Stale,
}

/// What re-queuing a batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequeueOutcome {
    /// The dead batch is pending again with fresh attempts.
    Requeued,
    /// The batch exists but is not dead-lettered.
    NotDead(BatchStatus),
    /// No batch has this id.
    Unknown,
}

/// A batch as operators see it (`carbon-host push list`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushBatchInfo {
    /// Batch id.
    pub id: i64,
    /// The platform's engine key.
    pub platform_id: PlatformId,
    /// The platform's appId.
    pub app_id: String,
    /// Bills or authorization.
    pub kind: PushKind,
    /// Pending, delivered or dead.
    pub status: BatchStatus,
    /// Rows carried.
    pub rows: u64,
    /// Failed attempts so far (reset by a re-queue).
    pub attempts: u32,
    /// When it was sealed, ms.
    pub created_at_ms: i64,
    /// When it is due next (pending batches), ms.
    pub next_attempt_at_ms: i64,
    /// When it was acknowledged, ms.
    pub delivered_at_ms: Option<i64>,
    /// Why the last failed attempt failed.
    pub last_error: Option<String>,
}

/// Which batches to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchFilter {
    /// Every batch.
    All,
    /// Only dead-lettered ones.
    Dead,
}

/// The undelivered work of one stream, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushBacklog {
    /// The platform's engine key.
    pub platform_id: PlatformId,
    /// Bills or authorization.
    pub kind: PushKind,
    /// Rows waiting or in pending batches.
    pub pending_rows: u64,
    /// Creation time of the oldest of them, ms.
    pub oldest_pending_at_ms: Option<i64>,
    /// Dead-lettered batches.
    pub dead_batches: u64,
}

/// The wait before the attempt after `failed_attempts` failures: `base`, then twice that, …
pub fn backoff_ms(base_ms: i64, failed_attempts: u32) -> i64 {
    let doublings = failed_attempts.saturating_sub(1).min(16);
    base_ms.saturating_mul(1_i64 << doublings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for kind in [PushKind::Bills, PushKind::Authorization] {
            assert_eq!(PushKind::from_code(kind.code()), Some(kind));
        }
        for status in [BatchStatus::Pending, BatchStatus::Delivered, BatchStatus::Dead] {
            assert_eq!(BatchStatus::from_code(status.code()), Some(status));
        }
        assert_eq!(PushKind::from_code(3), None);
    }

    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff_ms(1000, 1), 1000);
        assert_eq!(backoff_ms(1000, 2), 2000);
        assert_eq!(backoff_ms(1000, 3), 4000);
        assert_eq!(backoff_ms(i64::MAX, 40), i64::MAX);
    }
}
