//! The storage conformance suite: every story runs against SQLite and PostgreSQL.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use carbon_engine::amount::{Grams, Points};
use carbon_engine::bill::BillQuery;
use carbon_engine::credit::{Credit, CreditOutcome};
use carbon_engine::directory::{MappingOutcome, Platform};
use carbon_engine::ids::{AppId, EquityCid};
use carbon_engine::invariants::Violation;
use carbon_engine::ledger::Asset;
use carbon_engine::order::Order;
use carbon_engine::push::{
    AttemptOutcome, BatchFilter, BatchStatus, PushKind, PushPayload, PushStream, RequeueOutcome,
};
use carbon_engine::rules::{Balances, Conversion, Rejection, Rules, RulesError, RulesSource};
use carbon_engine::{Engine, EngineError, Settled};
use common::{TestDb, master, sub, world};

on_both_backends!(
    onboarding_refuses_duplicates_and_unknowns,
    cid_mappings_are_idempotent_and_refuse_conflicts,
    authorization_gates_every_person_operation,
    credits_are_idempotent_by_external_id,
    purchase_moves_points_from_person_to_provider,
    same_order_replays_and_different_order_conflicts,
    insufficient_points_change_nothing,
    reductions_cover_a_shortfall_only_when_asked,
    refunds_are_bounded_by_their_parent,
    rules_and_links_are_enforced,
    bills_are_filtered_paged_and_private,
    deep_bill_pages_are_refused_and_totals_capped,
    untrusted_rules_cannot_break_the_ledger,
    point_conversions_apply_before_the_debit,
    verify_reports_every_kind_of_breach,
    host_state_is_shared_through_the_store,
    the_outbox_is_written_with_the_change_it_announces,
    push_streams_are_claimed_once_and_leases_expire,
    failed_batches_retry_then_die_and_requeue,
    concurrent_claimers_take_each_stream_once,
);

fn engine(db: &TestDb) -> Engine {
    Engine::with_default_rules(db.store.clone())
}

async fn onboarding_refuses_duplicates_and_unknowns(db: TestDb) {
    let engine = engine(&db);
    let app_id = AppId::new("app-1").unwrap();
    let platform = engine.add_platform("mall", Some(app_id.clone())).await.unwrap();
    assert_eq!(platform.app_id, app_id);
    assert!(matches!(engine.add_platform("again", Some(app_id.clone())).await, Err(EngineError::AlreadyExists(_))));
    assert!(matches!(engine.add_platform(" ", None).await, Err(EngineError::InvalidField(_))));
    let generated = engine.add_platform("other", None).await.unwrap();
    assert_ne!(generated.app_id, app_id);
    assert_eq!(engine.store().platforms().await.unwrap(), vec![platform.clone(), generated]);

    let provider = EquityCid::new("e-1").unwrap();
    let unknown = AppId::new("nope").unwrap();
    let result = engine.add_provider(&provider, "shop", &[app_id.clone(), unknown]).await;
    assert!(matches!(result, Err(EngineError::UnknownPlatform(name)) if name == "nope"));
    // Nothing was half-applied: the provider is not linked to the known platform either.
    assert!(!engine.store().is_provider_linked(platform.id, &provider).await.unwrap());
    engine.add_provider(&provider, "shop", std::slice::from_ref(&app_id)).await.unwrap();
    engine.add_provider(&provider, "shop renamed", &[app_id]).await.unwrap();
    assert!(engine.store().is_provider_linked(platform.id, &provider).await.unwrap());
}

async fn cid_mappings_are_idempotent_and_refuse_conflicts(db: TestDb) {
    let engine = engine(&db);
    let platform = engine.add_platform("mall", None).await.unwrap();
    let other = engine.add_platform("other", None).await.unwrap();
    assert_eq!(engine.map_cid(&platform, &sub("c1"), &master("m1")).await.unwrap(), MappingOutcome::Inserted);
    assert_eq!(engine.map_cid(&platform, &sub("c1"), &master("m1")).await.unwrap(), MappingOutcome::Unchanged);
    assert!(matches!(engine.map_cid(&platform, &sub("c1"), &master("m2")).await, Err(EngineError::Conflict(_))));
    // The same person has a different cid under another platform.
    engine.map_cid(&other, &sub("c9"), &master("m1")).await.unwrap();
    assert_eq!(engine.resolve_cid(&platform, &sub("c1")).await.unwrap(), Some(master("m1")));
    assert_eq!(engine.resolve_cid(&other, &sub("c1")).await.unwrap(), None);
}

async fn authorization_gates_every_person_operation(db: TestDb) {
    let engine = engine(&db);
    let platform = engine.add_platform("mall", None).await.unwrap();
    assert!(matches!(engine.authorize(&platform, &sub("unknown")).await, Err(EngineError::UnknownCid)));
    engine.map_cid(&platform, &sub("c1"), &master("m1")).await.unwrap();
    assert!(matches!(engine.point_balances(&platform, &sub("c1")).await, Err(EngineError::NotAuthorized)));
    let authorization = engine.authorize(&platform, &sub("c1")).await.unwrap();
    assert!(authorization.active);
    assert_eq!(authorization.master_cid, master("m1"));
    assert_eq!(engine.point_balances(&platform, &sub("c1")).await.unwrap(), Balances::default());

    let cancelled = engine.cancel_authorization(&platform, &sub("c1")).await.unwrap();
    assert!(!cancelled.active);
    let stored = engine.store().authorization(platform.id, &sub("c1")).await.unwrap().unwrap();
    assert!(!stored.active && stored.cancelled_at_ms.is_some());
    assert!(matches!(engine.scenes(&platform, &sub("c1")).await, Err(EngineError::NotAuthorized)));
    assert!(matches!(engine.cancel_authorization(&platform, &sub("c1")).await, Err(EngineError::NotAuthorized)));
    engine.authorize(&platform, &sub("c1")).await.unwrap();
    assert!(engine.scenes(&platform, &sub("c1")).await.unwrap().is_empty());
}

