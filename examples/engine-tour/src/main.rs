//! Run with `cargo run -p engine-tour [-- DATABASE_URL]` (default: a fresh SQLite file in a
//! temporary directory).
//!
//! A tour of `carbon-engine` without HTTP: onboard a platform, a provider and a person, credit
//! points and reductions, settle a purchase that converts reductions, refund part of it, read
//! the bills, and check the ledger's invariants.

use carbon_engine::amount::{Grams, Points};
use carbon_engine::bill::BillQuery;
use carbon_engine::credit::Credit;
use carbon_engine::ids::{EquityCid, MasterCid, SubCid};
use carbon_engine::ledger::Asset;
use carbon_engine::order::OrderInput;
use carbon_engine::{Engine, now_ms, store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = std::env::temp_dir().join(format!("engine-tour-{}.db", now_ms()));
    let url = std::env::args().nth(1).unwrap_or_else(|| format!("sqlite://{}", temp.display()));
    println!("database: {url}");
    let engine = Engine::with_default_rules(store::open(&url).await?);

    let platform = engine.add_platform("Green Mall", None).await?;
    println!("platform `{}` has appId {}", platform.name, platform.app_id);
    let provider = EquityCid::new(format!("shop-{}", platform.app_id))?;
    engine.add_provider(&provider, "Tea Shop", std::slice::from_ref(&platform.app_id)).await?;
    let (cid, master) = (SubCid::new("mall-user-42")?, MasterCid::new(format!("master-{}", platform.app_id))?);
    engine.map_cid(&platform, &cid, &master).await?;
    engine.authorize(&platform, &cid).await?;

    let tag = platform.app_id.as_str();
    engine.credit(&Credit::points(master.clone(), Asset::PointA, Points::whole(8), format!("{tag}-a"), None)?).await?;
    let reduction =
        Credit::reduction(master, Grams::parse_kg("kg", "1.5")?, "地铁", "SHCER020200120241", format!("{tag}-r"))?;
    engine.credit(&reduction).await?;
    show(&engine, &platform, &cid, "after credits").await?;

    let order = OrderInput {
        cid: cid.to_string(),
        equity_cid: provider.to_string(),
        transaction_id: "order-1".into(),
        transaction_point_a: Some("12.5".into()),
        transaction_time_ms: now_ms(),
        transaction_type: "tea".into(),
        convert_type: Some(1),
        data: vec!["乌龙茶".into()],
        ..OrderInput::default()
    }
    .validate()?;
    println!("settle 12.5 class A points with reduction conversion: {:?}", engine.settle(&platform, &order).await?);
    show(&engine, &platform, &cid, "after purchase").await?;

    let refund = OrderInput {
        transaction_id: "refund-1".into(),
        parent_transaction_id: Some("order-1".into()),
        transaction_point_a: Some("-2.5".into()),
        convert_type: None,
        ..OrderInput::from_order(&order)
    }
    .validate()?;
    println!("refund 2.5 points: {:?}", engine.settle(&platform, &refund).await?);
    show(&engine, &platform, &cid, "after refund").await?;

    let query = BillQuery { cid: None, equity_cid: None, begin_ms: 0, end_ms: i64::MAX, page: 1, page_size: 10 };
    for bill in engine.bills(&platform, &query).await?.bills {
        println!(
            "bill {:<9} amount {:>6}  converted {} kg",
            bill.transaction_id,
            bill.amount(),
            bill.converted_reduction
        );
    }
    print!("{}", engine.verify().await?);
    Ok(())
}

async fn show(
    engine: &Engine,
    platform: &carbon_engine::directory::Platform,
    cid: &SubCid,
    label: &str,
) -> Result<(), carbon_engine::EngineError> {
    let balances = engine.point_balances(platform, cid).await?;
    println!(
        "{label:<16} A {:>6}  B {:>6}  reduction {:>6} kg",
        balances.point_a, balances.point_b, balances.reduction
    );
    Ok(())
}
