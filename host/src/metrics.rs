//! Prometheus metrics in the text exposition format, without a metrics framework: requests by
//! route and envelope code, and the latency of settlements.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the settlement latency buckets, in seconds.
const SETTLE_BUCKETS_SECS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The process's metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u32), u64>>,
    settle_buckets: [AtomicU64; SETTLE_BUCKETS_SECS.len()],
    settle_count: AtomicU64,
    settle_sum_micros: AtomicU64,
}

impl Metrics {
    /// Counts one answered request of `route` with envelope `code`.
    pub fn record_request(&self, route: &str, code: u32) {
        let mut requests = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *requests.entry((route.to_owned(), code)).or_default() += 1;
    }

    /// Observes the latency of one `orderSettel` call.
    pub fn observe_settlement(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (bound, bucket) in SETTLE_BUCKETS_SECS.iter().zip(&self.settle_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.settle_count.fetch_add(1, Ordering::Relaxed);
        self.settle_sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP carbon_http_requests_total Answered API requests by route and envelope code.\n");
        out.push_str("# TYPE carbon_http_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for ((route, code), count) in requests.iter() {
            let _ = writeln!(out, "carbon_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {count}");
        }
        drop(requests);
        out.push_str("# HELP carbon_settlement_seconds Latency of orderSettel, end to end in the server.\n");
        out.push_str("# TYPE carbon_settlement_seconds histogram\n");
        for (bound, bucket) in SETTLE_BUCKETS_SECS.iter().zip(&self.settle_buckets) {
            let _ =
                writeln!(out, "carbon_settlement_seconds_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
        }
        let count = self.settle_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "carbon_settlement_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.settle_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "carbon_settlement_seconds_sum {sum}");
        let _ = writeln!(out, "carbon_settlement_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.record_request("/x", 200);
        metrics.record_request("/x", 200);
        metrics.record_request("/x", 42201);
        metrics.observe_settlement(Duration::from_millis(3));
        metrics.observe_settlement(Duration::from_secs(5));
        let text = metrics.render();
        assert!(text.contains("carbon_http_requests_total{route=\"/x\",code=\"200\"} 2"), "{text}");
        assert!(text.contains("carbon_http_requests_total{route=\"/x\",code=\"42201\"} 1"), "{text}");
        assert!(text.contains("carbon_settlement_seconds_bucket{le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("carbon_settlement_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("carbon_settlement_seconds_bucket{le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("carbon_settlement_seconds_count 2"), "{text}");
    }
}
