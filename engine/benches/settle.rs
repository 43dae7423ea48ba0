//! Engine-level settlement throughput, no HTTP: `cargo bench -p carbon-engine --bench settle`.
//!
//! Each iteration settles `CALLERS` concurrent purchases of distinct people at one provider
//! (the hot-provider case) through [`Engine::settle`], on a durable SQLite file
//! (`synchronous = FULL`) and — when `CARBON_TEST_PG_URL` reaches a server — on PostgreSQL, once
//! with every settlement in its own transaction and once with group commit as `serve` runs it.
//! Criterion reports elements (settlements) per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use carbon_engine::amount::Points;
use carbon_engine::credit::Credit;
use carbon_engine::directory::Platform;
use carbon_engine::ids::{EquityCid, MasterCid, SubCid};
use carbon_engine::ledger::Asset;
use carbon_engine::order::{Order, OrderInput};
use carbon_engine::store::StoreOptions;
use carbon_engine::testing::{self, TestDb};
use carbon_engine::{Engine, Settled};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Concurrent callers per iteration (the load generator's default connection count).
const CALLERS: usize = 64;

struct Bench {
    _db: TestDb,
    engine: Engine,
    platform: Platform,
    next_order: AtomicU64,
}

async fn setup(db: TestDb) -> Bench {
    let engine = Engine::with_default_rules(db.store.clone());
    let platform = engine.add_platform("bench", None).await.unwrap();
    let provider = EquityCid::new("provider-hot").unwrap();
    engine.add_provider(&provider, "shop", std::slice::from_ref(&platform.app_id)).await.unwrap();
    for person in 0..CALLERS {
        let (sub, master) =
            (SubCid::new(format!("cid-{person}")).unwrap(), MasterCid::new(format!("m-{person}")).unwrap());
        engine.map_cid(&platform, &sub, &master).await.unwrap();
        engine.authorize(&platform, &sub).await.unwrap();
        let points = Points::parse("amount", "100000000").unwrap();
        let credit = Credit::points(master, Asset::PointA, points, format!("credit-{person}"), None).unwrap();
        engine.credit(&credit).await.unwrap();
    }
    Bench { _db: db, engine, platform, next_order: AtomicU64::new(0) }
}

fn order(person: usize, id: u64) -> Order {
    OrderInput {
        cid: format!("cid-{person}"),
        equity_cid: "provider-hot".into(),
        transaction_id: format!("o-{id}"),
        parent_transaction_id: None,
        transaction_point_a: Some("1.25".into()),
        transaction_point_b: None,
        transaction_time_ms: carbon_engine::now_ms(),
        transaction_type: "1".into(),
        convert_type: None,
        data: vec!["coffee".into()],
    }
    .validate()
    .unwrap()
}

/// Settles `CALLERS` purchases at once; returns how long it took.
async fn round(bench: &Arc<Bench>) -> Duration {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for person in 0..CALLERS {
        let bench = bench.clone();
        let id = bench.next_order.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move { bench.engine.settle(&bench.platform, &order(person, id)).await });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.unwrap().unwrap(), Settled::New);
    }
    started.elapsed()
}

fn settle(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("settle");
    group.throughput(Throughput::Elements(CALLERS as u64)).sample_size(20).measurement_time(Duration::from_secs(10));
    let ways = [("one_at_a_time", StoreOptions::default()), ("grouped", testing::serving())];
    for (way, options) in ways {
        let sqlite = runtime.block_on(async { Arc::new(setup(testing::sqlite_with(options).await).await) });
        group.bench_function(format!("sqlite/{way}"), |b| {
            b.iter_custom(|iters| runtime.block_on(async { rounds(&sqlite, iters).await }))
        });
        let postgres = runtime.block_on(async {
            match testing::postgres_with(options).await {
                Some(db) => Some(Arc::new(setup(db).await)),
                None => None,
            }
        });
        if let Some(postgres) = postgres {
            group.bench_function(format!("postgres/{way}"), |b| {
                b.iter_custom(|iters| runtime.block_on(async { rounds(&postgres, iters).await }))
            });
        }
    }
    group.finish();
}

async fn rounds(bench: &Arc<Bench>, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        total += round(bench).await;
    }
    total
}

criterion_group!(benches, settle);
criterion_main!(benches);
