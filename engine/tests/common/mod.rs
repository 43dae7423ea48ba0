//! Shared fixtures of the engine's suites; the databases come from `carbon_engine::testing`.

#![allow(dead_code)]

use carbon_engine::Engine;
use carbon_engine::amount::{Grams, Points};
use carbon_engine::credit::Credit;
use carbon_engine::directory::Platform;
use carbon_engine::ids::{EquityCid, MasterCid, SubCid};
use carbon_engine::ledger::Asset;
use carbon_engine::order::{Order, OrderInput};
pub use carbon_engine::testing::TestDb;

/// Runs each named story against SQLite and PostgreSQL, each both ways: every settlement in
/// its own transaction, and with group commit (settlements sharing transactions).
#[macro_export]
macro_rules! on_both_backends {
    ($($story:ident),* $(,)?) => {
        $crate::on_backend!(sqlite, $($story),*);
        $crate::on_backend!(postgres, $($story),*);
        $crate::on_backend!(sqlite_grouped, $($story),*);
        $crate::on_backend!(postgres_grouped, $($story),*);
    };
}

/// One module of [`on_both_backends!`]: the stories on one way of opening the store.
#[macro_export]
macro_rules! on_backend {
    ($backend:ident, $($story:ident),*) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    match $crate::common::open(stringify!($backend)).await {
                        Some(db) => super::$story(db).await,
                        None => eprintln!("CARBON_TEST_PG_URL=off: PostgreSQL half skipped"),
                    }
                }
            )*
        }
    };
}

/// The database of a story module of [`on_both_backends!`]; `None` when PostgreSQL is off.
pub async fn open(backend: &str) -> Option<TestDb> {
    use carbon_engine::testing;
    match backend {
        "sqlite" => Some(testing::sqlite().await),
        "sqlite_grouped" => Some(testing::sqlite_with(testing::grouped()).await),
        "postgres" => testing::postgres().await,
        "postgres_grouped" => testing::postgres_with(testing::grouped()).await,
        other => panic!("unknown backend {other}"),
    }
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
    engine.add_provider(&provider, "shop", std::slice::from_ref(&platform.app_id)).await.unwrap();
    let (cid, master) = (sub("cid-1"), master("master-1"));
    engine.map_cid(&platform, &cid, &master).await.unwrap();
    engine.authorize(&platform, &cid).await.unwrap();
    World { engine, platform, provider, cid, master }
}

impl World {
    pub async fn credit_points(&self, class: Asset, points: &str, external_id: &str) {
        let credit =
            Credit::points(self.master.clone(), class, Points::parse("amount", points).unwrap(), external_id, None)
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
        (balances.point_a.to_string(), balances.point_b.to_string(), balances.reduction.to_string())
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
