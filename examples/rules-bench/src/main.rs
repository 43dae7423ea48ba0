//! Run with `cargo run --release -p rules-bench -- [PLUGIN.wasm]` after the plugins are built
//! (the test command builds them into `target/wasm-plugins`; default path below).
//!
//! Measures (1) the per-call overhead of the rules: the three jobs through the default plugin
//! (a fresh instance per call) against `NativeDefaultRules`, median and p99; and (2)
//! settlements per second through the engine on SQLite with each, 16 callers at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use carbon_engine::amount::{Grams, Points};
use carbon_engine::credit::Credit;
use carbon_engine::ids::{EquityCid, MasterCid, SubCid};
use carbon_engine::ledger::Asset;
use carbon_engine::order::{Order, OrderInput};
use carbon_engine::rules::registry::PluginRegistry;
use carbon_engine::rules::wasm::{PluginLimits, PluginRuntime, WasmRules};
use carbon_engine::rules::{Balances, NativeDefaultRules, Rules, RulesSource};
use carbon_engine::store::StoredLimits;
use carbon_engine::{Engine, testing};

const CALLS: usize = 3000;
const SETTLEMENTS: usize = 3000;
const CALLERS: usize = 16;

fn order(id: usize, auto_convert: bool) -> Order {
    OrderInput {
        cid: "c-1".into(),
        equity_cid: "shop-1".into(),
        transaction_id: format!("o-{id}"),
        transaction_point_a: Some("1".into()),
        transaction_time_ms: 1_712_629_830_000,
        transaction_type: "coffee".into(),
        convert_type: Some(i64::from(auto_convert)),
        data: vec!["latte".into()],
        ..OrderInput::default()
    }
    .validate()
    .expect("valid order")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// validate + convert-points + convert-reduction, as a `type = 1` order short of points makes.
async fn three_jobs(rules: &dyn Rules) -> Duration {
    let (order, balances) =
        (order(0, true), Balances { point_a: Points(50), point_b: Points(0), reduction: Grams(5000) });
    let started = Instant::now();
    rules.validate_transaction_type(&order.transaction_type).await.expect("type ok");
    rules.convert_points(&order, &balances).await.expect("points ok");
    rules.convert_reduction(&order, &balances).await.expect("reduction ok");
    started.elapsed()
}

async fn per_call(label: &str, rules: &dyn Rules) -> Duration {
    for _ in 0..200 {
        three_jobs(rules).await;
    }
    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        samples.push(three_jobs(rules).await);
    }
    samples.sort();
    let (median, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!("{label:<28} median {:>9.1} µs   p99 {:>9.1} µs", micros(median), micros(p99));
    median
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

async fn settlements_per_second(label: &str, plugin: Option<&[u8]>) -> f64 {
    let db = testing::sqlite().await;
    let registry = PluginRegistry::new(db.store.clone(), PluginLimits::default()).expect("runtime");
    let engine = Engine::new(db.store.clone(), registry.clone() as Arc<dyn RulesSource>);
    let platform = engine.add_platform("bench", None).await.expect("platform");
    let shop = EquityCid::new("shop-1").expect("id");
    engine.add_provider(&shop, "shop", std::slice::from_ref(&platform.app_id)).await.expect("provider");
    let (cid, master) = (SubCid::new("c-1").expect("id"), MasterCid::new("m-1").expect("id"));
    engine.map_cid(&platform, &cid, &master).await.expect("map");
    engine.authorize(&platform, &cid).await.expect("authorize");
    let credit = Credit::points(master, Asset::PointA, Points::whole(1_000_000), "grant", None).expect("credit");
    engine.credit(&credit).await.expect("credit");
    if let Some(wasm) = plugin {
        registry.install(&platform, wasm.to_vec(), "", StoredLimits::default(), true).await.expect("install");
        registry.refresh().await.expect("refresh");
    }
    let started = Instant::now();
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let (engine, platform) = (engine.clone(), platform.clone());
        callers.push(tokio::spawn(async move {
            for i in (caller..SETTLEMENTS).step_by(CALLERS) {
                engine.settle(&platform, &order(i, false)).await.expect("settled");
            }
        }));
    }
    for caller in callers {
        caller.await.expect("caller");
    }
    let rate = SETTLEMENTS as f64 / started.elapsed().as_secs_f64();
    assert!(engine.verify().await.expect("verify").is_sound());
    println!(
        "{label:<28} {rate:>9.0} settlements/s ({SETTLEMENTS} orders, {CALLERS} callers, SQLite, synchronous=FULL)"
    );
    rate
}

#[tokio::main]
async fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/wasm-plugins/wasm32-wasip2/release/default_rules.wasm".to_owned());
    let wasm =
        std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err} (run the tests once to build the plugins)"));
    println!("plugin {path} ({} bytes); {CALLS} samples of validate + convert-points + convert-reduction", wasm.len());
    let runtime = PluginRuntime::new().expect("runtime");
    let compiled = Arc::new(runtime.compile_and_load(&wasm).expect("compile"));
    let wasm_rules = WasmRules::new(runtime, compiled, "", PluginLimits::default(), "bench");
    let native = NativeDefaultRules::default();
    let native_median = per_call("native rules, three jobs", &native).await;
    let wasm_median = per_call("default plugin, three jobs", &wasm_rules).await;
    println!("wasm overhead per three-job settlement: {:.1} µs (median)", micros(wasm_median) - micros(native_median));
    let native_rate = settlements_per_second("engine + native rules", None).await;
    let wasm_rate = settlements_per_second("engine + default plugin", Some(&wasm)).await;
    println!("ratio plugin / native throughput: {:.2}", wasm_rate / native_rate);
}