async fn credits_are_idempotent_by_external_id(db: TestDb) {
    let w = world(engine(&db)).await;
    let credit =
        Credit::points(w.master.clone(), Asset::PointA, Points::whole(50), "x-1", Some("地铁".into())).unwrap();
    assert_eq!(w.engine.credit(&credit).await.unwrap(), CreditOutcome::Credited);
    assert_eq!(w.engine.credit(&credit).await.unwrap(), CreditOutcome::AlreadyCredited);
    let reused = Credit::points(w.master.clone(), Asset::PointA, Points::whole(51), "x-1", None).unwrap();
    assert!(matches!(w.engine.credit(&reused).await, Err(EngineError::Conflict(_))));
    w.credit_points(Asset::PointB, "2.5", "x-2").await;
    w.credit_kg("1.25", "单车", "r-1").await;
    w.credit_kg("0.5", "地铁", "r-2").await;
    w.credit_kg("0.5", "地铁", "r-3").await;
    assert_eq!(w.balances().await, ("50".into(), "2.5".into(), "2.25".into()));
    // Points credited with a scene are not reductions: only reduction scenes are listed.
    assert_eq!(w.engine.scenes(&w.platform, &w.cid).await.unwrap(), vec!["单车".to_owned(), "地铁".to_owned()]);
    assert!(Credit::points(w.master.clone(), Asset::Reduction, Points::whole(1), "x", None).is_err());
    assert!(Credit::points(w.master.clone(), Asset::PointA, Points::whole(0), "x", None).is_err());
    assert!(Credit::reduction(w.master.clone(), Grams(5), "", "m", "x").is_err());
    w.assert_sound().await;
}

async fn purchase_moves_points_from_person_to_provider(db: TestDb) {
    let w = world(engine(&db)).await;
    w.credit_points(Asset::PointA, "100", "c-a").await;
    w.credit_points(Asset::PointB, "20", "c-b").await;
    let order = w.order("t-1", Some("12.5"), Some("0.05"));
    assert_eq!(w.engine.settle(&w.platform, &order).await.unwrap(), Settled::New);
    assert_eq!(w.balances().await, ("87.5".into(), "19.95".into(), "0".into()));
    assert_eq!(w.provider_points(Asset::PointA).await, "12.5");
    assert_eq!(w.provider_points(Asset::PointB).await, "0.05");
    let page = w.engine.bills(&w.platform, &all_bills()).await.unwrap();
    assert_eq!(page.total, 1);
    let bill = &page.bills[0];
    assert_eq!((bill.transaction_id.as_str(), bill.amount().to_string()), ("t-1", "12.55".to_owned()));
    assert_eq!(bill.cid, w.cid);
    assert!(bill.settled_at_ms > 0);
    w.assert_sound().await;
}

async fn same_order_replays_and_different_order_conflicts(db: TestDb) {
    let w = world(engine(&db)).await;
    w.credit_points(Asset::PointA, "100", "c").await;
    let order = w.order("t-1", Some("10"), None);
    assert_eq!(w.engine.settle(&w.platform, &order).await.unwrap(), Settled::New);
    assert_eq!(w.engine.settle(&w.platform, &order).await.unwrap(), Settled::Replayed);
    // The same meaning spelled differently is the same order.
    let respelled = w.order("t-1", Some("10.00"), Some("0"));
    assert_eq!(w.engine.settle(&w.platform, &respelled).await.unwrap(), Settled::Replayed);
    let different = w.order("t-1", Some("11"), None);
    assert!(matches!(w.engine.settle(&w.platform, &different).await, Err(EngineError::OrderConflict)));
    assert_eq!(w.balances().await.0, "90");
    // Another platform may use the same transaction id for its own order.
    let other = w.engine.add_platform("other", None).await.unwrap();
    w.engine.add_provider(&w.provider, "shop", std::slice::from_ref(&other.app_id)).await.unwrap();
    w.engine.map_cid(&other, &sub("other-cid"), &w.master).await.unwrap();
    w.engine.authorize(&other, &sub("other-cid")).await.unwrap();
    let mut theirs = w.order("t-1", Some("10"), None);
    theirs.cid = sub("other-cid");
    assert_eq!(w.engine.settle(&other, &theirs).await.unwrap(), Settled::New);
    assert_eq!(w.balances().await.0, "80");
    w.assert_sound().await;
}

async fn insufficient_points_change_nothing(db: TestDb) {
    let w = world(engine(&db)).await;
    w.credit_points(Asset::PointA, "10", "c-a").await;
    w.credit_points(Asset::PointB, "10", "c-b").await;
    let before = w.balances().await;
    for (id, a, b) in [("t-1", Some("10.01"), None), ("t-2", None, Some("10.01")), ("t-3", Some("5"), Some("11"))] {
        let result = w.engine.settle(&w.platform, &w.order(id, a, b)).await;
        assert!(matches!(result, Err(EngineError::InsufficientPoints(_))), "{id}: {result:?}");
    }
    assert_eq!(w.balances().await, before);
    assert_eq!(w.engine.bills(&w.platform, &all_bills()).await.unwrap().total, 0);
    // A failed order id is not burnt: it can settle once the person can pay.
    w.credit_points(Asset::PointA, "0.01", "c-more").await;
    assert_eq!(w.engine.settle(&w.platform, &w.order("t-1", Some("10.01"), None)).await.unwrap(), Settled::New);
    w.assert_sound().await;
}

