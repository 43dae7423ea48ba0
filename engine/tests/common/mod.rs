//! Test harness: real databases for the shared suites.
//!
//! SQLite: a fresh file in a temporary directory. PostgreSQL: a fresh schema in the server
//! named by `CARBON_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`), so
//! tests never share state; schemas left by earlier runs are swept after an hour. Set
//! `CARBON_TEST_PG_URL=off` to skip the PostgreSQL half explicitly on a machine without one.

#![allow(dead_code)]

use std::sync::Arc;

use carbon_engine::Engine;
use carbon_engine::amount::{Grams, Points};
use carbon_engine::credit::Credit;
use carbon_engine::directory::Platform;
use carbon_engine::ids::{EquityCid, MasterCid, SubCid};
use carbon_engine::ledger::Asset;
use carbon_engine::order::{Order, OrderInput};
use carbon_engine::store::{self, Store};
use sqlx::Connection;

/// A store on a fresh database, and how to reach that database directly.
pub struct TestDb {
    pub url: String,
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Opens a second, independent store on the same database (like a second process).
    pub async fn reopen(&self) -> Arc<dyn Store> {
        store::open(&self.url).await.expect("reopen store")
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

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("carbon.db").display());
    let store = store::open(&url).await.expect("open sqlite");
    TestDb {
        url,
        store,
        _dir: Some(dir),
    }
}

/// The PostgreSQL server for tests, or `None` when explicitly switched off.
pub fn pg_base_url() -> Option<String> {
    match std::env::var("CARBON_TEST_PG_URL") {
        Ok(url) if url == "off" => None,
        Ok(url) => Some(url),
        Err(_) => Some("postgres://postgres@127.0.0.1:5432/test".to_owned()),
    }
}

pub async fn postgres() -> Option<TestDb> {
    let base = pg_base_url()?;
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|err| panic!("PostgreSQL at CARBON_TEST_PG_URL={base} is unreachable: {err}"));
    let now = carbon_engine::now_ms() / 1000;
    let schema = format!("carbon_test_{now}_{}", uuid::Uuid::new_v4().simple());
    sweep_old_schemas(&mut admin, now).await;
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    let store = store::open(&url).await.expect("open postgres");
    Some(TestDb { url, store, _dir: None })
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
            let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut *admin)
                .await;
        }
    }
}

/// Runs each named story against SQLite and PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($story:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    super::$story(super::common::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    match super::common::postgres().await {
                        Some(db) => super::$story(db).await,
                        None => eprintln!("CARBON_TEST_PG_URL=off: PostgreSQL half skipped"),
                    }
                }
            )*
        }
    };
}

/// A platform with one linked provider and one authorized person.
pub struct World {
    pub engine: Engine,
    pub platform: Platform,
    pub provider: EquityCid,
    pub cid: SubCid,
    pub master: MasterCid,
}

pub fn sub(cid: &str) -> SubCid {
    SubCid::new(cid).unwrap()
}

pub fn master(cid: &str) -> MasterCid {
    MasterCid::new(cid).unwrap()
}

pub async fn world(engine: Engine) -> World {
    let platform = engine.add_platform("mall", None).await.unwrap();
    let provider = EquityCid::new("provider-1").unwrap();
    engine
        .add_provider(&provider, "shop", std::slice::from_ref(&platform.app_id))
        .await
        .unwrap();
    let (cid, master) = (sub("cid-1"), master("master-1"));
    engine.map_cid(&platform, &cid, &master).await.unwrap();
    engine.authorize(&platform, &cid).await.unwrap();
    World {
        engine,
        platform,
        provider,
        cid,
        master,
    }
}

impl World {
    pub async fn credit_points(&self, class: Asset, points: &str, external_id: &str) {
        let credit = Credit::points(
            self.master.clone(),
            class,
            Points::parse("amount", points).unwrap(),
            external_id,
            None,
        )
        .unwrap();
        self.engine.credit(&credit).await.unwrap();
    }

    pub async fn credit_kg(&self, kg: &str, scene: &str, external_id: &str) {
        let credit = Credit::reduction(
            self.master.clone(),
            Grams::parse_kg("kg", kg).unwrap(),
            scene,
            "SHCER020200120241",
            external_id,
        )
        .unwrap();
        self.engine.credit(&credit).await.unwrap();
    }

    /// An order of this world's person and provider.
    pub fn order(&self, transaction_id: &str, a: Option<&str>, b: Option<&str>) -> Order {
        self.input(transaction_id, None, a, b).validate().unwrap()
    }

    /// A refund of `parent`.
    pub fn refund(&self, transaction_id: &str, parent: &str, a: Option<&str>, b: Option<&str>) -> Order {
        self.input(transaction_id, Some(parent), a, b).validate().unwrap()
    }

    fn input(&self, transaction_id: &str, parent: Option<&str>, a: Option<&str>, b: Option<&str>) -> OrderInput {
        OrderInput {
            cid: self.cid.to_string(),
            equity_cid: self.provider.to_string(),
            transaction_id: transaction_id.into(),
            parent_transaction_id: parent.map(str::to_owned),
            transaction_point_a: a.map(str::to_owned),
            transaction_point_b: b.map(str::to_owned),
            transaction_time_ms: 1_712_629_830_000,
            transaction_type: "0".into(),
            data: vec!["话费充值卡".into(), "充电宝".into()],
            ..OrderInput::default()
        }
    }

    pub async fn balances(&self) -> (String, String, String) {
        let balances = self.engine.point_balances(&self.platform, &self.cid).await.unwrap();
        (
            balances.point_a.to_string(),
            balances.point_b.to_string(),
            balances.reduction.to_string(),
        )
    }

    pub async fn provider_points(&self, asset: Asset) -> String {
        let account = carbon_engine::ledger::AccountId::Provider(self.provider.clone());
        Points(self.engine.store().account_balance(&account, asset).await.unwrap()).to_string()
    }

    pub async fn assert_sound(&self) {
        let report = self.engine.verify().await.unwrap();
        assert!(report.is_sound(), "{report}");
    }
}
