//! The operator CLI, run as the real binary against SQLite and PostgreSQL.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// A push as received: `X-Carbon-Timestamp`, `X-Carbon-Signature`, body.
type Push = (String, String, Vec<u8>);

/// A platform's push receiver: fails the first `failures` pushes with HTTP 500, records all.
#[derive(Clone, Default)]
struct Receiver {
    failures: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Push>>>,
}

impl Receiver {
    async fn start(failures: usize) -> (Receiver, String) {
        use axum::http::{HeaderMap, StatusCode};
        let receiver = Receiver { failures: Arc::new(AtomicUsize::new(failures)), ..Receiver::default() };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/push",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
                    let (timestamp, signature) = (header("X-Carbon-Timestamp"), header("X-Carbon-Signature"));
                    state.received.lock().unwrap().push((timestamp, signature, body.to_vec()));
                    let fail = state.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                    if fail.is_ok() {
                        (StatusCode::INTERNAL_SERVER_ERROR, "{}")
                    } else {
                        (StatusCode::OK, r#"{"code":200}"#)
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/push", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    async fn wait_for(&self, count: usize) -> Vec<Push> {
        for _ in 0..400 {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{count} pushes did not arrive in 10 s");
    }
}

async fn pushes_are_listed_requeued_and_signed(db: TestDb) {
    use carbon_engine::ids::{AppId, MasterCid, SubCid};
    let engine = carbon_engine::Engine::with_default_rules(db.store.clone());
    let platform = engine.add_platform("mall", Some(AppId::new("app-p").unwrap())).await.unwrap();
    let cid = SubCid::new("c-1").unwrap();
    engine.map_cid(&platform, &cid, &MasterCid::new("m-1").unwrap()).await.unwrap();
    let (receiver, url) = Receiver::start(3).await;
    engine.store().put_subscription(platform.id, 2, &url, 1).await.unwrap();
    engine.authorize(&platform, &cid).await.unwrap();
    ok(&db, &["authorization", "cancel", "--platform", "app-p", "--cid", "c-1"]);

    let config = carbon_host::config::Config {
        push_allow_private: true,
        push_poll: Duration::from_millis(50),
        push_retry: Duration::from_millis(100),
        ..carbon_host::config::Config::default()
    };
    let state = carbon_host::server::state(engine.store().clone(), config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(carbon_host::server::serve(listener, state, async {
        let _ = stopped.await;
    }));
    // The authorization fails three times and is dead-lettered; the cancellation goes on.
    let received = receiver.wait_for(4).await;
    assert_eq!(received[3].2, br#"{"cid":"c-1","type":-1}"#);
    let mut dead = String::new();
    for _ in 0..200 {
        dead = ok(&db, &["push", "list", "--dead"]);
        if dead.lines().count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let lines: Vec<&str> = dead.lines().collect();
    assert!(lines[0].starts_with("id\tplatform\tappId\ttype"), "{dead}");
    let fields: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!((fields[2], fields[3], fields[4], fields[5], fields[6]), ("app-p", "authorization", "dead", "1", "3"));
    assert_eq!(fields[8], "HTTP 500");
    let all = ok(&db, &["push", "list"]);
    assert_eq!(all.lines().count(), 3, "{all}");
    assert!(all.lines().nth(1).unwrap().contains("\tdelivered\t"), "newest first: {all}");

    let id = fields[0];
    assert!(ok(&db, &["push", "requeue", id]).contains("re-queued"));
    let received = receiver.wait_for(5).await;
    assert_eq!(received[4].2, br#"{"cid":"c-1","type":1}"#, "the re-queued batch is delivered");
    for _ in 0..200 {
        if ok(&db, &["push", "list", "--dead"]).lines().count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(fails(&db, &["push", "requeue", id]).contains("not dead-lettered"));
    assert!(fails(&db, &["push", "requeue", "987654"]).contains("no push batch 987654"));

    // Every push verifies with the public key `key show` prints, over timestamp + "." + body.
    use base64::Engine as _;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let pem = ok(&db, &["key", "show"]);
    let key = rsa::RsaPublicKey::from_public_key_pem(&pem).unwrap();
    let verifier = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(key);
    for (timestamp, signature, body) in &received {
        let signature = base64::engine::general_purpose::STANDARD.decode(signature).unwrap();
        let signature = rsa::pkcs1v15::Signature::try_from(signature.as_slice()).unwrap();
        let mut message = format!("{timestamp}.").into_bytes();
        message.extend_from_slice(body);
        assert!(verifier.verify(&message, &signature).is_ok(), "signature of {}", String::from_utf8_lossy(body));
        message.push(b' ');
        assert!(verifier.verify(&message, &signature).is_err());
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_listed_requeued_and_signed_on_sqlite() {
    pushes_are_listed_requeued_and_signed(testing::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_listed_requeued_and_signed_on_postgres() {
    match testing::postgres().await {
        Some(db) => pushes_are_listed_requeued_and_signed(db).await,
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