async fn reductions_cover_a_shortfall_only_when_asked(db: TestDb) {
    let w = world(engine(&db)).await;
    w.credit_points(Asset::PointA, "5", "c-a").await;
    w.credit_kg("1", "单车", "r-1").await;
    let mut order = w.order("t-1", Some("10"), None);
    assert!(matches!(w.engine.settle(&w.platform, &order).await, Err(EngineError::InsufficientPoints(_))));
    order.auto_convert = true;
    assert_eq!(w.engine.settle(&w.platform, &order).await.unwrap(), Settled::New);
    // Short by 5 points at 10 points per kg: exactly 0.5 kg converted, nothing left over.
    assert_eq!(w.balances().await, ("0".into(), "0".into(), "0.5".into()));
    assert_eq!(w.provider_points(Asset::PointA).await, "10");
    let bill = w.engine.bills(&w.platform, &all_bills()).await.unwrap().bills.remove(0);
    assert_eq!(bill.converted_reduction, Grams(500));
    // Reductions convert to class A only: a class B shortfall stays short.
    let mut b_order = w.order("t-2", None, Some("1"));
    b_order.auto_convert = true;
    assert!(matches!(w.engine.settle(&w.platform, &b_order).await, Err(EngineError::InsufficientPoints(_))));
    // More than the reductions can cover.
    let mut big = w.order("t-3", Some("5.01"), None);
    big.auto_convert = true;
    assert!(matches!(w.engine.settle(&w.platform, &big).await, Err(EngineError::InsufficientPoints(_))));
    assert_eq!(w.balances().await.2, "0.5");
    w.assert_sound().await;
}

async fn refunds_are_bounded_by_their_parent(db: TestDb) {
    let w = world(engine(&db)).await;
    w.credit_points(Asset::PointA, "100", "c-a").await;
    w.credit_points(Asset::PointB, "100", "c-b").await;
    w.engine.settle(&w.platform, &w.order("p-1", Some("30"), Some("10"))).await.unwrap();
    let refund = w.refund("r-1", "p-1", Some("-20"), None);
    assert_eq!(w.engine.settle(&w.platform, &refund).await.unwrap(), Settled::New);
    assert_eq!(w.engine.settle(&w.platform, &refund).await.unwrap(), Settled::Replayed);
    assert_eq!(w.balances().await, ("90".into(), "90".into(), "0".into()));
    let too_much = w.refund("r-2", "p-1", Some("-10.01"), None);
    assert!(matches!(w.engine.settle(&w.platform, &too_much).await, Err(EngineError::RefundExceedsParent)));
    let exact = w.refund("r-3", "p-1", Some("-10"), Some("-10"));
    assert_eq!(w.engine.settle(&w.platform, &exact).await.unwrap(), Settled::New);
    let nothing_left = w.refund("r-4", "p-1", None, Some("-0.01"));
    assert!(matches!(w.engine.settle(&w.platform, &nothing_left).await, Err(EngineError::RefundExceedsParent)));
    // Parents that are not a purchase of this platform, cid and provider.
    let unknown = w.refund("r-5", "nope", Some("-1"), None);
    assert!(matches!(w.engine.settle(&w.platform, &unknown).await, Err(EngineError::ParentNotFound)));
    let refund_of_refund = w.refund("r-6", "r-1", Some("-1"), None);
    assert!(matches!(w.engine.settle(&w.platform, &refund_of_refund).await, Err(EngineError::ParentNotFound)));
    w.engine.map_cid(&w.platform, &sub("cid-2"), &master("master-2")).await.unwrap();
    w.engine.authorize(&w.platform, &sub("cid-2")).await.unwrap();
    let mut other_person = w.refund("r-7", "p-1", Some("-1"), None);
    other_person.cid = sub("cid-2");
    assert!(matches!(w.engine.settle(&w.platform, &other_person).await, Err(EngineError::ParentNotFound)));
    assert_eq!(w.balances().await, ("100".into(), "100".into(), "0".into()));
    assert_eq!(w.provider_points(Asset::PointA).await, "0");
    let page = w.engine.bills(&w.platform, &all_bills()).await.unwrap();
    assert_eq!(page.total, 3);
    assert!(page.bills.iter().any(|bill| bill.amount() == Points::whole(-20)));
    w.assert_sound().await;
}

async fn rules_and_links_are_enforced(db: TestDb) {
    let w = world(engine(&db)).await;
    w.credit_points(Asset::PointA, "100", "c-a").await;
    let mut bad_type = w.order("t-1", Some("1"), None);
    bad_type.transaction_type = "not allowed!".into();
    assert!(matches!(w.engine.settle(&w.platform, &bad_type).await, Err(EngineError::TransactionTypeRejected(_))));
    let mut unlinked = w.order("t-2", Some("1"), None);
    unlinked.equity_cid = EquityCid::new("stranger").unwrap();
    assert!(matches!(w.engine.settle(&w.platform, &unlinked).await, Err(EngineError::ProviderNotLinked)));
    let mut unauthorized = w.order("t-3", Some("1"), None);
    unauthorized.cid = sub("never-authorized");
    assert!(matches!(w.engine.settle(&w.platform, &unauthorized).await, Err(EngineError::NotAuthorized)));
    w.engine.cancel_authorization(&w.platform, &w.cid).await.unwrap();
    assert!(matches!(
        w.engine.settle(&w.platform, &w.order("t-4", Some("1"), None)).await,
        Err(EngineError::NotAuthorized)
    ));
    w.engine.authorize(&w.platform, &w.cid).await.unwrap();
    assert_eq!(w.balances().await.0, "100");
    w.assert_sound().await;
}

