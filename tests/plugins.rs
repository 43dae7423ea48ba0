//! Rules plugins end to end: real components built from `plugins/` by this crate's build
//! script, run by the real runtime, deciding real settlements over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use carbon_e2e::carbon_engine::amount::{Grams, Points};
use carbon_e2e::carbon_engine::credit::Credit;
use carbon_e2e::carbon_engine::directory::Platform;
use carbon_e2e::carbon_engine::ids::{EquityCid, MasterCid, SubCid};
use carbon_e2e::carbon_engine::ledger::Asset;
use carbon_e2e::carbon_engine::order::{Order, OrderInput};
use carbon_e2e::carbon_engine::rules::registry::PluginRegistry;
use carbon_e2e::carbon_engine::rules::wasm::{PluginLimits, PluginRuntime, WasmRules};
use carbon_e2e::carbon_engine::rules::{Balances, NativeDefaultRules, Rejection, Rules, RulesError};
use carbon_e2e::carbon_engine::store::StoredLimits;
use carbon_e2e::carbon_engine::testing::{self, TestDb};
use carbon_e2e::{Server, json, on_both_backends, plugin};
use carbon_host::config::Config;
use serde_json::Value;

on_both_backends!(
    a_mall_plugin_decides_types_and_pays_a_with_b,
    a_transit_plugin_converts_reductions_with_a_cap,
    hostile_plugins_fail_only_their_own_orders,
    activation_and_rollback_while_orders_are_in_flight,
    a_restart_keeps_the_active_version_without_recompiling,
    the_template_authors_copy_works,
    the_admin_api_manages_plugins,
);

fn order(transaction_type: &str, a: &str, b: &str, auto_convert: bool) -> Order {
    OrderInput {
        cid: "c-1".into(),
        equity_cid: "shop-1".into(),
        transaction_id: "t".into(),
        transaction_point_a: Some(a.into()),
        transaction_point_b: Some(b.into()),
        transaction_time_ms: 1_712_629_830_000,
        transaction_type: transaction_type.into(),
        convert_type: Some(i64::from(auto_convert)),
        data: vec!["item".into()],
        ..OrderInput::default()
    }
    .validate()
    .unwrap()
}

fn balances(a: i64, b: i64, grams: i64) -> Balances {
    Balances { point_a: Points(a), point_b: Points(b), reduction: Grams(grams) }
}

/// A rules answer reduced to what must agree: the conversions, or the kind of refusal.
fn outcome<T: std::fmt::Debug>(result: Result<T, RulesError>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(RulesError::Rejected(Rejection::InvalidTransactionType(_))) => "invalid type".into(),
        Err(RulesError::Rejected(Rejection::Insufficient(_))) => "insufficient".into(),
        Err(RulesError::Rejected(Rejection::Other(reason))) => format!("other: {reason}"),
        Err(RulesError::Failed(reason)) => format!("FAILED {reason}"),
    }
}

