//! Real databases for tests (feature `testing`), shared by the engine's and the host's suites.
//!
//! SQLite: a fresh file in a temporary directory. PostgreSQL: a fresh schema in the server
//! named by `CARBON_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`), so
//! tests never share state; schemas left by earlier runs are swept after an hour. Set
//! `CARBON_TEST_PG_URL=off` to skip the PostgreSQL half explicitly on a machine without one.

#![allow(missing_docs)]

use std::sync::Arc;

use sqlx::Connection;

use crate::store::{self, GroupCommitConfig, Store, StoreOptions};

/// A store on a fresh database, and how to reach that database directly.
pub struct TestDb {
    pub url: String,
    pub store: Arc<dyn Store>,
    /// How `store` was opened; [`TestDb::reopen`] opens the same way.
    pub options: StoreOptions,
    _dir: Option<tempfile::TempDir>,
}

/// Group commit as `carbon-host serve` runs it by default.
pub fn serving() -> StoreOptions {
    StoreOptions { group_commit: Some(GroupCommitConfig::default()) }
}

/// Group commit as the suites run it: batches form under concurrency and wait a little for
/// batch-mates, so in-batch decisions and shared transactions are exercised.
pub fn grouped() -> StoreOptions {
    StoreOptions {
        group_commit: Some(GroupCommitConfig { max_batch: 64, max_wait: std::time::Duration::from_millis(1) }),
    }
}

impl TestDb {
    /// Opens a second, independent store on the same database (like a second process).
    pub async fn reopen(&self) -> Arc<dyn Store> {
        store::open_with(&self.url, self.options).await.expect("reopen store")
    }

    /// The first column of the first row of `sql`, as text (to inspect what the engine stored).
    pub async fn text(&self, sql: &str) -> Option<String> {
        use sqlx::Row as _;
        if self.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            let row = sqlx::query(sql).fetch_optional(&mut conn).await.unwrap();
            row.and_then(|row| row.try_get::<Option<String>, _>(0).unwrap())
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            let row = sqlx::query(sql).fetch_optional(&mut conn).await.unwrap();
            row.and_then(|row| row.try_get::<Option<String>, _>(0).unwrap())
        }
    }

    /// Another handle on the same database with its own store, for a second server; the
    /// database lives as long as this original does.
    pub async fn share(&self) -> TestDb {
        TestDb { url: self.url.clone(), store: self.reopen().await, options: self.options, _dir: None }
    }

    /// Runs raw SQL on the database, bypassing the engine (to simulate corruption).
    pub async fn raw(&self, sql: &str) {
        if self.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        }
    }
}

/// A fresh SQLite file; each settlement in its own transaction.
pub async fn sqlite() -> TestDb {
    sqlite_with(StoreOptions::default()).await
}

/// A fresh SQLite file opened with `options`.
pub async fn sqlite_with(options: StoreOptions) -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("carbon.db").display());
    let store = store::open_with(&url, options).await.expect("open sqlite");
    TestDb { url, store, options, _dir: Some(dir) }
}

/// The PostgreSQL server for tests, or `None` when explicitly switched off.
pub fn pg_base_url() -> Option<String> {
    match std::env::var("CARBON_TEST_PG_URL") {
        Ok(url) if url == "off" => None,
        Ok(url) => Some(url),
        Err(_) => Some("postgres://postgres@127.0.0.1:5432/test".to_owned()),
    }
}

/// A fresh PostgreSQL schema; each settlement in its own transaction.
pub async fn postgres() -> Option<TestDb> {
    postgres_with(StoreOptions::default()).await
}

/// A fresh PostgreSQL schema opened with `options`, or `None` when switched off.
pub async fn postgres_with(options: StoreOptions) -> Option<TestDb> {
    let base = pg_base_url()?;
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|err| panic!("PostgreSQL at CARBON_TEST_PG_URL={base} is unreachable: {err}"));
    let now = crate::now_ms() / 1000;
    let schema = format!("carbon_test_{now}_{}", uuid::Uuid::new_v4().simple());
    sweep_old_schemas(&mut admin, now).await;
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(&mut admin).await.unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    let store = store::open_with(&url, options).await.expect("open postgres");
    Some(TestDb { url, store, options, _dir: None })
}

async fn sweep_old_schemas(admin: &mut sqlx::PgConnection, now_secs: i64) {
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'carbon\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap();
    for (name,) in names {
        let created: Option<i64> = name.split('_').nth(2).and_then(|secs| secs.parse().ok());
        if created.is_some_and(|secs| now_secs - secs > 3600) {
            let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).execute(&mut *admin).await;
        }
    }
}
