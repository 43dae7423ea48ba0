//! Run with `cargo run --release -p billgen -- generate --database-url sqlite:/var/tmp/bills.db`
//! and then `cargo run --release -p billgen -- bench --database-url sqlite:/var/tmp/bills.db`.
//!
//! `generate` fills a fresh database with bill rows (`orders`) straight through SQL, without
//! the HTTP path or the settlement path, so ten million rows take minutes instead of hours.
//! `bench` opens the same database through `carbon_engine` and times realistic bill queries
//! and balance reads, printing p50/p99/max per kind. Both take `--database-url` as
//! `sqlite:PATH` or `postgres://…`; see `examples/README.md` and `docs/BENCHMARKS.md`.

mod bench;
mod generate;

use clap::{Parser, Subcommand};

/// The end of the generated time span unless told otherwise: 2026-12-01 00:00:00 UTC, ms.
pub const DEFAULT_END_MS: i64 = 1_796_083_200_000;

#[derive(Parser)]
#[command(about = "Generate a large bill data set and benchmark bill queries and balance reads")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fill a fresh database with generated bills (journal rows, orders, person balances).
    Generate(generate::Args),
    /// Time bill queries and balance reads on a generated database.
    Bench(bench::Args),
}

/// The shape of the data set; `bench` must be given the same values as `generate`.
#[derive(clap::Args, Clone, Debug)]
pub struct Shape {
    /// `sqlite:PATH` or `postgres://…`.
    #[arg(long, env = "CARBON_DATABASE_URL")]
    pub database_url: String,
    /// Platforms; the first (`billgen-0`) gets `--big-platform-percent` of the rows.
    #[arg(long, default_value_t = 5)]
    pub platforms: u32,
    /// Share of the rows that belong to the first platform, in percent.
    #[arg(long, default_value_t = 80)]
    pub big_platform_percent: u32,
    /// People (master cids `m-0` …); a few have many bills, most have few.
    #[arg(long, default_value_t = 200_000)]
    pub people: u32,
    /// Providers (`shop-0` …), linked to every platform; low numbers sell more.
    #[arg(long, default_value_t = 20)]
    pub providers: u32,
    /// Days the `transactionTime`s spread over.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// End of the time span, ms since the epoch.
    #[arg(long, default_value_t = DEFAULT_END_MS)]
    pub end_ms: i64,
}

impl Shape {
    /// Start of the time span, ms.
    pub fn start_ms(&self) -> i64 {
        self.end_ms - i64::from(self.days) * 86_400_000
    }

    /// The app id of platform `index`.
    pub fn app_id(index: u32) -> String {
        format!("billgen-{index}")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate(args) => generate::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}
