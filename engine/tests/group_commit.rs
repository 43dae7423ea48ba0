//! Group commit on both backends: batch-mates never fail each other, a hot provider's credits
//! are aggregated yet every debit still sees them, and a batch the database refuses is retried
//! write by write. (The whole conformance and concurrency suites also run grouped.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use carbon_engine::ledger::{AccountId, Asset, PostingSetBuilder};
use carbon_engine::order::Order;
use carbon_engine::store::{
    ApplyError, BatchWriter, GroupCommitConfig, PgStore, RequestIdWrite, SettlementWrite, SqliteStore, Store,
    StoreOptions, WriteBatch,
};
use carbon_engine::{Engine, EngineError, Settled};
use common::{TestDb, World, world};
use tokio::task::JoinSet;

on_both_backends!(batch_mates_do_not_fail_each_other, a_batch_the_database_refuses_is_retried_write_by_write);

/// A purchase or refund of the world's person at the world's provider, as the engine would
/// write it (no conversions).
fn write(w: &World, order: Order) -> SettlementWrite {
    let person = AccountId::Person(w.master.clone());
    let provider = AccountId::Provider(w.provider.clone());
    let (from, to, a) = if order.point_a.0 >= 0 {
        (&person, &provider, order.point_a.0)
    } else {
        (&provider, &person, -order.point_a.0)
    };
    SettlementWrite {
        platform_id: w.platform.id,
        request_hash: order.canonical_hash(),
        postings: PostingSetBuilder::default().transfer(from, to, Asset::PointA, a).build(),
        master_cid: w.master.clone(),
        converted_reduction: carbon_engine::amount::Grams::ZERO,
        rules_version: None,
        settled_at_ms: carbon_engine::now_ms(),
        order,
    }
}

/// The same database opened directly, to hand it whole batches.
async fn batch_writer(db: &TestDb) -> Box<dyn BatchWriter> {
    if db.url.starts_with("sqlite:") {
        Box::new(SqliteStore::open(&db.url).await.unwrap())
    } else {
        Box::new(PgStore::open(&db.url).await.unwrap())
    }
}

/// One transaction holding purchases that fit, one that overdraws, a duplicate, a refund of a
/// purchase of the same batch (debiting the provider, whose credit is still deferred), a
/// refund that exceeds its parent, a refund that overdraws the provider after counting against
/// its parent, and a replayed request id: each gets its own outcome, and
/// the database holds exactly the accepted writes.
async fn batch_mates_do_not_fail_each_other(db: TestDb) {
    let w = world(Engine::with_default_rules(db.store.clone())).await;
    w.credit_points(Asset::PointA, "10", "c-1").await;
    // A refund of 1 whose postings take 20 from the provider, which never holds that much.
    let mut overdrawing_refund = write(&w, w.refund("r-3", "p-3", Some("-1"), None));
    overdrawing_refund.postings = PostingSetBuilder::default()
        .transfer(&AccountId::Provider(w.provider.clone()), &AccountId::Person(w.master.clone()), Asset::PointA, 2000)
        .build();
    let batch = WriteBatch {
        settlements: vec![
            write(&w, w.order("p-1", Some("4"), None)),
            write(&w, w.order("p-2", Some("7"), None)), // 6 left: overdraws
            write(&w, w.order("p-1", Some("4"), None)), // duplicate of p-1
            write(&w, w.refund("r-1", "p-1", Some("-4"), None)), // the provider had 0 before this batch
            write(&w, w.refund("r-2", "p-1", Some("-1"), None)), // p-1 is fully refunded by now
            write(&w, w.order("p-3", Some("10"), None)), // 10 again after r-1
            overdrawing_refund,                         // counts against p-3, then overdraws the provider: taken back
            write(&w, w.refund("r-4", "p-3", Some("-10"), None)), // all of p-3: r-3 left no count
        ],
        request_ids: vec![
            RequestIdWrite { request_id: "q-1".into(), now_ms: 1_000, expires_at_ms: 5_000 },
            RequestIdWrite { request_id: "q-1".into(), now_ms: 1_000, expires_at_ms: 5_000 },
        ],
    };
    let outcome = batch_writer(&db).await.write_batch(&batch).await.unwrap();
    let kinds: Vec<&str> = outcome
        .settlements
        .iter()
        .map(|outcome| match outcome {
            Ok(()) => "ok",
            Err(ApplyError::Overdraft { .. }) => "overdraft",
            Err(ApplyError::DuplicateOrder) => "duplicate",
            Err(ApplyError::RefundExceedsParent) => "exceeds",
            Err(other) => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["ok", "overdraft", "duplicate", "ok", "exceeds", "ok", "overdraft", "ok"]);
    assert_eq!(outcome.request_ids, [true, false]);
    assert_eq!(w.balances().await.0, "10");
    assert_eq!(w.provider_points(Asset::PointA).await, "0");
    let orders = db.text("SELECT CAST(COUNT(*) AS TEXT) FROM orders").await.unwrap();
    assert_eq!(orders, "4", "p-1, r-1, p-3 and r-4, nothing of the refused");
    let journal = db.text("SELECT CAST(COUNT(*) AS TEXT) FROM journal WHERE kind <> 'credit'").await.unwrap();
    assert_eq!(journal, "4", "no journal entry of a refused settlement is left");
    let pushes = db.text("SELECT CAST(COUNT(*) AS TEXT) FROM push_outbox WHERE kind = 1").await.unwrap();
    assert_eq!(pushes, "4");
    w.assert_sound().await;
}

/// A write the database itself refuses (its platform does not exist) fails alone; the
/// settlements queued with it are written.
async fn a_batch_the_database_refuses_is_retried_write_by_write(db: TestDb) {
    let grouped =
        StoreOptions { group_commit: Some(GroupCommitConfig { max_batch: 64, max_wait: Duration::from_millis(200) }) };
    let store: Arc<dyn Store> = carbon_engine::store::open_with(&db.url, grouped).await.unwrap();
    let w = world(Engine::with_default_rules(store.clone())).await;
    w.credit_points(Asset::PointA, "100", "c-1").await;
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let mut write = write(&w, w.order(&format!("p-{i}"), Some("1"), None));
        if i == 5 {
            write.platform_id = carbon_engine::ids::PlatformId(999_999);
        }
        let store = store.clone();
        tasks.spawn(async move { (i, store.apply_settlement(write).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (5, outcome) => assert!(matches!(outcome, Err(ApplyError::Store(_))), "{outcome:?}"),
            (i, outcome) => assert!(outcome.is_ok(), "p-{i}: {outcome:?}"),
        }
    }
    assert_eq!(w.balances().await.0, "91");
    assert_eq!(w.provider_points(Asset::PointA).await, "9");
    let stats = store.group_commit_stats().expect("the store groups its writes");
    assert!(stats.settlements >= 10 && stats.batches >= 2, "the failed write is retried or alone: {stats:?}");
    // The engine on the grouped store settles and replays as ever.
    assert_eq!(w.engine.settle(&w.platform, &w.order("p-1", Some("1"), None)).await.unwrap(), Settled::Replayed);
    assert!(matches!(
        w.engine.settle(&w.platform, &w.order("p-1", Some("2"), None)).await,
        Err(EngineError::OrderConflict)
    ));
    w.assert_sound().await;
}
