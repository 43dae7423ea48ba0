//! `billgen bench`: bill queries and balance reads through `carbon_engine`, one caller.
//!
//! Each round runs every query kind once with fresh random parameters, so the kinds share the
//! cache state; after a warm-up the latencies of `--iterations` rounds are reported per kind.

use std::time::{Duration, Instant};

use anyhow::Context;
use carbon_engine::bill::BillQuery;
use carbon_engine::directory::Platform;
use carbon_engine::ids::{AppId, EquityCid, MasterCid, SubCid};
use carbon_engine::{Engine, EngineError};

use crate::Shape;

/// Options of `bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    shape: Shape,
    /// Measured rounds (each runs every kind once).
    #[arg(long, default_value_t = 500)]
    iterations: usize,
    /// Unmeasured rounds first.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Page size of the deep page; its page number is the deepest allowed (10,000 rows).
    #[arg(long, default_value_t = 100)]
    deep_page_size: u32,
}

const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Copy, Debug)]
enum Kind {
    RecentDay,
    PersonYear,
    ProviderMonth,
    PersonProviderYear,
    YearFirstPage,
    YearDeepPage,
    SmallPlatformYear,
    Balances,
}

const KINDS: [Kind; 8] = [
    Kind::RecentDay,
    Kind::PersonYear,
    Kind::ProviderMonth,
    Kind::PersonProviderYear,
    Kind::YearFirstPage,
    Kind::YearDeepPage,
    Kind::SmallPlatformYear,
    Kind::Balances,
];

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::RecentDay => "big platform, last 24 h, page 1 of 20",
            Kind::PersonYear => "one person, whole span, page 1 of 20",
            Kind::ProviderMonth => "one provider, last 30 days, page 1 of 50",
            Kind::PersonProviderYear => "one person at one provider, whole span, page 1 of 20",
            Kind::YearFirstPage => "big platform, whole span, page 1 of 500",
            Kind::YearDeepPage => "big platform, whole span, deepest allowed page",
            Kind::SmallPlatformYear => "small platform, whole span, page 1 of 20",
            Kind::Balances => "balances of one person",
        }
    }
}

/// SplitMix64: reproducible parameters without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u32) -> u32 {
        (self.next() % u64::from(bound)) as u32
    }
}

struct Samples {
    durations: Vec<Duration>,
    rows: u64,
    totals: u64,
    errors: u64,
}

/// Times the query kinds on the database named by `args`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let shape = &args.shape;
    let store = carbon_engine::store::open(&shape.database_url).await?;
    let engine = Engine::with_default_rules(store.clone());
    let platform = |index: u32| {
        let engine = &engine;
        async move {
            let app_id = AppId::new(Shape::app_id(index))?;
            engine
                .store()
                .platform_by_app_id(&app_id)
                .await?
                .with_context(|| format!("platform {app_id} not found: run `billgen generate` first"))
        }
    };
    let big = platform(0).await?;
    let small = if shape.platforms > 1 { platform(1).await? } else { big.clone() };
    let mut rng = Rng(0x5EED);
    let mut samples: Vec<Samples> =
        KINDS.iter().map(|_| Samples { durations: Vec::new(), rows: 0, totals: 0, errors: 0 }).collect();
    for round in 0..args.warmup + args.iterations {
        for (slot, kind) in KINDS.iter().enumerate() {
            let started = Instant::now();
            let outcome = one(&engine, shape, &big, &small, *kind, &mut rng, args.deep_page_size).await;
            let elapsed = started.elapsed();
            if round < args.warmup {
                continue;
            }
            let sample = &mut samples[slot];
            sample.durations.push(elapsed);
            match outcome {
                Ok((rows, total)) => {
                    sample.rows += rows;
                    sample.totals += total;
                }
                Err(EngineError::InvalidField(field)) => {
                    sample.errors += 1;
                    if sample.errors == 1 {
                        println!("{kind:?} refused: {}: {}", field.field, field.reason);
                    }
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
    println!("{} rounds after {} warm-up rounds, one caller, {}", args.iterations, args.warmup, shape.database_url);
    println!("| query | p50 ms | p99 ms | max ms | rows/answer | total/answer | what |");
    println!("|---|---|---|---|---|---|---|");
    for (kind, sample) in KINDS.iter().zip(&mut samples) {
        sample.durations.sort();
        let count = sample.durations.len().max(1);
        let at = |quantile: f64| {
            let index = ((quantile * count as f64).ceil() as usize).clamp(1, count) - 1;
            sample.durations.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let errors = if sample.errors > 0 { format!(" ({} refused)", sample.errors) } else { String::new() };
        println!(
            "| {kind:?} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {}{errors} |",
            at(0.5),
            at(0.99),
            at(1.0),
            sample.rows as f64 / count as f64,
            sample.totals as f64 / count as f64,
            kind.describe(),
        );
    }
    Ok(())
}

/// Runs one query of `kind`; answers (rows returned, total).
async fn one(
    engine: &Engine,
    shape: &Shape,
    big: &Platform,
    small: &Platform,
    kind: Kind,
    rng: &mut Rng,
    deep_page_size: u32,
) -> Result<(u64, u64), EngineError> {
    let (start, end) = (shape.start_ms(), shape.end_ms);
    // People are drawn like the generator draws them: a few often, most rarely.
    let person = (u64::from(rng.below(shape.people)) * u64::from(rng.below(1024)) / 1024) as u32;
    let provider = (u64::from(rng.below(shape.providers)) * u64::from(rng.below(1024)) / 1024) as u32;
    let cid = SubCid::new(format!("c0-{person}")).expect("valid cid");
    let equity_cid = EquityCid::new(format!("shop-{provider}")).expect("valid equity cid");
    let whole = BillQuery { cid: None, equity_cid: None, begin_ms: start, end_ms: end, page: 1, page_size: 20 };
    let (platform, query) = match kind {
        Kind::RecentDay => (big, BillQuery { begin_ms: end - DAY_MS, ..whole }),
        Kind::PersonYear => (big, BillQuery { cid: Some(cid), ..whole }),
        Kind::ProviderMonth => {
            (big, BillQuery { equity_cid: Some(equity_cid), begin_ms: end - 30 * DAY_MS, page_size: 50, ..whole })
        }
        Kind::PersonProviderYear => (big, BillQuery { cid: Some(cid), equity_cid: Some(equity_cid), ..whole }),
        Kind::YearFirstPage => (big, BillQuery { page_size: 500, ..whole }),
        Kind::YearDeepPage => {
            let page = (10_000 / deep_page_size).max(1);
            (big, BillQuery { page, page_size: deep_page_size, ..whole })
        }
        Kind::SmallPlatformYear => (small, whole),
        Kind::Balances => {
            let master = MasterCid::new(format!("m-{person}")).expect("valid master cid");
            let balances = engine.store().balances(&master).await?;
            return Ok((u64::from(balances.point_a.0 > 0), 0));
        }
    };
    let page = engine.bills(platform, &query).await?;
    Ok((page.bills.len() as u64, page.total))
}
