//! Run with `cargo run --release -p loadgen -- --url http://127.0.0.1:8080 --duration 30` against a
//! running `carbon-host serve` started with `CARBON_ADMIN_TOKEN` set (the same token here).
//!
//! A load generator for the platform API. Each run onboards its own platform, provider and
//! people (unique names from a run id, so runs repeat against one database) through the admin
//! API, gets a real access token (RSA-encrypted appId), authorizes the people, then drives
//! `--connections` concurrent clients: purchases, partial refunds of its own purchases, balance
//! reads and bill queries, in the proportions of `--mix`. It prints a progress line every
//! second, a report per operation (throughput, p50/p99/p999 latency, every answer other than
//! 200) and `RESULT` lines for scripts, then verifies: the bills the server holds for the run's
//! platform are exactly the orders that answered 200, and the ledger invariants hold
//! (`GET /admin/v1/verify`, and `carbon-host verify` when `--database-url` is given). Any
//! mismatch or violation exits 1.

mod load;
mod onboard;
mod report;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rand::Rng;
use reqwest::Method;
use serde_json::json;

use load::{Live, Mix, Op, Plan, Tally};
use wire::{AdminBody, Client, now_ms};

/// Load generator for a running carbon-host.
#[derive(Debug, Parser)]
#[command(name = "loadgen", after_help = EXAMPLES)]
struct Args {
    /// The server.
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token of the admin API (the server's CARBON_ADMIN_TOKEN).
    #[arg(long, env = "CARBON_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Concurrent clients, each one keep-alive connection sending one request at a time.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load (default 10 unless --requests is given).
    #[arg(long)]
    duration: Option<f64>,
    /// Total requests of the load phase (with --duration: whichever ends first).
    #[arg(long)]
    requests: Option<u64>,
    /// Weights of the operations: purchase, refund, balance, bills, ping.
    #[arg(long, default_value = "purchase=70,refund=10,balance=10,bills=10")]
    mix: String,
    /// Only this operation (overrides --mix). `ping` is licenseAgreement: the cheapest call that
    /// still checks the token and records the request id — the HTTP ceiling.
    #[arg(long, value_name = "OP")]
    only: Option<String>,
    /// People (cid mappings, credits, authorizations); requests pick one at random.
    #[arg(long, default_value_t = 1000)]
    people: usize,
    /// Class A points credited to each person.
    #[arg(long, default_value = "1000000")]
    points_per_person: String,
    /// Smallest purchase, points.
    #[arg(long, default_value = "0.01")]
    min_purchase: String,
    /// Largest purchase, points.
    #[arg(long, default_value = "10")]
    max_purchase: String,
    /// A rules plugin (.wasm component) to install and activate for the run's platform first.
    #[arg(long, value_name = "FILE")]
    plugin: Option<PathBuf>,
    /// Names the run's platform, provider, people and orders (default: random).
    #[arg(long)]
    run_id: Option<String>,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// The server's wall-time zone offset, for transactionTime and bill ranges (server default
    /// Asia/Shanghai).
    #[arg(long, default_value = "+08:00", allow_hyphen_values = true)]
    utc_offset: String,
    /// Also run `carbon-host verify --database-url URL` at the end.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The carbon-host binary for --database-url (default: next to this binary).
    #[arg(long, value_name = "PATH")]
    carbon_host_bin: Option<PathBuf>,
    /// Skip the checks at the end (ledger invariants and the bill count).
    #[arg(long)]
    no_verify: bool,
    /// Exit 1 when any request answered other than 200 (default: report them only).
    #[arg(long)]
    fail_on_errors: bool,
}

const EXAMPLES: &str = "\
Examples:
  CARBON_ADMIN_TOKEN=0123456789abcdef loadgen --duration 30
  loadgen --connections 16 --requests 20000 --mix purchase=100
  loadgen --only ping --duration 10
  loadgen --plugin default_rules.wasm --mix purchase=100 --duration 20
  loadgen --database-url sqlite:///tmp/carbon.db   # also runs `carbon-host verify` on it

Output: progress on stderr every second; the report and `RESULT op=… rps=… p50_ms=…` lines
(one per operation and one for the total), then `RESULT check=… ` lines on stdout.
Exit 0 when every check passed, 1 on a mismatch, violation or failure, 2 on bad usage.";

/// A decimal of points as cents: `"12.5"` → 1250.
fn parse_cents(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || fraction.len() > 2 || !(whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())) {
        return None;
    }
    let fraction = format!("{fraction:0<2}");
    whole.parse::<i64>().ok()?.checked_mul(100)?.checked_add(fraction.parse::<i64>().ok()?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("loadgen: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole run; `Ok(false)` when a check failed.
async fn run(args: Args) -> anyhow::Result<bool> {
    let mix = match &args.only {
        Some(op) => Mix::only(Op::parse(op).map_err(anyhow::Error::msg)?),
        None => Mix::parse(&args.mix).map_err(|err| anyhow::anyhow!("--mix: {err}"))?,
    };
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.people > 0, "--people must be at least 1");
    let utc_offset_minutes = wire::parse_utc_offset(&args.utc_offset)
        .with_context(|| format!("--utc-offset: `{}` is not like +08:00", args.utc_offset))?;
    let purchase_cents = match (parse_cents(&args.min_purchase), parse_cents(&args.max_purchase)) {
        (Some(min), Some(max)) if 0 < min && min <= max => (min, max),
        _ => bail!("--min-purchase/--max-purchase must be amounts with ≤ 2 decimals, 0 < min ≤ max"),
    };
    let plugin = args
        .plugin
        .as_ref()
        .map(|path| std::fs::read(path).with_context(|| format!("cannot read --plugin {}", path.display())))
        .transpose()?;
    let run_id = args.run_id.clone().unwrap_or_else(|| format!("{:08x}", rand::thread_rng().r#gen::<u32>()));
    let mut client =
        Client::new(&args.url, &args.admin_token, args.connections, Duration::from_secs_f64(args.timeout))?;

    let run_started_ms = now_ms();
    eprintln!("loadgen run {run_id}: onboarding {} people at {}", args.people, args.url);
    let onboard_started = Instant::now();
    let setup = onboard::Setup {
        run_id: &run_id,
        people: args.people,
        points_per_person: &args.points_per_person,
        plugin: plugin.as_deref(),
        parallel: args.connections.min(32),
    };
    let onboarded = onboard::onboard(&mut client, &setup).await?;
    eprintln!(
        "onboarded in {:.1} s: platform {}, provider {}",
        onboard_started.elapsed().as_secs_f64(),
        onboarded.app_id,
        onboarded.equity_cid
    );

    let duration = match (args.duration, args.requests) {
        (None, None) => Some(10.0),
        (duration, _) => duration,
    };
    let started = Instant::now();
    let plan = Arc::new(Plan {
        run_id: run_id.clone(),
        people: args.people,
        equity_cid: onboarded.equity_cid.clone(),
        utc_offset_minutes,
        mix,
        deadline: duration.map(|secs| started + Duration::from_secs_f64(secs)),
        requests: args.requests,
        purchase_cents,
    });
    let live = Arc::new(Live::default());
    let client = Arc::new(client);
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..args.connections {
        workers.spawn(load::worker(index, Arc::clone(&client), Arc::clone(&plan), Arc::clone(&live)));
    }
    let progress = tokio::spawn(progress(Arc::clone(&live), started));
    let mut tally = Tally::default();
    while let Some(result) = workers.join_next().await {
        tally.merge(result.context("a worker panicked")?);
    }
    let elapsed = started.elapsed();
    progress.abort();

    let rows = report::rows(&mut tally, elapsed);
    report::print(&rows, &tally, elapsed);
    if args.no_verify {
        return Ok(true);
    }
    let mut sound = true;
    if args.fail_on_errors && !tally.failures.is_empty() {
        println!("RESULT check=errors ok=false failures={}", tally.failures.values().map(|(n, _)| n).sum::<u64>());
        sound = false;
    }
    sound &= check_bills(&client, &plan, &tally, run_started_ms).await?;
    sound &= check_ledger(&client).await?;
    if let Some(url) = &args.database_url {
        sound &= check_cli(args.carbon_host_bin.as_deref(), url)?;
    }
    println!("RESULT run={run_id} verdict={}", if sound { "pass" } else { "FAIL" });
    Ok(sound)
}

/// Prints elapsed time, requests, the rate of the last second, errors and settled orders
/// every second, on stderr.
async fn progress(live: Arc<Live>, started: Instant) {
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = (0_u64, started);
    loop {
        let now = ticks.tick().await.into_std();
        let done = live.done.load(Ordering::Relaxed);
        let rate = (done - last.0) as f64 / now.duration_since(last.1).as_secs_f64().max(1e-9);
        eprintln!(
            "[{:>6.1} s] requests {done:>9}  rate {rate:>8.1}/s  errors {:>6}  settled {:>9}",
            now.duration_since(started).as_secs_f64(),
            live.errors.load(Ordering::Relaxed),
            live.settled.load(Ordering::Relaxed),
        );
        last = (done, now);
    }
}

/// The server's bills of the run's platform must be exactly the orders that answered 200 (a
/// range when some orders' outcome stayed unknown).
async fn check_bills(client: &Client, plan: &Plan, tally: &Tally, run_started_ms: i64) -> anyhow::Result<bool> {
    let in_db = count_bills(client, plan, run_started_ms - 86_400_000, now_ms() + 86_400_000).await?;
    let (low, high) = (tally.settled, tally.settled + tally.unresolved);
    let ok = (low..=high).contains(&in_db);
    println!(
        "RESULT check=bills ok={ok} settled={} unresolved={} resolved_by_resend={} db_bills={in_db}",
        tally.settled, tally.unresolved, tally.resolved_settled
    );
    if !ok {
        eprintln!(
            "MISMATCH: {} orders answered 200 (+{} unknown) but the server holds {in_db} bills",
            low, tally.unresolved
        );
    }
    Ok(ok)
}

/// The platform's bills with `transactionTime` in `[begin_ms, end_ms]`. The server counts at
/// most 10,000 rows per query (`totalCapped`), so a capped range is split in halves, down to
/// the one-second resolution of wire times.
async fn count_bills(client: &Client, plan: &Plan, begin_ms: i64, end_ms: i64) -> anyhow::Result<u64> {
    let mut ranges = vec![(begin_ms.div_euclid(1000), end_ms.div_euclid(1000))];
    let mut total = 0;
    while let Some((first_s, last_s)) = ranges.pop() {
        let (begin, end) = (
            wire::wall_time(first_s * 1000, plan.utc_offset_minutes),
            wire::wall_time(last_s * 1000, plan.utc_offset_minutes),
        );
        let query = json!({ "beginTime": begin, "endTime": end, "page": 1, "pageSize": 1 });
        let answer = client.call(Method::POST, "/account/getPointsBillInfo", Some(&query)).await;
        if !answer.is_ok() {
            bail!("the bill count query answered {} (HTTP {}): {}", answer.code_key(), answer.status, answer.msg);
        }
        let count = answer.content["total"].as_u64().context("no total in getPointsBillInfo")?;
        if answer.content["totalCapped"].as_bool() != Some(true) {
            total += count;
        } else if first_s < last_s {
            let middle = first_s + (last_s - first_s) / 2;
            ranges.push((first_s, middle));
            ranges.push((middle + 1, last_s));
        } else {
            bail!("more than {count} bills in the second {begin}: cannot count them through the API");
        }
    }
    Ok(total)
}

/// `GET /admin/v1/verify`: every ledger invariant of the whole database.
async fn check_ledger(client: &Client) -> anyhow::Result<bool> {
    let started = Instant::now();
    let report = client.admin(Method::GET, "/verify", AdminBody::None).await?;
    let sound = report["sound"].as_bool().context("no `sound` in /admin/v1/verify")?;
    println!(
        "RESULT check=ledger ok={sound} orders_checked={} journals_checked={} balances_checked={} secs={:.1}",
        report["ordersChecked"],
        report["journalsChecked"],
        report["balancesChecked"],
        started.elapsed().as_secs_f64()
    );
    for violation in report["violations"].as_array().into_iter().flatten().take(20) {
        eprintln!("VIOLATION: {}", violation.as_str().unwrap_or_default());
    }
    Ok(sound)
}

/// `carbon-host verify --database-url URL`, the operator's own check, on the same database.
fn check_cli(binary: Option<&std::path::Path>, database_url: &str) -> anyhow::Result<bool> {
    let binary = match binary {
        Some(binary) => binary.to_owned(),
        None => std::env::current_exe()
            .context("cannot find this binary")?
            .with_file_name(format!("carbon-host{}", std::env::consts::EXE_SUFFIX)),
    };
    let output = std::process::Command::new(&binary)
        .args(["verify", "--database-url", database_url])
        .output()
        .with_context(|| format!("cannot run {} (--carbon-host-bin)", binary.display()))?;
    let ok = output.status.success();
    println!("RESULT check=cli_verify ok={ok}");
    if !ok {
        eprintln!(
            "{} verify failed ({}):\n{}{}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purchase_bounds_parse_as_cents() {
        assert_eq!(parse_cents("0.01"), Some(1));
        assert_eq!(parse_cents("10"), Some(1000));
        assert_eq!(parse_cents("12.5"), Some(1250));
        assert_eq!(parse_cents("1.001"), None);
        assert_eq!(parse_cents("-1"), None);
        assert_eq!(parse_cents(".5"), None);
    }

    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