fn all_bills() -> BillQuery {
    BillQuery { cid: None, equity_cid: None, begin_ms: 0, end_ms: i64::MAX, page: 1, page_size: 500 }
}

async fn bills_are_filtered_paged_and_private(db: TestDb) {
    let w = world(engine(&db)).await;
    w.credit_points(Asset::PointA, "1000", "c-a").await;
    let second = EquityCid::new("provider-2").unwrap();
    w.engine.add_provider(&second, "shop 2", std::slice::from_ref(&w.platform.app_id)).await.unwrap();
    for i in 0..7 {
        let mut order = w.order(&format!("t-{i}"), Some("1"), None);
        order.transaction_time_ms = 1_000_000 + i * 1000;
        if i % 2 == 1 {
            order.equity_cid = second.clone();
        }
        w.engine.settle(&w.platform, &order).await.unwrap();
    }
    let page = |page, page_size| BillQuery { page, page_size, ..all_bills() };
    let first = w.engine.bills(&w.platform, &page(1, 3)).await.unwrap();
    assert_eq!(first.total, 7);
    let ids: Vec<_> = first.bills.iter().map(|bill| bill.transaction_id.clone()).collect();
    assert_eq!(ids, ["t-6", "t-5", "t-4"], "newest transactionTime first");
    let last = w.engine.bills(&w.platform, &page(3, 3)).await.unwrap();
    assert_eq!(last.bills.len(), 1);
    assert!(w.engine.bills(&w.platform, &page(4, 3)).await.unwrap().bills.is_empty());
    let by_provider = BillQuery { equity_cid: Some(second.clone()), ..all_bills() };
    assert_eq!(w.engine.bills(&w.platform, &by_provider).await.unwrap().total, 3);
    let window = BillQuery { begin_ms: 1_002_000, end_ms: 1_004_000, ..all_bills() };
    assert_eq!(w.engine.bills(&w.platform, &window).await.unwrap().total, 3, "the range is inclusive");
    let by_cid = BillQuery { cid: Some(sub("someone-else")), ..all_bills() };
    assert_eq!(w.engine.bills(&w.platform, &by_cid).await.unwrap().total, 0);
    for bad in [page(0, 10), page(1, 0), page(1, 501), BillQuery { begin_ms: 5, end_ms: 4, ..all_bills() }] {
        assert!(matches!(w.engine.bills(&w.platform, &bad).await, Err(EngineError::InvalidField(_))));
    }
    let stranger = w.engine.add_platform("stranger", None).await.unwrap();
    assert_eq!(w.engine.bills(&stranger, &all_bills()).await.unwrap().total, 0);
}

async fn deep_bill_pages_are_refused_and_totals_capped(db: TestDb) {
    let w = world(engine(&db)).await;
    w.credit_points(Asset::PointA, "1000", "c-a").await;
    for i in 0..3 {
        let mut order = w.order(&format!("t-{i}"), Some("1"), None);
        order.transaction_time_ms = 1_000_000 + i * 1000;
        w.engine.settle(&w.platform, &order).await.unwrap();
    }
    // 10,000 more bills like t-0 (settling them one by one would take minutes); they share its
    // journal entry, which the bill query never reads.
    db.raw(
        "WITH d(x) AS (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) \
         INSERT INTO orders (platform_id, transaction_id, sub_cid, master_cid, equity_cid, point_a, point_b, \
             converted_reduction, transaction_time_ms, settled_at_ms, transaction_type, auto_convert, items, \
             request_hash, journal_id) \
         SELECT o.platform_id, o.transaction_id || '-' || (a.x * 1000 + b.x * 100 + c.x * 10 + e.x), o.sub_cid, \
             o.master_cid, o.equity_cid, o.point_a, o.point_b, o.converted_reduction, o.transaction_time_ms, \
             o.settled_at_ms, o.transaction_type, o.auto_convert, o.items, o.request_hash, o.journal_id \
         FROM orders o, d a, d b, d c, d e WHERE o.transaction_id = 't-0'",
    )
    .await;
    let page = |page, page_size| BillQuery { page, page_size, ..all_bills() };

    let first = w.engine.bills(&w.platform, &page(1, 10)).await.unwrap();
    assert_eq!((first.total, first.total_capped), (10_000, true), "10,003 rows are counted up to 10,000");
    let ids: Vec<_> = first.bills.iter().take(2).map(|bill| bill.transaction_id.as_str()).collect();
    assert_eq!(ids, ["t-2", "t-1"], "newest first");
    let deepest = w.engine.bills(&w.platform, &page(20, 500)).await.unwrap();
    assert_eq!((deepest.bills.len(), deepest.total, deepest.total_capped), (500, 10_000, true));
    let single = w.engine.bills(&w.platform, &page(10_000, 1)).await.unwrap();
    assert_eq!(single.bills.len(), 1, "the 10,000th row is reachable");
    for too_deep in [page(21, 500), page(10_001, 1), page(u32::MAX, 500)] {
        match w.engine.bills(&w.platform, &too_deep).await {
            Err(EngineError::InvalidField(field)) => {
                assert_eq!(field.field, "page");
                assert!(field.reason.contains("10000"), "{}", field.reason);
            }
            other => panic!("{too_deep:?} answered {other:?}"),
        }
    }
    // Narrowing the range reaches the rows beyond the window; small counts stay exact.
    let newer = BillQuery { begin_ms: 1_001_000, page_size: 1, ..all_bills() };
    let newer = w.engine.bills(&w.platform, &newer).await.unwrap();
    assert_eq!((newer.bills.len(), newer.total, newer.total_capped), (1, 2, false), "counted when the page is full");
    let beyond = BillQuery { begin_ms: 1_001_000, page: 3, page_size: 1, ..all_bills() };
    assert_eq!(w.engine.bills(&w.platform, &beyond).await.unwrap().total, 2, "counted when the page is empty");
    let tail = BillQuery { begin_ms: 1_001_000, page: 2, page_size: 1, ..all_bills() };
    let tail = w.engine.bills(&w.platform, &tail).await.unwrap();
    assert_eq!((tail.bills.len(), tail.total, tail.total_capped), (1, 2, false));
    let old = BillQuery { end_ms: 1_000_000, page: 20, page_size: 500, ..all_bills() };
    let old = w.engine.bills(&w.platform, &old).await.unwrap();
    assert_eq!((old.bills.len(), old.total, old.total_capped), (500, 10_000, true));
    let exact = BillQuery { begin_ms: 1_001_000, ..all_bills() };
    let exact = w.engine.bills(&w.platform, &exact).await.unwrap();
    assert_eq!((exact.bills.len(), exact.total, exact.total_capped), (2, 2, false));
}