/// A call runs first on the async worker that made it; one that reaches a blocking WASI
/// function (a panic message to stderr) or runs past the inline deadline is run again on the
/// blocking pool, and answers there as it would have anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answer_inline_unless_they_block_or_run_long() {
    let runtime = PluginRuntime::new().unwrap();
    let default = Arc::new(runtime.compile_and_load(&plugin("default")).unwrap());
    let hostile = Arc::new(runtime.compile_and_load(&plugin("hostile")).unwrap());
    let rules = |plugin: &Arc<_>, config: &str| {
        WasmRules::new(runtime.clone(), Arc::clone(plugin), config, PluginLimits::default(), "test")
    };
    for _ in 0..10 {
        rules(&default, "").validate_transaction_type("coffee").await.unwrap();
        rules(&hostile, "").validate_transaction_type("coffee").await.unwrap();
    }
    // A call descheduled for over a millisecond (a loaded test machine) may go to the pool too.
    let (inline, pool) = runtime.call_counts();
    assert_eq!(inline + pool, 20);
    assert!(inline >= 15, "well-behaved calls answer on the worker: {inline} of 20");
    let panicked = outcome(rules(&hostile, "panic").validate_transaction_type("coffee").await);
    assert!(panicked.starts_with("FAILED trapped"), "{panicked}");
    assert_eq!(runtime.call_counts(), (inline, pool + 1), "the panic message needs stderr: run on the pool");
    let unmetered = PluginLimits { fuel: 1 << 40, deadline_ms: 50, ..PluginLimits::default() };
    let looping = WasmRules::new(runtime.clone(), hostile.clone(), "loop", unmetered, "test");
    let looped = outcome(looping.validate_transaction_type("coffee").await);
    assert!(looped.contains("deadline of 50 ms exceeded"), "{looped}");
    assert_eq!(runtime.call_counts(), (inline, pool + 2), "past the inline deadline: run on the pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_plugin_behaves_exactly_like_the_native_rules() {
    let runtime = PluginRuntime::new().unwrap();
    let compiled = Arc::new(runtime.compile_and_load(&plugin("default")).unwrap());
    for (config, native) in [
        ("", NativeDefaultRules::default()),
        ("points_per_kg = \"3\"", NativeDefaultRules::with_rate(Points::whole(3)).unwrap()),
        ("points_per_kg = \"12.5\"", NativeDefaultRules::with_rate(Points(1250)).unwrap()),
    ] {
        let wasm = WasmRules::new(runtime.clone(), compiled.clone(), config, PluginLimits::default(), "default");
        for transaction_type in ["0", "coffee", "A-_z9", "", "a b", "中文", "x;y", &"x".repeat(32), &"x".repeat(33)] {
            assert_eq!(
                outcome(wasm.validate_transaction_type(transaction_type).await),
                outcome(native.validate_transaction_type(transaction_type).await),
                "type {transaction_type:?}, config {config:?}"
            );
        }
        let cases = [
            (order("0", "10", "0", true), balances(1000, 0, 0)),
            (order("0", "10", "0", true), balances(500, 0, 500)),
            (order("0", "10", "0", true), balances(500, 0, 499)),
            (order("0", "10", "0", true), balances(0, 0, 1_000_000)),
            (order("0", "0.01", "0", true), balances(0, 0, 10)),
            (order("0", "7.77", "3", true), balances(100, 300, 5000)),
            (order("0", "0", "5", true), balances(0, 0, 100_000)),
            (order("0", "999999", "0", true), balances(0, 0, i64::MAX / 4)),
        ];
        for (order, balances) in cases {
            assert_eq!(
                outcome(wasm.convert_points(&order, &balances).await),
                outcome(native.convert_points(&order, &balances).await),
                "convert-points {order:?} {balances:?}"
            );
            assert_eq!(
                outcome(wasm.convert_reduction(&order, &balances).await),
                outcome(native.convert_reduction(&order, &balances).await),
                "convert-reduction {order:?} {balances:?} config {config:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installing_refuses_what_is_not_a_rules_plugin() {
    let db = testing::sqlite().await;
    let registry = PluginRegistry::new(db.store.clone(), PluginLimits::default()).unwrap();
    let engine = carbon_e2e::carbon_engine::Engine::with_default_rules(db.store.clone());
    let platform = engine.add_platform("mall", None).await.unwrap();
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    for (bytes, label) in [(b"not wasm at all".to_vec(), "text"), (core_module, "a core module, not a component")] {
        let err = registry.install(&platform, bytes, "", StoredLimits::default(), true).await.unwrap_err();
        assert!(err.to_string().contains("wasm"), "{label}: {err}");
    }
    let too_much_memory = StoredLimits { memory_bytes: Some(1 << 40), ..StoredLimits::default() };
    let err = registry.install(&platform, plugin("default"), "", too_much_memory, true).await.unwrap_err();
    assert!(err.to_string().contains("memory"), "{err}");
    assert!(registry.list(&platform).await.unwrap().is_empty(), "nothing half-installed");
    let version = registry.install(&platform, plugin("default"), "", StoredLimits::default(), false).await.unwrap();
    assert_eq!(version, 1);
}

/// A server with a platform (`mall`), a linked provider `shop-1`, person `c-1` → `m-1`
/// authorized and credited, and a second, plugin-free platform (`plain`, cid `p-1` → `m-2`).
struct Fixture {
    server: Server,
    mall: Platform,
    mall_token: String,
    plain_token: String,
}

async fn fixture(db: TestDb) -> Fixture {
    let server = Server::start(db, Config::default()).await;
    let engine = &server.engine;
    let mall = engine.add_platform("mall", None).await.unwrap();
    let plain = engine.add_platform("plain", None).await.unwrap();
    let shop = EquityCid::new("shop-1").unwrap();
    engine.add_provider(&shop, "shop", &[mall.app_id.clone(), plain.app_id.clone()]).await.unwrap();
    for (platform, cid, master) in [(&mall, "c-1", "m-1"), (&plain, "p-1", "m-2")] {
        let (cid, master) = (SubCid::new(cid).unwrap(), MasterCid::new(master).unwrap());
        engine.map_cid(platform, &cid, &master).await.unwrap();
        engine.authorize(platform, &cid).await.unwrap();
        for (asset, points) in [(Asset::PointA, 1000), (Asset::PointB, 1000)] {
            let credit =
                Credit::points(master.clone(), asset, Points::whole(points), format!("{master}-{asset}"), None);
            engine.credit(&credit.unwrap()).await.unwrap();
        }
        let reduction =
            Credit::reduction(master.clone(), Grams(10_000), "地铁", "SHCER020200120241", format!("{master}-r"));
        engine.credit(&reduction.unwrap()).await.unwrap();
    }
    let mall_token = server.token(mall.app_id.as_str()).await;
    let plain_token = server.token(plain.app_id.as_str()).await;
    Fixture { server, mall, mall_token, plain_token }
}

fn body(id: &str, transaction_type: &str, a: &str, b: &str, convert: i64) -> Value {
    json!({
        "cid": "c-1", "equityCid": "shop-1", "transactionId": id,
        "transactionPointA": a, "transactionPointB": b,
        "transactionTime": "2024-04-09 10:30:30", "transactionType": transaction_type,
        "type": convert, "data": ["item"],
    })
}

impl Fixture {
    async fn install(&self, name: &str, config: &str, limits: StoredLimits) -> i64 {
        let plugins = &self.server.plugins;
        let version = plugins.install(&self.mall, plugin(name), config, limits, true).await.unwrap();
        plugins.refresh().await.unwrap();
        version
    }

    async fn settle(&self, body: Value) -> i64 {
        self.server.post("/transaction/orderSettel", Some(&self.mall_token), body).await.code()
    }

    async fn balances(&self) -> (Value, Value) {
        let info = self.server.post("/account/getPointInfo", Some(&self.mall_token), json!({ "cid": "c-1" })).await;
        let list = &info.body["content"]["pointInfo"];
        (list[0]["pointBalance"].clone(), list[1]["pointBalance"].clone())
    }

    async fn rules_version(&self, transaction_id: &str) -> Option<String> {
        let sql = format!("SELECT rules_version FROM orders WHERE transaction_id = '{transaction_id}'");
        self.server.db.text(&sql).await
    }
}

async fn a_mall_plugin_decides_types_and_pays_a_with_b(db: TestDb) {
    let f = fixture(db).await;
    f.install("mall", "transaction_types = [\"coffee\", \"tea\"]\na_per_b = \"0.5\"\n", StoredLimits::default()).await;
    assert_eq!(f.settle(body("t-0", "0", "1", "0", 0)).await, 42202, "only the listed types");
    assert_eq!(f.settle(body("t-1", "coffee", "1000", "0", 0)).await, 200);
    // A is empty now: 10 A cost 20 B at 0.5 A per B, on top of the order's own 5 B.
    assert_eq!(f.settle(body("t-2", "tea", "10", "5", 0)).await, 200);
    assert_eq!(f.balances().await, (json!("0"), json!("975")));
    assert_eq!(f.settle(body("t-3", "tea", "500", "0", 0)).await, 42201, "975 B cannot buy 500 A");
    let sha = carbon_e2e::carbon_engine::rules::wasm::sha256_hex(&plugin("mall"));
    assert_eq!(f.rules_version("t-2").await, Some(sha), "each settlement records the plugin that decided it");
    assert!(f.server.engine.verify().await.unwrap().is_sound());
}

async fn a_transit_plugin_converts_reductions_with_a_cap(db: TestDb) {
    let f = fixture(db).await;
    let config = "transaction_types = [\"metro\"]\na_points_per_kg = \"12.5\"\nb_points_per_kg = \"20\"\nmax_kg_per_order = \"2\"\n";
    f.install("transit", config, StoredLimits::default()).await;
    assert_eq!(f.settle(body("t-1", "metro", "1000", "1000", 0)).await, 200);
    assert_eq!(f.settle(body("t-2", "metro", "12.5", "0", 0)).await, 42201, "type 0: no reduction conversion");
    // 12.5 A = 1 kg at 12.5/kg; 10 B = 0.5 kg at 20/kg: 1.5 kg of the 10 kg held.
    assert_eq!(f.settle(body("t-3", "metro", "12.5", "10", 1)).await, 200);
    assert_eq!(f.balances().await, (json!("0"), json!("0")));
    assert_eq!(f.settle(body("t-4", "metro", "30", "0", 1)).await, 42204, "2.4 kg exceeds the 2 kg cap");
    assert_eq!(f.settle(body("t-5", "bus", "1", "0", 1)).await, 42202);
    assert!(f.server.engine.verify().await.unwrap().is_sound());
}

async fn hostile_plugins_fail_only_their_own_orders(db: TestDb) {
    let f = Arc::new(fixture(db).await);
    // (behaviour, fuel, expected code): fuel is lifted for `loop-deadline` so that the
    // wall-clock deadline (100 ms), not fuel, stops it. The other cases get a 1 s deadline so
    // that a loaded machine cannot turn an oversized answer into a missed deadline.
    let cases = [
        ("loop", None, 50301),
        ("loop-deadline", Some(1u64 << 50), 50301),
        ("memory", None, 50301),
        ("trap", None, 50301),
        ("panic", None, 50301),
        ("huge-error", None, 42204),
        ("huge-plan", None, 42204),
        ("bad-plan", None, 42204),
        ("log-flood", None, 200),
    ];
    for (index, (behaviour, fuel, expected)) in cases.into_iter().enumerate() {
        let config = behaviour.trim_end_matches("-deadline");
        let deadline_ms = Some(if fuel.is_some() { 100 } else { 1000 });
        f.install("hostile", config, StoredLimits { fuel, deadline_ms, ..StoredLimits::default() }).await;
        // Another platform settles concurrently and never notices.
        let neighbour = {
            let f = f.clone();
            tokio::spawn(async move {
                let mut codes = Vec::new();
                for i in 0..10 {
                    let mut order = body(&format!("n-{index}-{i}"), "0", "0.01", "0", 0);
                    order["cid"] = json!("p-1");
                    codes.push(f.server.post("/transaction/orderSettel", Some(&f.plain_token), order).await.code());
                }
                codes
            })
        };
        let started = Instant::now();
        let (a, b) = if behaviour == "bad-plan" || behaviour == "huge-plan" { ("5000", "0") } else { ("1", "0") };
        let code = f.settle(body(&format!("h-{index}"), "0", a, b, 0)).await;
        let elapsed = started.elapsed();
        assert_eq!(code, expected, "{behaviour}");
        assert!(elapsed < Duration::from_secs(2), "{behaviour} took {elapsed:?}");
        assert_eq!(neighbour.await.unwrap(), vec![200; 10], "{behaviour}: the other platform was disturbed");
    }
    assert_eq!(f.balances().await, (json!("999"), json!("1000")), "only log-flood's order settled");
    assert!(f.server.engine.verify().await.unwrap().is_sound());
}

async fn activation_and_rollback_while_orders_are_in_flight(db: TestDb) {
    let f = Arc::new(fixture(db).await);
    let coffee_only = "transaction_types = [\"coffee\"]\n";
    let tea_only = "transaction_types = [\"tea\"]\n";
    let v1 = f.install("mall", coffee_only, StoredLimits::default()).await;
    let traffic = {
        let f = f.clone();
        tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::new();
            for i in 0..120 {
                *codes.entry(f.settle(body(&format!("o-{i}"), "coffee", "0.01", "0", 0)).await).or_insert(0) += 1;
            }
            codes
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let v2 = f.install("mall", tea_only, StoredLimits::default()).await;
    assert_eq!(f.settle(body("x-1", "coffee", "1", "0", 0)).await, 42202, "v2 in force");
    assert_eq!(f.server.plugins.rollback(&f.mall).await.unwrap(), Some(v1));
    f.server.plugins.refresh().await.unwrap();
    assert_eq!(f.settle(body("x-2", "coffee", "1", "0", 0)).await, 200, "v1 back in force");
    f.server.plugins.activate(&f.mall, Some(v2)).await.unwrap();
    f.server.plugins.configure(&f.mall, v2, "transaction_types = [\"tea\", \"coffee\"]\n").await.unwrap();
    f.server.plugins.refresh().await.unwrap();
    assert_eq!(f.settle(body("x-3", "coffee", "1", "0", 0)).await, 200, "reconfigured v2 accepts coffee");
    let codes = traffic.await.unwrap();
    let answered: i32 = codes.values().sum();
    assert_eq!(answered, 120);
    assert!(
        codes.keys().all(|code| *code == 200 || *code == 42202),
        "only decisions of one version or the other: {codes:?}"
    );
    let listed = f.server.plugins.list(&f.mall).await.unwrap();
    assert_eq!(listed.iter().map(|l| (l.version.version, l.active)).collect::<Vec<_>>(), vec![(v1, false), (v2, true)]);
    f.server.plugins.activate(&f.mall, None).await.unwrap();
    f.server.plugins.refresh().await.unwrap();
    assert_eq!(f.settle(body("x-4", "0", "1", "0", 0)).await, 200, "built-in rules again");
    assert_eq!(f.rules_version("x-4").await, None);
}

async fn a_restart_keeps_the_active_version_without_recompiling(db: TestDb) {
    let f = fixture(db).await;
    f.install("mall", "transaction_types = [\"coffee\"]\n", StoredLimits::default()).await;
    assert_eq!(f.server.plugins.compilations(), 1);
    // A new process: a fresh registry over the same database.
    let restarted = PluginRegistry::new(f.server.db.reopen().await, PluginLimits::default()).unwrap();
    restarted.refresh().await.unwrap();
    assert_eq!(restarted.compilations(), 0, "the stored artifact was loaded, not recompiled");
    use carbon_e2e::carbon_engine::rules::RulesSource;
    let rules = restarted.rules_for(&f.mall).await.unwrap();
    assert_eq!(rules.version(), Some(carbon_e2e::carbon_engine::rules::wasm::sha256_hex(&plugin("mall"))));
    assert!(rules.validate_transaction_type("coffee").await.is_ok());
    assert!(rules.validate_transaction_type("tea").await.is_err());
}

async fn the_template_authors_copy_works(db: TestDb) {
    let f = fixture(db).await;
    f.install("template", "transaction_types = [\"gift\"]\npoints_per_kg = \"15\"\n", StoredLimits::default()).await;
    assert_eq!(f.settle(body("t-1", "gift", "1000", "0", 0)).await, 200);
    assert_eq!(f.settle(body("t-2", "gift", "1.5", "0", 1)).await, 200, "0.1 kg at 15 points per kg");
    assert_eq!(f.settle(body("t-3", "toy", "1", "0", 1)).await, 42202);
    let sql = "SELECT CAST(converted_reduction AS TEXT) FROM orders WHERE transaction_id = 't-2'";
    assert_eq!(f.server.db.text(sql).await.as_deref(), Some("100"));
}

/// The `carbon-host` binary next to this test's own (both are built by the test command).
fn carbon_host_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>").join("carbon-host");
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

fn cli(db: &TestDb, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(carbon_host_binary())
        .args(args)
        .env("CARBON_DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run carbon-host");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_cli_checks_runs_and_manages_versions() {
    let db = testing::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (mall, hostile) = (file("mall.wasm", &plugin("mall")), file("hostile.wasm", &plugin("hostile")));
    let not_wasm = file("notes.txt", b"hello");
    let coffee = file("coffee.toml", b"transaction_types = [\"coffee\"]\na_per_b = \"0.5\"\n");
    let tea = file("tea.toml", b"transaction_types = [\"tea\"]\n");
    let order = file(
        "order.json",
        json!({
            "cid": "c-1", "equityCid": "shop-1", "transactionId": "o-1", "transactionPointA": "10",
            "transactionTime": "2024-04-09 10:30:30", "transactionType": "coffee", "type": 1, "data": ["latte"],
        })
        .to_string()
        .as_bytes(),
    );
    let balances = file("balances.json", br#"{"pointA": "4", "pointB": "100", "reductionKg": "1"}"#);

    let (ok, out) = cli(&db, &["plugin", "check", &mall]);
    assert!(ok && out.contains("export   carbon:rules/rules@0.1.0") && out.contains("ok: implements"), "{out}");
    let (ok, out) = cli(&db, &["plugin", "check", &not_wasm]);
    assert!(!ok && out.contains("not a rules plugin"), "{out}");

    let (ok, out) =
        cli(&db, &["plugin", "run", &mall, "--order", &order, "--balances", &balances, "--config", &coffee]);
    assert!(ok, "{out}");
    assert!(out.contains("validate-transaction-type:\n  answer  Ok(())"), "{out}");
    // 6 A short at 0.5 A per B: 12 B.
    assert!(out.contains("spend: 1200, receive: 600"), "{out}");
    assert!(out.contains("fuel") && out.contains("[info] paying 600 A with 1200 B"), "{out}");
    let loop_config = file("loop.txt", b"loop");
    let (ok, out) =
        cli(&db, &["plugin", "run", &hostile, "--order", &order, "--balances", &balances, "--config", &loop_config]);
    assert!(ok && out.contains("FAILED") && out.contains("out of fuel"), "{out}");

    assert!(cli(&db, &["platform", "add", "--name", "Mall", "--app-id", "mall"]).0);
    let (ok, out) =
        cli(&db, &["plugin", "install", "--platform", "mall", &mall, "--config-file", &coffee, "--activate"]);
    assert!(ok && out.contains("installed version 1 and put it in force"), "{out}");
    let (ok, out) =
        cli(&db, &["plugin", "install", "--platform", "mall", &mall, "--config-file", &tea, "--fuel", "2000000"]);
    assert!(ok && out.contains("installed version 2\n"), "{out}");
    let (ok, out) = cli(&db, &["plugin", "install", "--platform", "mall", &not_wasm]);
    assert!(!ok && out.contains("wasm"), "{out}");
    let (_, out) = cli(&db, &["plugin", "list", "--platform", "mall"]);
    assert!(out.contains("*       1") && out.contains("        2"), "{out}");
    assert!(cli(&db, &["plugin", "activate", "--platform", "mall", "--version", "2"]).1.contains("version 2 in force"));
    let (ok, out) = cli(&db, &["plugin", "activate", "--platform", "mall", "--version", "9"]);
    assert!(!ok && out.contains("not found"), "{out}");
    assert!(cli(&db, &["plugin", "rollback", "--platform", "mall"]).1.contains("version 1 in force"));
    assert!(cli(&db, &["plugin", "config", "--platform", "mall", "--version", "1", "--file", &tea]).0);
    assert!(cli(&db, &["plugin", "activate", "--platform", "mall", "--builtin"]).1.contains("built-in rules in force"));

    // What the CLI stored is what a server puts in force.
    let registry = PluginRegistry::new(db.store.clone(), PluginLimits::default()).unwrap();
    let engine = carbon_e2e::carbon_engine::Engine::with_default_rules(db.store.clone());
    let platform = engine.platform(&carbon_e2e::carbon_engine::ids::AppId::new("mall").unwrap()).await.unwrap();
    let listed = registry.list(&platform).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|l| !l.active), "built-in rules in force");
    assert_eq!(listed[0].version.config, "transaction_types = [\"tea\"]\n");
    assert_eq!(listed[1].version.limits.fuel, Some(2_000_000));
}

async fn the_admin_api_manages_plugins(db: TestDb) {
    use base64::Engine as _;
    const ADMIN: &str = "plugin-admin-token-0123";
    let server = Server::start(db, Config { admin_token: Some(ADMIN.into()), ..Config::default() }).await;
    let mall = server
        .engine
        .add_platform("mall", Some(carbon_e2e::carbon_engine::ids::AppId::new("mall").unwrap()))
        .await
        .unwrap();
    let admin = |method: &'static str, path: &'static str, body: Option<Value>| {
        let server = &server;
        async move {
            let headers = vec![("Authorization".to_owned(), format!("Bearer {ADMIN}"))];
            server.send(method, path, None, headers, body.map(|body| body.to_string())).await
        }
    };
    let wasm = base64::engine::general_purpose::STANDARD.encode(plugin("mall"));
    let install =
        json!({ "platform": "mall", "wasmBase64": wasm, "config": "transaction_types = [\"tea\"]", "activate": true });
    let answer = admin("POST", "/admin/v1/plugins", Some(install)).await;
    assert_eq!(answer.body["content"]["version"], 1, "{answer:?}");
    use carbon_e2e::carbon_engine::rules::RulesSource;
    let rules = server.plugins.rules_for(&mall).await.unwrap();
    assert!(rules.validate_transaction_type("tea").await.is_ok(), "in force on this instance at once");
    let bad = json!({ "platform": "mall", "wasmBase64": base64::engine::general_purpose::STANDARD.encode(b"nope") });
    let answer = admin("POST", "/admin/v1/plugins", Some(bad)).await;
    assert_eq!(answer.code(), 40001, "{answer:?}");
    let config = json!({ "platform": "mall", "version": 1, "config": "transaction_types = [\"coffee\"]" });
    assert_eq!(admin("POST", "/admin/v1/plugins/config", Some(config)).await.code(), 200);
    let rules = server.plugins.rules_for(&mall).await.unwrap();
    assert!(rules.validate_transaction_type("coffee").await.is_ok());
    let builtin = json!({ "platform": "mall", "version": null });
    assert_eq!(admin("POST", "/admin/v1/plugins/activate", Some(builtin)).await.code(), 200);
    assert_eq!(server.plugins.rules_for(&mall).await.unwrap().version(), None);
    let rolled = admin("POST", "/admin/v1/plugins/rollback", Some(json!({ "platform": "mall" }))).await;
    assert_eq!(rolled.body["content"]["version"], 1);
    let listed = server
        .send(
            "GET",
            "/admin/v1/plugins?platform=mall",
            None,
            vec![("Authorization".into(), format!("Bearer {ADMIN}"))],
            None,
        )
        .await;
    assert_eq!(listed.body["content"]["versions"][0]["active"], true, "{listed:?}");
    let missing = admin("POST", "/admin/v1/plugins/activate", Some(json!({ "platform": "mall", "version": 7 }))).await;
    assert_eq!((missing.status, missing.code()), (404, 40400));
}
