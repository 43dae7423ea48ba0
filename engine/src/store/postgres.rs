//! The PostgreSQL backend, for several `carbon-host` instances sharing one database.
//!
//! Correct with any number of writing processes: debits are conditional updates evaluated on
//! the latest row version, balance rows are locked in one global order (so writers cannot
//! deadlock), and unique constraints decide which of two writers of one order wins.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

use super::group_commit::GroupCommit;
use super::sql::impl_sql_store;
use super::{StoreError, StoreOptions};

/// Connections per process.
const CONNECTIONS: u32 = 16;
/// How long a caller waits for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(120);

/// PostgreSQL storage.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// The group-commit writer's own connection (the main pool when not grouped).
    batch: PgPool,
    /// The queue of the group-commit writer, when settlements are grouped.
    group: Option<GroupCommit>,
}

impl PgStore {
    /// Connects to `url` and applies migrations as needed (serialized across processes by
    /// the migrator's advisory lock).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, StoreOptions::default()).await
    }

    /// Like [`PgStore::open`], with `options`.
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let pool =
            PgPoolOptions::new().max_connections(CONNECTIONS).acquire_timeout(ACQUIRE_TIMEOUT).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        // The group-commit writer gets a connection of its own: its multi-row statements would
        // otherwise share the pool's connections, and their prepared-statement caches, with
        // the reads of every request.
        let batch = match options.group_commit {
            Some(_) => PgPoolOptions::new().max_connections(1).acquire_timeout(ACQUIRE_TIMEOUT).connect(url).await?,
            None => pool.clone(),
        };
        Ok(PgStore { pool, batch, group: None }.grouped(options))
    }

    /// Whether a batch locks the balance and order rows it reads (`FOR UPDATE`, in key order):
    /// yes, since other instances write the same rows; what the batch decides from them must
    /// hold until it commits, and instances must not deadlock with each other.
    const LOCKS_ROWS_READ: bool = true;

    /// How claimed push streams are locked: rows another instance is claiming are skipped,
    /// not waited for, so instances claim disjoint streams without queuing on each other.
    const CLAIM_LOCK: &'static str = " FOR UPDATE SKIP LOCKED";

    /// How a multi-row insert gives explicit ids to an identity column.
    const EXPLICIT_IDS: &'static str = " OVERRIDING SYSTEM VALUE ";

    /// `n` unused journal ids, for a batch's entries, from the column's own sequence.
    async fn reserve_journal_ids(tx: &mut Transaction<'static, Postgres>, n: usize) -> Result<Vec<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('journal', 'id')) FROM generate_series(1, $1)")
            .bind(n as i64)
            .fetch_all(&mut **tx)
            .await
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// Whether multi-row statements (a text per row count) are kept prepared: no — each row
    /// count would be planned and cached as a statement of its own, and evict the ones that
    /// recur.
    const CACHES_MULTI_ROW_STATEMENTS: bool = false;

    /// A group-commit batch's transaction, on the writer's own connection.
    async fn begin_batch(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.batch.begin().await
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }
}

impl_sql_store!(PgStore, Postgres);
