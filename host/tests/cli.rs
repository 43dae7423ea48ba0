//! The operator CLI, run as the real binary against SQLite and PostgreSQL.

use std::process::{Command, Output};

use carbon_engine::testing::{self, TestDb};

fn carbon_host(db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_carbon-host"))
        .args(args)
        .env("CARBON_DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run carbon-host")
}

fn ok(db: &TestDb, args: &[&str]) -> String {
    let output = carbon_host(db, args);
    assert!(output.status.success(), "carbon-host {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn fails(db: &TestDb, args: &[&str]) -> String {
    let output = carbon_host(db, args);
    assert!(!output.status.success(), "carbon-host {args:?} should fail");
    String::from_utf8(output.stderr).unwrap()
}

async fn operator_flows(db: TestDb) {
    let app_id = ok(&db, &["platform", "add", "--name", "Green Mall"]).trim().to_owned();
    assert_eq!(app_id.len(), 32, "the appId alone on stdout: {app_id}");
    assert_eq!(ok(&db, &["platform", "add", "--name", "Fixed", "--app-id", "fixed-app"]).trim(), "fixed-app");
    assert!(fails(&db, &["platform", "add", "--name", "Again", "--app-id", "fixed-app"]).contains("already exists"));
    ok(
        &db,
        &[
            "provider",
            "add",
            "--equity-cid",
            "shop-1",
            "--name",
            "Tea",
            "--platform",
            &app_id,
            "--platform",
            "fixed-app",
        ],
    );
    assert!(
        fails(&db, &["provider", "add", "--equity-cid", "shop-2", "--name", "X", "--platform", "nope"])
            .contains("unknown platform")
    );

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("mappings.csv");
    let rows = format!(
        "app_id,cid,master_cid\n{app_id},c-1,m-1\n{app_id},c-2\nnope,c-3,m-3\n{app_id},c-4,m-4\n\n{app_id},c-1,m-9\n"
    );
    std::fs::write(&csv, rows).unwrap();
    let csv = csv.to_str().unwrap();
    let output = carbon_host(&db, &["ca", "import", csv]);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("2 imported, 0 already present, 3 refused"), "{stdout}");
    assert!(stderr.contains("line 3: invalid parameter row: expected 3 fields"), "{stderr}");
    assert!(stderr.contains("line 4: unknown platform `nope`"), "{stderr}");
    assert!(stderr.contains("line 7: conflict"), "{stderr}");
    assert!(ok(&db, &["ca", "import", csv]).contains("0 imported, 2 already present, 3 refused"));

    assert_eq!(
        ok(
            &db,
            &["credit", "points", "--master-cid", "m-1", "--class", "a", "--amount", "12.5", "--external-id", "g-1"]
        )
        .trim(),
        "credited"
    );
    assert!(
        ok(
            &db,
            &["credit", "points", "--master-cid", "m-1", "--class", "a", "--amount", "12.5", "--external-id", "g-1"]
        )
        .contains("already credited")
    );
    assert!(
        fails(
            &db,
            &["credit", "points", "--master-cid", "m-1", "--class", "b", "--amount", "1.001", "--external-id", "g-2"]
        )
        .contains("invalid parameter amount")
    );
    ok(
        &db,
        &[
            "credit",
            "reduction",
            "--master-cid",
            "m-1",
            "--kg",
            "1.5",
            "--scene",
            "地铁",
            "--methodology",
            "SHCER020200120241",
            "--external-id",
            "r-1",
        ],
    );

    // Authorize through the engine (the API's accountAuthorize), then cancel with the CLI.
    let engine = carbon_engine::Engine::with_default_rules(db.store.clone());
    let platform = engine.platform(&carbon_engine::ids::AppId::new(app_id.clone()).unwrap()).await.unwrap();
    let cid = carbon_engine::ids::SubCid::new("c-1").unwrap();
    engine.authorize(&platform, &cid).await.unwrap();
    assert_eq!(engine.point_balances(&platform, &cid).await.unwrap().point_a.to_string(), "12.5");
    ok(&db, &["authorization", "cancel", "--platform", &app_id, "--cid", "c-1"]);
    assert!(engine.point_balances(&platform, &cid).await.is_err());
    assert!(fails(&db, &["authorization", "cancel", "--platform", &app_id, "--cid", "c-1"]).contains("not authorized"));

    ok(&db, &["license", "add", "--name", "用户协议", "--url", "https://example.invalid/a.pdf"]);
    assert!(fails(&db, &["license", "add", "--name", "x", "--url", "ftp://a"]).contains("invalid parameter url"));
    assert_eq!(engine.store().licenses().await.unwrap().len(), 1);

    let shown = ok(&db, &["key", "show"]);
    assert!(shown.starts_with("-----BEGIN PUBLIC KEY-----"), "{shown}");
    assert_eq!(ok(&db, &["key", "show"]), shown, "show does not rotate");
    let rotated = ok(&db, &["keygen"]);
    assert!(rotated.starts_with("-----BEGIN PUBLIC KEY-----") && rotated != shown);
    assert_eq!(ok(&db, &["key", "show"]), rotated);

    assert!(ok(&db, &["verify"]).contains("ledger sound"));
    db.raw("UPDATE balances SET balance = balance + 1 WHERE account = 'person:m-1' AND asset = 1").await;
    let output = carbon_host(&db, &["verify"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("VIOLATION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_flows_on_sqlite() {
    operator_flows(testing::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_flows_on_postgres() {
    match testing::postgres().await {
        Some(db) => operator_flows(db).await,
        None => eprintln!("CARBON_TEST_PG_URL=off: PostgreSQL half skipped"),
    }
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_carbon-host"))
        .args(["verify"])
        .env("CARBON_DATABASE_URL", "sqlite::memory:")
        .env("CARBON_TIMESTAMP_WINDOW_SECS", "five")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("CARBON_TIMESTAMP_WINDOW_SECS"));
}
