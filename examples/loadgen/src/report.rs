//! The final report: throughput and latency percentiles per operation, every answer other
//! than 200, and the machine-readable `RESULT` lines.

use std::time::Duration;

use crate::load::{Op, Tally};

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// `purchase`, …, or `total`.
    pub name: &'static str,
    pub requests: u64,
    pub ok: u64,
    /// Requests per second over the whole load phase.
    pub rps: f64,
    /// Answers with code 200 per second.
    pub ok_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The value at quantile `q` of `sorted` (nearest rank), in milliseconds; 0 when empty.
fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

fn row(name: &'static str, requests: u64, ok: u64, latencies: &mut [u32], elapsed: Duration) -> Row {
    latencies.sort_unstable();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Row {
        name,
        requests,
        ok,
        rps: requests as f64 / seconds,
        ok_rps: ok as f64 / seconds,
        p50_ms: quantile_ms(latencies, 0.50),
        p99_ms: quantile_ms(latencies, 0.99),
        p999_ms: quantile_ms(latencies, 0.999),
        max_ms: latencies.last().map_or(0.0, |max| f64::from(*max) / 1000.0),
    }
}

/// One row per operation that ran, then `total`.
pub fn rows(tally: &mut Tally, elapsed: Duration) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut all = Vec::new();
    for op in Op::ALL {
        let requests = tally.requests.get(&op).copied().unwrap_or(0);
        if requests == 0 {
            continue;
        }
        let ok = tally.ok.get(&op).copied().unwrap_or(0);
        let latencies = tally.latencies_us.entry(op).or_default();
        all.extend_from_slice(latencies);
        rows.push(row(op.name(), requests, ok, latencies, elapsed));
    }
    let requests = tally.requests.values().sum();
    let ok = tally.ok.values().sum();
    rows.push(row("total", requests, ok, &mut all, elapsed));
    rows
}

/// Prints the table, the failures and one `RESULT` line per row.
pub fn print(rows: &[Row], tally: &Tally, elapsed: Duration) {
    println!("\n== load: {:.1} s", elapsed.as_secs_f64());
    println!(
        "{:<9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "op", "requests", "ok", "req/s", "ok/s", "p50 ms", "p99 ms", "p999 ms", "max ms"
    );
    for row in rows {
        println!(
            "{:<9} {:>9} {:>9} {:>10.1} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            row.name, row.requests, row.ok, row.rps, row.ok_rps, row.p50_ms, row.p99_ms, row.p999_ms, row.max_ms
        );
    }
    println!("(latencies of every answered request, any code; requests without an answer are not in them)");
    if tally.failures.is_empty() {
        println!("answers other than 200: none");
    } else {
        println!("answers other than 200:");
        for ((op, status, code), (count, example)) in &tally.failures {
            println!("  {:<9} HTTP {status:<3} code {code:<24} × {count:<8} e.g. {example}", op.name());
        }
    }
    if tally.refunds_replaced > 0 {
        println!("refunds replaced by purchases (nothing of this worker's left to refund): {}", tally.refunds_replaced);
    }
    for row in rows {
        println!(
            "RESULT op={} requests={} ok={} rps={:.1} ok_rps={:.1} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
            row.name, row.requests, row.ok, row.rps, row.ok_rps, row.p50_ms, row.p99_ms, row.p999_ms, row.max_ms
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let sorted: Vec<u32> = (1..=1000).map(|ms| ms * 1000).collect();
        assert_eq!(quantile_ms(&sorted, 0.5), 500.0);
        assert_eq!(quantile_ms(&sorted, 0.99), 990.0);
        assert_eq!(quantile_ms(&sorted, 0.999), 999.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
        assert_eq!(quantile_ms(&[7000], 0.999), 7.0);
    }
}
