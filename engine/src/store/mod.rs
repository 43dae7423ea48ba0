//! Storage behind one [`Store`] trait, with two real backends sharing one SQL implementation:
//! [`SqliteStore`] (the embedded default) and [`PgStore`].
//!
//! **Invariant:** every state change is one database transaction. Balances only move through
//! [`PostingSet`]s; debits of person and provider accounts are conditional updates
//! (`… WHERE balance + delta >= 0`), so no interleaving of writers — threads or processes —
//! can overdraw; `(platform, transactionId)` and credit external ids are unique constraints, so
//! a second writer of the same order loses at commit and is told so.

mod batch_plan;
mod group_commit;
mod postgres;
mod sql;
mod sqlite;

use async_trait::async_trait;

pub use group_commit::{BatchOutcome, BatchWriter, GroupCommitConfig, GroupCommitStats, RequestIdWrite, WriteBatch};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::amount::Grams;
use crate::bill::{BillPage, BillQuery};
use crate::credit::Credit;
use crate::directory::{Authorization, MappingOutcome, Platform};
use crate::ids::{AppId, EquityCid, MasterCid, OrderId, PlatformId, SubCid};
use crate::invariants::InvariantReport;
use crate::ledger::{AccountId, Asset, PostingSet};
use crate::order::Order;
use crate::push::{
    AttemptOutcome, BatchFilter, PushBacklog, PushBatch, PushBatchInfo, PushKind, PushPayload, PushStream,
    RequeueOutcome,
};
use crate::rules::Balances;

/// A failure of the database itself; never a business outcome.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The driver or the database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value cannot be read back as the domain type it must be.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A concurrent writer (another instance) stored an order of this batch first; the batch
    /// was rolled back, and the group-commit writer retries its writes one at a time.
    #[error("a concurrent writer settled an order of this batch first")]
    Contended,
    /// The database URL names no supported backend.
    #[error("unsupported database URL `{0}`: use sqlite:PATH or postgres://…")]
    UnsupportedUrl(String),
}

/// Why a settlement could not be written. Only `Store` is a failure; the rest are outcomes the
/// database decided atomically.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// `(platform, transactionId)` is already settled.
    #[error("order already settled")]
    DuplicateOrder,
    /// A person or provider balance would go below zero.
    #[error("{account} would overdraw {asset}")]
    Overdraft {
        /// The account key.
        account: String,
        /// The asset.
        asset: Asset,
    },
    /// The refund's parent is not a purchase of the same platform, cid and provider.
    #[error("parent order not found")]
    ParentNotFound,
    /// The refund exceeds what is left of the parent in some class.
    #[error("refund exceeds what is left of the parent order")]
    RefundExceedsParent,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a credit could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    /// The external id was used before for a different credit.
    #[error("external id already used for a different credit")]
    Conflict,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a cid mapping could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The sub-scene cid is already mapped to another master cid.
    #[error("already mapped to master cid {0}")]
    Conflict(MasterCid),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything one settlement writes, in one transaction.
#[derive(Clone, Debug)]
pub struct SettlementWrite {
    /// The settling platform.
    pub platform_id: PlatformId,
    /// The validated order.
    pub order: Order,
    /// The person's master cid.
    pub master_cid: MasterCid,
    /// [`Order::canonical_hash`], stored for idempotency.
    pub request_hash: String,
    /// Conversions, debit and credit; balanced per asset.
    pub postings: PostingSet,
    /// Reductions converted to pay this order.
    pub converted_reduction: Grams,
    /// The rules version that decided it (a plugin's sha256).
    pub rules_version: Option<String>,
    /// Settlement time, ms (`transactionPaymentTime`).
    pub settled_at_ms: i64,
}

/// What settling an order reads before it plans, in one round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleContext {
    /// The person's authorization of the platform, active or not; `None` if never given.
    pub authorization: Option<Authorization>,
    /// Whether the provider is linked to the platform.
    pub provider_linked: bool,
    /// The request hash of the order, if `(platform, transactionId)` is already settled.
    pub settled_hash: Option<String>,
    /// The person's balances (zero when authorization is `None`).
    pub balances: Balances,
}

/// How a store is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Group settlements and request-id records into shared transactions; `None` writes each
    /// in its own transaction.
    pub group_commit: Option<GroupCommitConfig>,
}

