//! The real `loadgen` binary against a real server on a real port (the e2e harness), on SQLite
//! and on PostgreSQL: it onboards, loads for a few seconds, and its checks pass — the bills the
//! server holds are exactly the orders that answered 200, and the ledger is sound.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use carbon_e2e::Server;
use carbon_e2e::carbon_engine::testing::TestDb;
use carbon_host::config::Config;

const ADMIN_TOKEN: &str = "loadgen-test-admin-token";

/// Starts a server with the admin API on `db`.
async fn server(db: TestDb) -> Server {
    Server::start(db, Config { admin_token: Some(ADMIN_TOKEN.into()), ..Config::default() }).await
}

/// Runs loadgen with `args` against `server`; its exit success, stdout and stderr.
async fn loadgen(server: &Server, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command.args(["--url", &server.base, "--admin-token", ADMIN_TOKEN]).args(args);
    let output = tokio::task::spawn_blocking(move || command.output().expect("run loadgen")).await.unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned());
    (output.status.success(), stdout, stderr)
}

/// The `key=value` fields of the `RESULT` line whose first field is `first` (e.g. `op=total`).
fn result(stdout: &str, first: &str) -> HashMap<String, String> {
    let line = stdout
        .lines()
        .find(|line| line.strip_prefix("RESULT ").is_some_and(|rest| rest.split(' ').next() == Some(first)))
        .unwrap_or_else(|| panic!("no `RESULT {first}` line in:\n{stdout}"));
    line.split(' ')
        .skip(1)
        .filter_map(|field| field.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

fn number(fields: &HashMap<String, String>, key: &str) -> f64 {
    fields[key].parse().unwrap_or_else(|_| panic!("{key} is not a number: {fields:?}"))
}

async fn mixed_load_settles_what_it_reports(db: TestDb) {
    let database_url = db.url.clone();
    let server = server(db).await;
    let mut args = vec![
        "--connections",
        "4",
        "--duration",
        "3",
        "--people",
        "40",
        "--mix",
        "purchase=60,refund=20,balance=10,bills=10",
        "--fail-on-errors",
    ];
    // `carbon-host verify` as well, when the workspace build put it next to loadgen.
    let carbon_host = Path::new(env!("CARGO_BIN_EXE_loadgen")).with_file_name("carbon-host");
    if carbon_host.exists() {
        args.extend(["--database-url", &database_url]);
    }
    let (success, stdout, stderr) = loadgen(&server, &args).await;
    assert!(success, "loadgen failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("settled"), "a progress line every second:\n{stderr}");

    let bills = result(&stdout, "check=bills");
    assert_eq!(bills["ok"], "true", "{stdout}");
    assert_eq!(bills["settled"], bills["db_bills"], "{stdout}");
    let purchases = result(&stdout, "op=purchase");
    let refunds = result(&stdout, "op=refund");
    assert!(number(&purchases, "ok") > 0.0 && number(&refunds, "ok") > 0.0, "{stdout}");
    assert_eq!(number(&purchases, "ok") + number(&refunds, "ok"), number(&bills, "settled"), "{stdout}");
    for op in ["op=balance", "op=bills", "op=total"] {
        let fields = result(&stdout, op);
        assert_eq!(fields["requests"], fields["ok"], "{op}: {stdout}");
        assert!(number(&fields, "p50_ms") <= number(&fields, "p99_ms"), "{op}: {stdout}");
        assert!(number(&fields, "p99_ms") <= number(&fields, "p999_ms"), "{op}: {stdout}");
    }
    assert_eq!(result(&stdout, "check=ledger")["ok"], "true", "{stdout}");
    if carbon_host.exists() {
        assert_eq!(result(&stdout, "check=cli_verify")["ok"], "true", "{stdout}");
    }
    assert!(stdout.contains("answers other than 200: none"), "{stdout}");

    // A second run against the same database onboards anew under its own names.
    let (success, stdout, stderr) =
        loadgen(&server, &["--connections", "2", "--requests", "60", "--people", "5", "--mix", "purchase=1"]).await;
    assert!(success, "second run failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let bills = result(&stdout, "check=bills");
    assert_eq!((bills["settled"].as_str(), bills["db_bills"].as_str()), ("60", "60"), "{stdout}");
}

async fn ping_only_counts_requests(db: TestDb) {
    let server = server(db).await;
    let (success, stdout, stderr) =
        loadgen(&server, &["--only", "ping", "--connections", "3", "--duration", "1", "--people", "3"]).await;
    assert!(success, "loadgen failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let ping = result(&stdout, "op=ping");
    assert!(number(&ping, "ok") > 0.0 && ping["ok"] == ping["requests"], "{stdout}");
    assert_eq!(result(&stdout, "check=bills")["db_bills"], "0", "{stdout}");
}

#[test]
fn bad_usage_exits_non_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--admin-token", ADMIN_TOKEN, "--mix", "buy=1"])
        .output()
        .expect("run loadgen");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown operation `buy`"));
}

carbon_e2e::on_both_backends!(mixed_load_settles_what_it_reports, ping_only_counts_requests);
