//! The embedded default backend: one SQLite file in WAL mode.
//!
//! **Architecture invariant:** all writes of a process go through one connection (`writer`,
//! a pool of size one), so settlements queue in the process instead of failing with
//! `database is locked`; write transactions start with `BEGIN IMMEDIATE` and a long busy
//! timeout, so another process (the operator CLI) waits its turn instead of failing.
//! Reads use their own pool and never block the writer (WAL).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::group_commit::GroupCommit;
use super::sql::impl_sql_store;
use super::{StoreError, StoreOptions};

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a caller waits for this process's writer.
const WRITER_QUEUE_TIMEOUT: Duration = Duration::from_secs(120);
/// Read connections per process.
const READERS: u32 = 4;

/// SQLite storage.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The queue of the group-commit writer, when settlements are grouped.
    group: Option<GroupCommit>,
}

impl SqliteStore {
    /// Opens `url` (`sqlite:PATH` or `sqlite://PATH`), creating the file and applying
    /// migrations as needed. Durable: WAL with `synchronous = FULL`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, StoreOptions::default()).await
    }

    /// Like [`SqliteStore::open`], with `options`.
    pub async fn open_with(url: &str, store_options: StoreOptions) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // An embedded connection cannot break, so none is pinged before use.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(WRITER_QUEUE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .test_before_acquire(false)
            .acquire_timeout(WRITER_QUEUE_TIMEOUT)
            .connect_with(options)
            .await?;
        let store = SqliteStore { writer, reader, group: None };
        Ok(store.grouped(store_options))
    }

    /// Whether a batch locks the balance and order rows it reads: no need, one writer at a time.
    const LOCKS_ROWS_READ: bool = false;

    /// How claimed push streams are locked: not at all, since SQLite has one writer at a time
    /// and the claim runs inside a write transaction, so no other writer can claim meanwhile.
    const CLAIM_LOCK: &'static str = "";

    /// How a multi-row insert gives explicit ids: no clause needed.
    const EXPLICIT_IDS: &'static str = " ";

    /// `n` unused journal ids, for a batch's entries: above every id used so far (the
    /// `AUTOINCREMENT` counter included), safe because this transaction holds the write lock.
    async fn reserve_journal_ids(tx: &mut Transaction<'static, Sqlite>, n: usize) -> Result<Vec<i64>, sqlx::Error> {
        let last: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(last), 0) FROM (SELECT MAX(id) AS last FROM journal \
             UNION ALL SELECT seq AS last FROM sqlite_sequence WHERE name = 'journal')",
        )
        .fetch_one(&mut **tx)
        .await?;
        Ok((1..=n as i64).map(|offset| last + offset).collect())
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Whether multi-row statements (a text per row count) are kept prepared: yes, the writer
    /// connection is the only one that runs them, and preparing is in-process anyway.
    const CACHES_MULTI_ROW_STATEMENTS: bool = true;

    /// A group-commit batch's transaction: on the one writer connection, like every write.
    async fn begin_batch(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_write().await
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }
}

impl_sql_store!(SqliteStore, Sqlite);