/// What a scripted rules export answers.
type Answer = Result<Vec<Conversion>, RulesError>;

/// Rules that answer whatever the test tells them to.
struct ScriptedRules {
    points: Answer,
    reduction: Answer,
}

#[async_trait]
impl Rules for ScriptedRules {
    fn version(&self) -> Option<String> {
        Some("sha256-of-test-rules".into())
    }
    async fn validate_transaction_type(&self, _transaction_type: &str) -> Result<(), RulesError> {
        Ok(())
    }
    async fn convert_points(&self, _order: &Order, _balances: &Balances) -> Result<Vec<Conversion>, RulesError> {
        self.points.clone()
    }
    async fn convert_reduction(&self, _order: &Order, _balances: &Balances) -> Result<Vec<Conversion>, RulesError> {
        self.reduction.clone()
    }
}

struct Scripted(Arc<ScriptedRules>);

#[async_trait]
impl RulesSource for Scripted {
    async fn rules_for(&self, _platform: &Platform) -> Result<Arc<dyn Rules>, RulesError> {
        Ok(self.0.clone())
    }
}

fn scripted_engine(db: &TestDb, points: Answer, reduction: Answer) -> Engine {
    Engine::new(db.store.clone(), Arc::new(Scripted(Arc::new(ScriptedRules { points, reduction }))))
}

fn conversion(from: Asset, to: Asset, spend: i64, receive: i64) -> Conversion {
    Conversion { from, to, spend, receive }
}

async fn untrusted_rules_cannot_break_the_ledger(db: TestDb) {
    // The world is set up with the default rules; each case then settles with hostile ones.
    let w = world(engine(&db)).await;
    w.credit_points(Asset::PointA, "10", "c-a").await;
    w.credit_kg("1", "单车", "r-1").await;
    let before = w.balances().await;
    let cases: Vec<(Answer, Answer, &str)> = vec![
        (Ok(vec![conversion(Asset::PointA, Asset::PointB, 1001, 1001)]), Ok(vec![]), "overspend"),
        (Ok(vec![conversion(Asset::Reduction, Asset::PointB, 1, 1000)]), Ok(vec![]), "wrong phase"),
        (Ok(vec![conversion(Asset::PointA, Asset::PointB, -5, 1000)]), Ok(vec![]), "negative"),
        (Ok(vec![]), Ok(vec![conversion(Asset::Reduction, Asset::PointB, 1_000_001, 1000)]), "reduction overspend"),
        (Ok(vec![conversion(Asset::PointA, Asset::PointB, 1, 1); 17]), Ok(vec![]), "too many"),
    ];
    for (points, reduction, label) in cases {
        let engine = scripted_engine(&db, points, reduction);
        let mut order = w.order(&format!("t-{label}"), None, Some("10"));
        order.auto_convert = true;
        let result = engine.settle(&w.platform, &order).await;
        assert!(matches!(result, Err(EngineError::RulesRejected(_))), "{label}: {result:?}");
    }
    let failing = scripted_engine(&db, Err(RulesError::Failed("trap".into())), Ok(vec![]));
    let result = failing.settle(&w.platform, &w.order("t-fail", None, Some("1"))).await;
    assert!(matches!(result, Err(EngineError::RulesFailed(_))), "{result:?}");
    let rejecting = scripted_engine(&db, Err(Rejection::Other("closed today".into()).into()), Ok(vec![]));
    let result = rejecting.settle(&w.platform, &w.order("t-closed", None, Some("1"))).await;
    assert!(matches!(result, Err(EngineError::RulesRejected(reason)) if reason == "closed today"));
    // Reductions are never converted for a type = 0 order, even if the rules offer it.
    let eager = scripted_engine(&db, Ok(vec![]), Ok(vec![conversion(Asset::Reduction, Asset::PointB, 1, 1000)]));
    let result = eager.settle(&w.platform, &w.order("t-type0", None, Some("10"))).await;
    assert!(matches!(result, Err(EngineError::InsufficientPoints(_))), "{result:?}");
    assert_eq!(w.balances().await, before);
    assert_eq!(w.engine.bills(&w.platform, &all_bills()).await.unwrap().total, 0);
    w.assert_sound().await;
}

