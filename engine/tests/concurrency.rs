//! Concurrency on both backends: no overdraft, exactly-once, bounded refunds — with writers in
//! one process and with two independent stores on one database (as two processes would be).

mod common;

use carbon_engine::ledger::Asset;
use carbon_engine::{Engine, EngineError, Settled};
use common::{TestDb, World, world};
use tokio::task::JoinSet;

on_both_backends!(
    five_hundred_buyers_for_one_hundred_orders,
    one_order_sent_fifty_times_settles_once,
    twins_of_an_order_costing_everything_replay,
    concurrent_refunds_never_exceed_the_parent,
);

/// Outcomes of many settlements: (new, replayed, insufficient, refund-exceeds).
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    new: usize,
    replayed: usize,
    insufficient: usize,
    refund_exceeds: usize,
}

async fn tally(mut tasks: JoinSet<Result<Settled, EngineError>>) -> Tally {
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task panicked") {
            Ok(Settled::New) => tally.new += 1,
            Ok(Settled::Replayed) => tally.replayed += 1,
            Err(EngineError::InsufficientPoints(_)) => tally.insufficient += 1,
            Err(EngineError::RefundExceedsParent) => tally.refund_exceeds += 1,
            Err(other) => panic!("unexpected outcome: {other:?}"),
        }
    }
    tally
}

/// Two engines over two independently opened stores of the same database.
async fn two_writers(db: &TestDb) -> (World, Engine) {
    let w = world(Engine::with_default_rules(db.store.clone())).await;
    let second = Engine::with_default_rules(db.reopen().await);
    (w, second)
}

async fn five_hundred_buyers_for_one_hundred_orders(db: TestDb) {
    let (w, second) = two_writers(&db).await;
    w.credit_points(Asset::PointA, "150", "c-a").await;
    let mut tasks = JoinSet::new();
    for i in 0..500 {
        let engine = if i % 2 == 0 { w.engine.clone() } else { second.clone() };
        let (platform, order) = (w.platform.clone(), w.order(&format!("t-{i}"), Some("1.5"), None));
        tasks.spawn(async move { engine.settle(&platform, &order).await });
    }
    let tally = tally(tasks).await;
    assert_eq!(tally, Tally { new: 100, insufficient: 400, ..Tally::default() });
    assert_eq!(w.balances().await.0, "0");
    assert_eq!(w.provider_points(Asset::PointA).await, "150");
    let report = w.engine.verify().await.unwrap();
    assert!(report.is_sound(), "{report}");
    assert_eq!(report.orders_checked, 100, "settled orders = successful answers");
}

async fn one_order_sent_fifty_times_settles_once(db: TestDb) {
    let (w, second) = two_writers(&db).await;
    w.credit_points(Asset::PointA, "100", "c-a").await;
    let mut tasks = JoinSet::new();
    for i in 0..50 {
        let engine = if i % 2 == 0 { w.engine.clone() } else { second.clone() };
        let (platform, order) = (w.platform.clone(), w.order("the-order", Some("7"), None));
        tasks.spawn(async move { engine.settle(&platform, &order).await });
    }
    assert_eq!(tally(tasks).await, Tally { new: 1, replayed: 49, ..Tally::default() });
    assert_eq!(w.balances().await.0, "93");
    assert_eq!(w.provider_points(Asset::PointA).await, "7");
    w.assert_sound().await;
}

/// The order takes every point: a twin that plans after the winner's debit finds nothing
/// left, and must still answer the winner's success, not "insufficient points".
async fn twins_of_an_order_costing_everything_replay(db: TestDb) {
    let (w, second) = two_writers(&db).await;
    w.credit_points(Asset::PointA, "7", "c-a").await;
    let mut tasks = JoinSet::new();
    for i in 0..50 {
        let engine = if i % 2 == 0 { w.engine.clone() } else { second.clone() };
        let (platform, order) = (w.platform.clone(), w.order("the-order", Some("7"), None));
        tasks.spawn(async move { engine.settle(&platform, &order).await });
    }
    assert_eq!(tally(tasks).await, Tally { new: 1, replayed: 49, ..Tally::default() });
    assert_eq!(w.balances().await.0, "0");
    w.assert_sound().await;
}

async fn concurrent_refunds_never_exceed_the_parent(db: TestDb) {
    let (w, second) = two_writers(&db).await;
    w.credit_points(Asset::PointA, "100", "c-a").await;
    w.engine.settle(&w.platform, &w.order("p-1", Some("10"), None)).await.unwrap();
    let mut tasks = JoinSet::new();
    for i in 0..50 {
        let engine = if i % 2 == 0 { w.engine.clone() } else { second.clone() };
        let (platform, refund) = (w.platform.clone(), w.refund(&format!("r-{i}"), "p-1", Some("-1"), None));
        tasks.spawn(async move { engine.settle(&platform, &refund).await });
    }
    assert_eq!(tally(tasks).await, Tally { new: 10, refund_exceeds: 40, ..Tally::default() });
    assert_eq!(w.balances().await.0, "100");
    assert_eq!(w.provider_points(Asset::PointA).await, "0");
    w.assert_sound().await;
}
