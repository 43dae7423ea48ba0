//! Prometheus metrics in the text exposition format, without a metrics framework: requests by
//! route and envelope code, the latency of settlements, and pushes per platform.
//!
//! Platforms are labelled by their numeric id (`carbon-host push list` shows it with the
//! appId): an appId is a credential and `/metrics` is not authenticated.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use carbon_engine::ids::PlatformId;
use carbon_engine::push::{PushBacklog, PushKind};
use carbon_engine::store::GroupCommitStats;

/// Upper bounds of the settlement latency buckets, in seconds.
const SETTLE_BUCKETS_SECS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The process's metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u32), u64>>,
    settle_buckets: [AtomicU64; SETTLE_BUCKETS_SECS.len()],
    settle_count: AtomicU64,
    settle_sum_micros: AtomicU64,
    settled_new: AtomicU64,
    settled_replayed: AtomicU64,
    pushes: Mutex<BTreeMap<(PushEvent, i64, PushKind), u64>>,
}

/// What happened to a push, counted per platform and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PushEvent {
    /// A request was sent (an attempt).
    Sent,
    /// The platform acknowledged it (`"code": 200`).
    Acked,
    /// The attempt failed.
    Failed,
    /// That failure was the last attempt: the batch is dead-lettered.
    DeadLettered,
}

impl PushEvent {
    fn metric(self) -> (&'static str, &'static str) {
        match self {
            PushEvent::Sent => ("carbon_push_sent_total", "Push requests sent (attempts)."),
            PushEvent::Acked => ("carbon_push_acked_total", "Pushes the platform acknowledged with code 200."),
            PushEvent::Failed => ("carbon_push_failed_total", "Push attempts that failed."),
            PushEvent::DeadLettered => ("carbon_push_dead_lettered_total", "Push batches dead-lettered."),
        }
    }
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