async fn point_conversions_apply_before_the_debit(db: TestDb) {
    let w = world(engine(&db)).await;
    w.credit_points(Asset::PointA, "10", "c-a").await;
    w.credit_kg("2", "地铁", "r-1").await;
    // 2 A buy 1 B; then 1 kg buys 3 A. The order needs 10 A and 4 B from 10 A and 0 B.
    let rules = scripted_engine(
        &db,
        Ok(vec![conversion(Asset::PointA, Asset::PointB, 800, 400)]),
        Ok(vec![conversion(Asset::Reduction, Asset::PointA, 1000, 800)]),
    );
    let mut order = w.order("t-1", Some("10"), Some("4"));
    order.auto_convert = true;
    assert_eq!(rules.settle(&w.platform, &order).await.unwrap(), Settled::New);
    assert_eq!(w.balances().await, ("0".into(), "0".into(), "1".into()));
    assert_eq!(w.provider_points(Asset::PointA).await, "10");
    assert_eq!(w.provider_points(Asset::PointB).await, "4");
    w.assert_sound().await;
    // The same script now spends class A points the person no longer has: refused whole.
    let mut short = w.order("t-2", Some("1"), None);
    short.auto_convert = false;
    assert!(matches!(rules.settle(&w.platform, &short).await, Err(EngineError::RulesRejected(_))));
}

async fn verify_reports_every_kind_of_breach(db: TestDb) {
    let w = world(engine(&db)).await;
    w.credit_points(Asset::PointA, "100", "c-a").await;
    w.engine.settle(&w.platform, &w.order("p-1", Some("50"), None)).await.unwrap();
    w.engine.settle(&w.platform, &w.refund("r-1", "p-1", Some("-20"), None)).await.unwrap();
    w.assert_sound().await;

    // Points out of thin air: the asset no longer sums to zero, and the balance disagrees
    // with its postings.
    db.raw("UPDATE balances SET balance = balance + 1 WHERE account = 'person:master-1' AND asset = 1").await;
    // An overdrawn provider.
    db.raw("UPDATE balances SET balance = -5 WHERE account = 'provider:provider-1' AND asset = 1").await;
    // An unbalanced journal entry.
    db.raw("INSERT INTO postings (journal_id, account, asset, amount) SELECT MIN(id), 'system:issuance', 2, 7 FROM journal")
        .await;
    // A refund counter that disagrees with the refunds.
    db.raw("UPDATE orders SET refunded_a = 6000 WHERE transaction_id = 'p-1'").await;
    // A bill whose push was never queued.
    db.raw("DELETE FROM push_outbox WHERE order_id = (SELECT id FROM orders WHERE transaction_id = 'r-1')").await;

    let report = w.engine.verify().await.unwrap();
    let has = |wanted: fn(&Violation) -> bool| report.violations.iter().any(wanted);
    assert!(has(|v| matches!(v, Violation::AssetNotZero { asset: 1, .. })), "{report}");
    assert!(has(|v| matches!(v, Violation::Overdrawn { account, .. } if account == "provider:provider-1")), "{report}");
    assert!(has(|v| matches!(v, Violation::JournalUnbalanced { asset: 2, sum: 7, .. })), "{report}");
    assert!(
        has(|v| matches!(v, Violation::BalanceMismatch { account, .. } if account == "person:master-1")),
        "{report}"
    );
    assert!(
        has(
            |v| matches!(v, Violation::BalanceMismatch { account, balance: 0, postings: 7, .. } if account == "system:issuance")
        ),
        "{report}"
    );
    assert!(has(|v| matches!(v, Violation::RefundsExceedParent { refunded: 2000, counter: 6000, .. })), "{report}");
    assert!(
        has(|v| matches!(v, Violation::BillNotQueued { transaction_id, .. } if transaction_id == "r-1")),
        "{report}"
    );
    assert!(!report.is_sound());
}

async fn host_state_is_shared_through_the_store(db: TestDb) {
    use carbon_engine::store::{License, ServerKey};
    let engine = engine(&db);
    let store = engine.store();
    assert_eq!(store.current_server_key().await.unwrap(), None);
    let key = |n: &str| ServerKey { private_key_pem: format!("private {n}"), public_key_pem: format!("public {n}") };
    store.insert_server_key(&key("1"), 1).await.unwrap();
    store.insert_server_key(&key("2"), 2).await.unwrap();
    // A second instance sees the newest key.
    let other = db.reopen().await;
    assert_eq!(other.current_server_key().await.unwrap(), Some(key("2")));

    let platform = engine.add_platform("mall", None).await.unwrap();
    store.insert_access_token("hash-1", platform.id, 5_000).await.unwrap();
    assert_eq!(other.access_token("hash-1").await.unwrap(), Some((platform.clone(), 5_000)));
    assert_eq!(other.access_token("hash-2").await.unwrap(), None);

    assert!(store.record_request_id("req-1", 1_000, 2_000).await.unwrap());
    assert!(!other.record_request_id("req-1", 1_500, 2_500).await.unwrap(), "replay inside the window");
    assert!(other.record_request_id("req-1", 2_001, 3_000).await.unwrap(), "expired records do not block");
    assert_eq!(store.purge_expired(4_000, 0).await.unwrap(), 1, "the request id expired at 3000");
    assert_eq!(store.purge_expired(4_000, 6_000).await.unwrap(), 1, "the token expired at 5000");
    assert_eq!(store.access_token("hash-1").await.unwrap(), None);

    let license = |url: &str| License { name: "用户协议".into(), download_url: url.into() };
    store.upsert_license(&license("https://a/1.pdf"), 1).await.unwrap();
    store.upsert_license(&license("https://a/2.pdf"), 2).await.unwrap();
    assert_eq!(other.licenses().await.unwrap(), vec![license("https://a/2.pdf")]);

    assert_eq!(store.subscription(platform.id, 1).await.unwrap(), None);
    store.put_subscription(platform.id, 1, "https://mall/bills", 1).await.unwrap();
    store.put_subscription(platform.id, 2, "https://mall/auth", 1).await.unwrap();
    store.put_subscription(platform.id, 1, "https://mall/bills-v2", 2).await.unwrap();
    assert_eq!(other.subscription(platform.id, 1).await.unwrap().as_deref(), Some("https://mall/bills-v2"));
    assert_eq!(other.subscription(platform.id, 2).await.unwrap().as_deref(), Some("https://mall/auth"));
}