/// The persistence the engine needs. Implemented once in SQL for both backends.
#[async_trait]
pub trait Store: Send + Sync {
    /// Adds a platform; `None` when the app id is taken.
    async fn insert_platform(&self, app_id: &AppId, name: &str, now_ms: i64) -> Result<Option<Platform>, StoreError>;
    /// The platform with this app id.
    async fn platform_by_app_id(&self, app_id: &AppId) -> Result<Option<Platform>, StoreError>;
    /// All platforms, oldest first.
    async fn platforms(&self) -> Result<Vec<Platform>, StoreError>;
    /// Adds a provider or renames it.
    async fn upsert_provider(&self, equity_cid: &EquityCid, name: &str, now_ms: i64) -> Result<(), StoreError>;
    /// Links a provider to a platform (idempotent).
    async fn link_provider(&self, platform_id: PlatformId, equity_cid: &EquityCid) -> Result<(), StoreError>;
    /// Whether the provider is linked to the platform.
    async fn is_provider_linked(&self, platform_id: PlatformId, equity_cid: &EquityCid) -> Result<bool, StoreError>;
    /// Records sub-scene cid → master cid for a platform.
    async fn put_cid_mapping(
        &self,
        platform_id: PlatformId,
        sub_cid: &SubCid,
        master_cid: &MasterCid,
    ) -> Result<MappingOutcome, MappingError>;
    /// The master cid behind a platform's sub-scene cid, if known.
    async fn resolve_cid(&self, platform_id: PlatformId, sub_cid: &SubCid) -> Result<Option<MasterCid>, StoreError>;
    /// Marks the person authorized (or not) for the platform at `at_ms`. When this changes
    /// whether the person is authorized, an authorization push (+1 / -1) is queued in the same
    /// transaction; authorizing again while authorized, or cancelling while not, queues nothing.
    async fn set_authorization(
        &self,
        platform_id: PlatformId,
        sub_cid: &SubCid,
        master_cid: &MasterCid,
        active: bool,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// The authorization record, if the person ever authorized the platform.
    async fn authorization(
        &self,
        platform_id: PlatformId,
        sub_cid: &SubCid,
    ) -> Result<Option<Authorization>, StoreError>;
    /// The person's A, B and reduction balances.
    async fn balances(&self, master_cid: &MasterCid) -> Result<Balances, StoreError>;
    /// One account's balance of one asset (0 when it never moved).
    async fn account_balance(&self, account: &AccountId, asset: Asset) -> Result<i64, StoreError>;
    /// Scenes in which the person was credited reductions, sorted.
    async fn scenes(&self, master_cid: &MasterCid) -> Result<Vec<String>, StoreError>;
    /// Applies a credit once per external id.
    async fn apply_credit(&self, credit: &Credit, now_ms: i64) -> Result<crate::credit::CreditOutcome, CreditError>;
    /// Everything [`SettleContext`] holds about an order of `platform_id`, read at once.
    async fn settle_context(
        &self,
        platform_id: PlatformId,
        sub_cid: &SubCid,
        equity_cid: &EquityCid,
        transaction_id: &OrderId,
    ) -> Result<SettleContext, StoreError>;
    /// The request hash of a settled order, if `(platform, transactionId)` is settled.
    async fn order_hash(&self, platform_id: PlatformId, transaction_id: &OrderId)
    -> Result<Option<String>, StoreError>;
    /// Writes a settlement atomically, or nothing; its bill push is queued in the same
    /// transaction. With group commit the transaction is shared with other settlements, and
    /// this answers once it has committed.
    async fn apply_settlement(&self, write: SettlementWrite) -> Result<(), ApplyError>;
    /// One page of a platform's bills.
    async fn bills(&self, platform_id: PlatformId, query: &BillQuery) -> Result<BillPage, StoreError>;
    /// Checks every ledger invariant over the whole database.
    async fn verify(&self) -> Result<InvariantReport, StoreError>;

    // What the HTTP host shares between instances.

    /// Stores a new server RSA key pair; it becomes the current one.
    async fn insert_server_key(&self, key: &ServerKey, now_ms: i64) -> Result<(), StoreError>;
    /// The newest server key pair, if one was made.
    async fn current_server_key(&self) -> Result<Option<ServerKey>, StoreError>;
    /// Stores an access token by its sha256 (hex).
    async fn insert_access_token(
        &self,
        token_sha256: &str,
        platform_id: PlatformId,
        expires_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// The platform and expiry of a token, by its sha256 (hex).
    async fn access_token(&self, token_sha256: &str) -> Result<Option<(Platform, i64)>, StoreError>;
    /// Records a request id until `expires_at_ms`; `false` when it is recorded and unexpired
    /// at `now_ms` (a replay).
    async fn record_request_id(&self, request_id: &str, now_ms: i64, expires_at_ms: i64) -> Result<bool, StoreError>;
    /// Deletes request ids expired before `requests_before_ms` and tokens expired before
    /// `tokens_before_ms`; returns how many rows went.
    async fn purge_expired(&self, requests_before_ms: i64, tokens_before_ms: i64) -> Result<u64, StoreError>;
    /// Adds a license agreement or changes its URL.
    async fn upsert_license(&self, license: &License, now_ms: i64) -> Result<(), StoreError>;
    /// All license agreements, oldest first.
    async fn licenses(&self) -> Result<Vec<License>, StoreError>;
    /// Sets the platform's push URL of one kind (1 = bills, 2 = authorization), overwriting.
    async fn put_subscription(
        &self,
        platform_id: PlatformId,
        kind: i64,
        notify_url: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Stores a new plugin version for a platform; returns its version number (1, 2, …).
    async fn insert_plugin_version(&self, upload: &PluginUpload<'_>, now_ms: i64) -> Result<i64, StoreError>;
    /// A platform's plugin versions, oldest first (without their bytes).
    async fn plugin_versions(&self, platform_id: PlatformId) -> Result<Vec<PluginVersion>, StoreError>;
    /// The component bytes of a stored plugin, by sha256.
    async fn plugin_wasm(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Changes the configuration text of one version; `false` if there is no such version.
    async fn set_plugin_config(&self, platform_id: PlatformId, version: i64, config: &str) -> Result<bool, StoreError>;
    /// Puts `version` (or, with `None`, the built-in rules) in force for the platform.
    async fn activate_plugin(
        &self,
        platform_id: PlatformId,
        version: Option<i64>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// The platform's activations, newest first: the version each put in force.
    async fn plugin_activations(&self, platform_id: PlatformId) -> Result<Vec<Option<i64>>, StoreError>;
    /// Every platform's plugin in force (platforms on the built-in rules are absent).
    async fn active_plugins(&self) -> Result<Vec<PluginVersion>, StoreError>;
    /// A compiled artifact of a plugin for one engine build: (artifact, its sha256).
    async fn plugin_artifact(&self, sha256: &str, engine_hash: &str) -> Result<Option<(Vec<u8>, String)>, StoreError>;
    /// Keeps a compiled artifact (first writer wins).
    async fn put_plugin_artifact(
        &self,
        sha256: &str,
        engine_hash: &str,
        artifact: &[u8],
        artifact_sha256: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// The platform's push URL of one kind, if subscribed.
    async fn subscription(&self, platform_id: PlatformId, kind: i64) -> Result<Option<String>, StoreError>;

    // Pushes (SPEC §7); see `crate::push`.

    /// Claims up to `limit` streams that have work due at `now_ms` and whose lease is free or
    /// expired, for `lease_ms`, under a new token made from `claimant`. Work is due when the
    /// oldest pending batch is due, or when no batch is pending, rows wait, and sealing is due
    /// (bills: `bill_interval_ms` after the last seal; authorization changes: at once).
    /// PostgreSQL skips streams another instance is claiming (`FOR UPDATE SKIP LOCKED`).
    async fn claim_push_streams(
        &self,
        claimant: &str,
        now_ms: i64,
        lease_ms: i64,
        bill_interval_ms: i64,
        limit: u32,
    ) -> Result<Vec<PushStream>, StoreError>;
    /// Extends the stream's lease to `now_ms + lease_ms`; `false` when the claim was lost.
    async fn renew_push_stream(&self, stream: &PushStream, now_ms: i64, lease_ms: i64) -> Result<bool, StoreError>;
    /// Gives the stream up, so that any instance may claim it when it next has work.
    async fn release_push_stream(&self, stream: &PushStream, now_ms: i64) -> Result<(), StoreError>;
    /// Seals the stream's waiting rows, oldest first, into at most `max_batches` new batches
    /// of at most `kind.rows_per_batch()` rows; returns how many batches were made, or `None`
    /// when the claim was lost. Marks the stream sealed at `now_ms`.
    async fn seal_push_batches(
        &self,
        stream: &PushStream,
        now_ms: i64,
        max_batches: u32,
    ) -> Result<Option<u32>, StoreError>;
    /// The stream's oldest pending batch, due or not.
    async fn head_push_batch(&self, platform_id: PlatformId, kind: PushKind) -> Result<Option<PushBatch>, StoreError>;
    /// What a batch carries, built from the rows it references.
    async fn push_payload(&self, batch_id: i64) -> Result<PushPayload, StoreError>;
    /// Records that the platform acknowledged the batch; `false` if it was no longer pending.
    async fn record_push_delivered(&self, batch_id: i64, now_ms: i64) -> Result<bool, StoreError>;
    /// Records a failed attempt of a batch that had failed `attempts_before` times: it is
    /// retried at `retry_at_ms`, or dead-lettered when that was attempt
    /// [`crate::push::MAX_ATTEMPTS`].
    async fn record_push_failed(
        &self,
        batch_id: i64,
        attempts_before: u32,
        error: &str,
        retry_at_ms: i64,
    ) -> Result<AttemptOutcome, StoreError>;
    /// Batches, newest first, at most `limit`.
    async fn push_batches(&self, filter: BatchFilter, limit: u32) -> Result<Vec<PushBatchInfo>, StoreError>;
    /// Makes a dead-lettered batch pending again, due at `now_ms`, with fresh attempts.
    async fn requeue_push_batch(&self, batch_id: i64, now_ms: i64) -> Result<RequeueOutcome, StoreError>;
    /// Undelivered rows and dead batches per stream that has any.
    async fn push_backlog(&self) -> Result<Vec<PushBacklog>, StoreError>;
    /// What this process's group-commit writer has done; `None` without group commit.
    fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        None
    }
}

/// The server's RSA key pair, as PEM (PKCS#8 private, SubjectPublicKeyInfo public).
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKey {
    /// `-----BEGIN PRIVATE KEY-----` …
    pub private_key_pem: String,
    /// `-----BEGIN PUBLIC KEY-----` …
    pub public_key_pem: String,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey")
            .field("private_key_pem", &"<secret>")
            .field("public_key_pem", &self.public_key_pem)
            .finish()
    }
}

/// Per-call limits stored with a plugin version; `None` uses the host's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StoredLimits {
    /// Fuel (roughly, instructions) per call.
    pub fuel: Option<u64>,
    /// Linear memory cap per call, bytes.
    pub memory_bytes: Option<u64>,
    /// Wall-clock deadline per call, ms.
    pub deadline_ms: Option<u64>,
}

/// A plugin to store as a platform's next version.
#[derive(Clone, Debug)]
pub struct PluginUpload<'a> {
    /// The platform.
    pub platform_id: PlatformId,
    /// sha256 (hex) of `wasm`.
    pub sha256: &'a str,
    /// The component.
    pub wasm: &'a [u8],
    /// The platform's configuration text.
    pub config: &'a str,
    /// Limits, where they differ from the defaults.
    pub limits: StoredLimits,
}

/// A stored plugin version (without its bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginVersion {
    /// The platform.
    pub platform_id: PlatformId,
    /// 1, 2, … per platform.
    pub version: i64,
    /// sha256 (hex) of the component.
    pub sha256: String,
    /// Size of the component, bytes.
    pub size_bytes: i64,
    /// The configuration text.
    pub config: String,
    /// Limits, where they differ from the defaults.
    pub limits: StoredLimits,
    /// When it was installed, ms.
    pub uploaded_at_ms: i64,
}

/// A license agreement platforms show to people (`licenseAgreement`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct License {
    /// Display name.
    pub name: String,
    /// Where the PDF is downloaded.
    pub download_url: String,
}

/// Opens (creating and migrating as needed) the store named by `url`: `sqlite:PATH`,
/// `sqlite://PATH` or `postgres://…` / `postgresql://…`.
/// Each settlement is written in its own transaction.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    open_with(url, StoreOptions::default()).await
}

/// Like [`open`], with `options` (group commit needs a Tokio runtime: it starts a writer task).
pub async fn open_with(url: &str, options: StoreOptions) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open_with(url, options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::open_with(url, options).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}