    /// Counts one successful `orderSettel`: settled now (`new`) or answered from the order
    /// settled before (`replayed`). Summed over all instances, `new` equals the orders stored.
    pub fn record_settled(&self, outcome: carbon_engine::Settled) {
        let counter = match outcome {
            carbon_engine::Settled::New => &self.settled_new,
            carbon_engine::Settled::Replayed => &self.settled_replayed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Successful `orderSettel` calls of this instance so far: (new, replayed).
    pub fn settled_counts(&self) -> (u64, u64) {
        (self.settled_new.load(Ordering::Relaxed), self.settled_replayed.load(Ordering::Relaxed))
    }

    /// Counts one push event of a platform's stream.
    pub fn record_push(&self, event: PushEvent, platform_id: PlatformId, kind: PushKind) {
        let mut pushes = self.pushes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *pushes.entry((event, platform_id.0, kind)).or_default() += 1;
    }

    /// How often `event` happened to the platform's stream (for tests and logs).
    pub fn push_count(&self, event: PushEvent, platform_id: PlatformId, kind: PushKind) -> u64 {
        let pushes = self.pushes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pushes.get(&(event, platform_id.0, kind)).copied().unwrap_or(0)
    }

    /// The text exposition of every metric; `backlog` (read from the database, so it covers
    /// every instance) gives the push gauges at `now_ms`, and `group` the group-commit
    /// writer's counters when the store groups its writes.
    pub fn render_with(&self, backlog: &[PushBacklog], group: Option<GroupCommitStats>, now_ms: i64) -> String {
        let mut out = self.render();
        if let Some(group) = group {
            render_group_commit(&mut out, group);
        }
        out.push_str("# HELP carbon_push_pending_rows Bills and authorization changes not yet delivered.\n");
        out.push_str("# TYPE carbon_push_pending_rows gauge\n");
        for item in backlog {
            let _ = writeln!(
                out,
                "carbon_push_pending_rows{{{}}} {}",
                labels(item.platform_id.0, item.kind),
                item.pending_rows
            );
        }
        out.push_str("# HELP carbon_push_lag_seconds Age of the oldest row not yet delivered.\n");
        out.push_str("# TYPE carbon_push_lag_seconds gauge\n");
        for item in backlog {
            let lag = item.oldest_pending_at_ms.map_or(0.0, |oldest| (now_ms - oldest).max(0) as f64 / 1000.0);
            let _ = writeln!(out, "carbon_push_lag_seconds{{{}}} {lag}", labels(item.platform_id.0, item.kind));
        }
        out.push_str("# HELP carbon_push_dead_batches Dead-lettered batches waiting for an operator.\n");
        out.push_str("# TYPE carbon_push_dead_batches gauge\n");
        for item in backlog {
            let _ = writeln!(
                out,
                "carbon_push_dead_batches{{{}}} {}",
                labels(item.platform_id.0, item.kind),
                item.dead_batches
            );
        }
        out
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
        out.push_str("# HELP carbon_settlements_total Successful orderSettel calls: settled now, or replayed.\n");
        out.push_str("# TYPE carbon_settlements_total counter\n");
        let (new, replayed) = self.settled_counts();
        let _ = writeln!(out, "carbon_settlements_total{{outcome=\"new\"}} {new}");
        let _ = writeln!(out, "carbon_settlements_total{{outcome=\"replayed\"}} {replayed}");
        let pushes = self.pushes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for event in [PushEvent::Sent, PushEvent::Acked, PushEvent::Failed, PushEvent::DeadLettered] {
            let (name, help) = event.metric();
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for ((_, platform_id, kind), count) in pushes.iter().filter(|((e, _, _), _)| *e == event) {
                let _ = writeln!(out, "{name}{{{}}} {count}", labels(*platform_id, *kind));
            }
        }
        out
    }
}

/// Batches, the writes in them and the writer's busy time: writes ÷ batches is the mean batch,
/// busy seconds per second near 1 means the writer is the bottleneck.
fn render_group_commit(out: &mut String, group: GroupCommitStats) {
    let counters = [
        ("carbon_group_commit_batches_total", "Transactions written by the group-commit writer.", group.batches),
        ("carbon_group_commit_settlements_total", "Settlements in group-commit transactions.", group.settlements),
        ("carbon_group_commit_request_ids_total", "Request ids in group-commit transactions.", group.request_ids),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let name = "carbon_group_commit_busy_seconds_total";
    let _ = writeln!(out, "# HELP {name} Time the group-commit writer spent writing and committing.");
    let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", group.busy_micros as f64 / 1e6);
}

fn labels(platform_id: i64, kind: PushKind) -> String {
    format!("platform_id=\"{platform_id}\",type=\"{kind}\"")
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
        metrics.record_settled(carbon_engine::Settled::New);
        metrics.record_settled(carbon_engine::Settled::Replayed);
        metrics.record_settled(carbon_engine::Settled::Replayed);
        let text = metrics.render();
        assert!(text.contains("carbon_settlements_total{outcome=\"new\"} 1"), "{text}");
        assert!(text.contains("carbon_settlements_total{outcome=\"replayed\"} 2"), "{text}");
        assert!(text.contains("carbon_http_requests_total{route=\"/x\",code=\"200\"} 2"), "{text}");
        assert!(text.contains("carbon_http_requests_total{route=\"/x\",code=\"42201\"} 1"), "{text}");
        assert!(text.contains("carbon_settlement_seconds_bucket{le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("carbon_settlement_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("carbon_settlement_seconds_bucket{le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("carbon_settlement_seconds_count 2"), "{text}");
    }

    #[test]
    fn renders_group_commit_counters_only_when_grouped() {
        let metrics = Metrics::default();
        let group = GroupCommitStats { batches: 3, settlements: 70, request_ids: 90, busy_micros: 2_500_000 };
        let text = metrics.render_with(&[], Some(group), 0);
        assert!(text.contains("carbon_group_commit_batches_total 3\n"), "{text}");
        assert!(text.contains("carbon_group_commit_settlements_total 70\n"), "{text}");
        assert!(text.contains("carbon_group_commit_request_ids_total 90\n"), "{text}");
        assert!(text.contains("carbon_group_commit_busy_seconds_total 2.5\n"), "{text}");
        assert!(!metrics.render_with(&[], None, 0).contains("carbon_group_commit"));
    }

    #[test]
    fn renders_push_counters_and_backlog() {
        let metrics = Metrics::default();
        metrics.record_push(PushEvent::Sent, PlatformId(3), PushKind::Bills);
        metrics.record_push(PushEvent::Sent, PlatformId(3), PushKind::Bills);
        metrics.record_push(PushEvent::Failed, PlatformId(3), PushKind::Bills);
        let backlog = [PushBacklog {
            platform_id: PlatformId(3),
            kind: PushKind::Authorization,
            pending_rows: 4,
            oldest_pending_at_ms: Some(1_000),
            dead_batches: 1,
        }];
        let text = metrics.render_with(&backlog, None, 3_500);
        assert!(text.contains("carbon_push_sent_total{platform_id=\"3\",type=\"bills\"} 2"), "{text}");
        assert!(text.contains("carbon_push_failed_total{platform_id=\"3\",type=\"bills\"} 1"), "{text}");
        assert!(text.contains("carbon_push_lag_seconds{platform_id=\"3\",type=\"authorization\"} 2.5"), "{text}");
        assert!(text.contains("carbon_push_pending_rows{platform_id=\"3\",type=\"authorization\"} 4"), "{text}");
        assert!(text.contains("carbon_push_dead_batches{platform_id=\"3\",type=\"authorization\"} 1"), "{text}");
        assert_eq!(metrics.push_count(PushEvent::Sent, PlatformId(3), PushKind::Bills), 2);
    }
}