/// Subscribes both push types and claims both streams at `now`.
async fn claim_both(store: &dyn carbon_engine::store::Store, platform: &Platform, now: i64) -> Vec<PushStream> {
    store.put_subscription(platform.id, 1, "https://mall/bills", now).await.unwrap();
    store.put_subscription(platform.id, 2, "https://mall/auth", now).await.unwrap();
    let mut streams = store.claim_push_streams("test", now, 60_000, 60_000, 10).await.unwrap();
    streams.sort_by_key(|stream| stream.kind);
    streams
}

async fn the_outbox_is_written_with_the_change_it_announces(db: TestDb) {
    let w = world(engine(&db)).await; // authorizes cid-1: one +1 change
    w.credit_points(Asset::PointA, "100", "c-a").await;
    w.engine.settle(&w.platform, &w.order("p-1", Some("50"), None)).await.unwrap();
    assert_eq!(w.engine.settle(&w.platform, &w.order("p-1", Some("50"), None)).await.unwrap(), Settled::Replayed);
    assert!(w.engine.settle(&w.platform, &w.order("p-2", Some("5000"), None)).await.is_err());
    w.engine.settle(&w.platform, &w.refund("r-1", "p-1", Some("-20"), None)).await.unwrap();
    w.engine.cancel_authorization(&w.platform, &w.cid).await.unwrap();
    w.engine.authorize(&w.platform, &w.cid).await.unwrap();
    w.engine.authorize(&w.platform, &w.cid).await.unwrap(); // already authorized: no change, no push
    w.assert_sound().await;

    let store = w.engine.store();
    let backlog = store.push_backlog().await.unwrap();
    let rows: Vec<(PushKind, u64)> = backlog.iter().map(|b| (b.kind, b.pending_rows)).collect();
    assert_eq!(rows, vec![(PushKind::Bills, 2), (PushKind::Authorization, 3)], "a refused order queues nothing");

    let streams = claim_both(store.as_ref(), &w.platform, 1_000).await;
    assert_eq!(streams.len(), 2);
    assert!(streams.iter().all(|s| s.seal_due && s.app_id == w.platform.app_id.as_str()));
    assert_eq!(store.seal_push_batches(&streams[0], 1_000, 10).await.unwrap(), Some(1));
    let head = store.head_push_batch(w.platform.id, PushKind::Bills).await.unwrap().unwrap();
    let PushPayload::Bills(bills) = store.push_payload(head.id).await.unwrap() else { panic!("bills expected") };
    let query = BillQuery { cid: None, equity_cid: None, begin_ms: 0, end_ms: i64::MAX, page: 1, page_size: 10 };
    let mut expected = w.engine.bills(&w.platform, &query).await.unwrap().bills;
    expected.reverse(); // the query is newest first; pushes go in settlement order
    assert_eq!(bills, expected, "the pushed rows are the bill rows");

    assert_eq!(store.seal_push_batches(&streams[1], 1_000, 10).await.unwrap(), Some(3), "one change per push");
    let mut changes = Vec::new();
    while let Some(head) = store.head_push_batch(w.platform.id, PushKind::Authorization).await.unwrap() {
        let PushPayload::Authorization { cid, change } = store.push_payload(head.id).await.unwrap() else {
            panic!("authorization expected")
        };
        changes.push((cid.to_string(), change));
        assert!(store.record_push_delivered(head.id, 1_001).await.unwrap());
        assert!(!store.record_push_delivered(head.id, 1_002).await.unwrap(), "delivered once");
    }
    assert_eq!(changes, vec![("cid-1".to_owned(), 1), ("cid-1".to_owned(), -1), ("cid-1".to_owned(), 1)]);
}

async fn push_streams_are_claimed_once_and_leases_expire(db: TestDb) {
    let w = world(engine(&db)).await;
    let (a, b) = (w.engine.store().clone(), db.reopen().await);
    // Rows wait while the platform has no subscription: nothing to claim.
    assert!(a.claim_push_streams("a", 1_000, 5_000, 60_000, 10).await.unwrap().is_empty());
    let streams = claim_both(a.as_ref(), &w.platform, 1_000).await;
    assert_eq!(streams.len(), 1, "only the authorization stream has work: {streams:?}");
    let auth = &streams[0];
    assert!(b.claim_push_streams("b", 1_000, 5_000, 60_000, 10).await.unwrap().is_empty(), "held by a");
    assert!(a.renew_push_stream(auth, 2_000, 60_000).await.unwrap());
    // The lease runs out (the holder died): another instance takes over and the old claim is void.
    let taken = b.claim_push_streams("b", 70_000, 60_000, 60_000, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_ne!(taken[0].claim, auth.claim);
    assert!(!a.renew_push_stream(auth, 70_001, 60_000).await.unwrap());
    assert_eq!(a.seal_push_batches(auth, 70_001, 10).await.unwrap(), None, "a lost claim cannot seal");
    assert_eq!(b.seal_push_batches(&taken[0], 70_001, 10).await.unwrap(), Some(1));
    b.release_push_stream(&taken[0], 70_002).await.unwrap();
    // Sealed and due: claimable again at once, by anyone.
    assert_eq!(a.claim_push_streams("a", 70_003, 60_000, 60_000, 10).await.unwrap().len(), 1);

    // Bills are sealed once per interval: a new bill waits until the interval since the last
    // seal has passed.
    w.credit_points(Asset::PointA, "10", "c-a").await;
    w.engine.settle(&w.platform, &w.order("p-1", Some("1"), None)).await.unwrap();
    let bills = b.claim_push_streams("b", 70_004, 60_000, 60_000, 10).await.unwrap();
    assert_eq!((bills.len(), bills[0].kind, bills[0].seal_due), (1, PushKind::Bills, true), "never sealed yet");
    assert_eq!(b.seal_push_batches(&bills[0], 70_004, 10).await.unwrap(), Some(1));
    let head = b.head_push_batch(w.platform.id, PushKind::Bills).await.unwrap().unwrap();
    assert!(b.record_push_delivered(head.id, 70_005).await.unwrap());
    b.release_push_stream(&bills[0], 70_005).await.unwrap();
    w.engine.settle(&w.platform, &w.order("p-2", Some("1"), None)).await.unwrap();
    assert!(b.claim_push_streams("b", 100_000, 60_000, 60_000, 10).await.unwrap().is_empty(), "interval not over");
    let due = b.claim_push_streams("b", 130_004, 60_000, 60_000, 10).await.unwrap();
    assert!(due.iter().any(|stream| stream.kind == PushKind::Bills), "{due:?}");
}

async fn failed_batches_retry_then_die_and_requeue(db: TestDb) {
    let w = world(engine(&db)).await;
    w.engine.cancel_authorization(&w.platform, &w.cid).await.unwrap();
    let store = w.engine.store();
    let streams = claim_both(store.as_ref(), &w.platform, 1_000).await;
    assert_eq!(store.seal_push_batches(&streams[0], 1_000, 10).await.unwrap(), Some(2));
    let first = store.head_push_batch(w.platform.id, PushKind::Authorization).await.unwrap().unwrap();
    assert_eq!((first.attempts, first.next_attempt_at_ms), (0, 1_000));
    assert_eq!(store.record_push_failed(first.id, 0, "HTTP 500", 2_000).await.unwrap(), AttemptOutcome::RetryAt(2_000));
    assert_eq!(store.record_push_failed(first.id, 0, "again", 2_000).await.unwrap(), AttemptOutcome::Stale);
    let head = store.head_push_batch(w.platform.id, PushKind::Authorization).await.unwrap().unwrap();
    assert_eq!((head.id, head.attempts, head.next_attempt_at_ms), (first.id, 1, 2_000), "later batches wait");
    assert_eq!(
        store.record_push_failed(first.id, 1, "timed out", 4_000).await.unwrap(),
        AttemptOutcome::RetryAt(4_000)
    );
    let last = "response is not JSON";
    assert_eq!(store.record_push_failed(first.id, 2, last, 8_000).await.unwrap(), AttemptOutcome::DeadLettered);
    let second = store.head_push_batch(w.platform.id, PushKind::Authorization).await.unwrap().unwrap();
    assert_ne!(second.id, first.id, "the next batch goes on");

    let dead = store.push_batches(BatchFilter::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].status, dead[0].attempts), (first.id, BatchStatus::Dead, 3));
    assert_eq!((dead[0].kind, dead[0].rows, dead[0].last_error.as_deref()), (PushKind::Authorization, 1, Some(last)));
    assert_eq!(store.push_batches(BatchFilter::All, 10).await.unwrap().len(), 2);
    let backlog = store.push_backlog().await.unwrap();
    assert_eq!((backlog[0].pending_rows, backlog[0].dead_batches), (1, 1));

    assert_eq!(store.requeue_push_batch(first.id, 9_000).await.unwrap(), RequeueOutcome::Requeued);
    assert_eq!(store.requeue_push_batch(first.id, 9_000).await.unwrap(), RequeueOutcome::NotDead(BatchStatus::Pending));
    assert_eq!(store.requeue_push_batch(999_999, 9_000).await.unwrap(), RequeueOutcome::Unknown);
    let head = store.head_push_batch(w.platform.id, PushKind::Authorization).await.unwrap().unwrap();
    assert_eq!((head.id, head.attempts, head.next_attempt_at_ms), (first.id, 0, 9_000), "fresh attempts, due now");
    assert!(store.record_push_delivered(first.id, 9_001).await.unwrap());
    assert!(store.push_batches(BatchFilter::Dead, 10).await.unwrap().is_empty());
}

async fn concurrent_claimers_take_each_stream_once(db: TestDb) {
    let engine = engine(&db);
    for p in 0..10 {
        let platform = engine.add_platform(&format!("mall-{p}"), None).await.unwrap();
        engine.map_cid(&platform, &sub("c"), &master("m")).await.unwrap();
        engine.authorize(&platform, &sub("c")).await.unwrap();
        engine.store().put_subscription(platform.id, 2, "https://mall/auth", 1).await.unwrap();
    }
    // Eight instances claim at the same moment, each wanting every stream.
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(db.reopen().await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(stores.len()));
    let mut claimers = tokio::task::JoinSet::new();
    for (i, store) in stores.into_iter().enumerate() {
        let start = start.clone();
        claimers.spawn(async move {
            start.wait().await;
            store.claim_push_streams(&format!("instance-{i}"), 5_000, 60_000, 60_000, 10).await.unwrap()
        });
    }
    let mut claimed = Vec::new();
    while let Some(streams) = claimers.join_next().await {
        claimed.extend(streams.unwrap().into_iter().map(|stream| stream.platform_id));
    }
    claimed.sort();
    let distinct: std::collections::BTreeSet<_> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), distinct.len(), "a stream was claimed twice: {claimed:?}");
    assert_eq!(distinct.len(), 10, "every stream was claimed");
}
