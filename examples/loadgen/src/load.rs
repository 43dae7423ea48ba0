//! The load: workers, each one connection's worth of sequential requests, picking operations
//! by the mix, and what they tally.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};

use crate::wire::{Answer, Client, cents, now_ms, wall_time};

/// One kind of request the load generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `orderSettel` with positive amounts.
    Purchase,
    /// `orderSettel` with negative amounts, of an earlier purchase of the same worker.
    Refund,
    /// `getPointInfo` of a random person.
    Balance,
    /// `getPointsBillInfo` of a random person, first page.
    Bills,
    /// `licenseAgreement`: the cheapest call that still checks the token and records the
    /// request id (one token read, one request-id write, one small read).
    Ping,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 5] = [Op::Purchase, Op::Refund, Op::Balance, Op::Bills, Op::Ping];

    /// The name used by `--mix`, `--only` and the report.
    pub fn name(self) -> &'static str {
        match self {
            Op::Purchase => "purchase",
            Op::Refund => "refund",
            Op::Balance => "balance",
            Op::Bills => "bills",
            Op::Ping => "ping",
        }
    }

    /// The operation called `name`.
    pub fn parse(name: &str) -> Result<Op, String> {
        Op::ALL.into_iter().find(|op| op.name() == name.trim()).ok_or_else(|| {
            let names: Vec<_> = Op::ALL.iter().map(|op| op.name()).collect();
            format!("unknown operation `{name}` (one of {})", names.join(", "))
        })
    }
}

/// Weights of the operations: `purchase=70,refund=10,balance=10,bills=10`.
#[derive(Clone, Debug)]
pub struct Mix {
    weights: Vec<(Op, u32)>,
    total: u32,
}

impl Mix {
    /// Parses `op=weight,…`; weights are relative, at least one positive.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut weights: Vec<(Op, u32)> = Vec::new();
        for part in text.split(',').filter(|part| !part.trim().is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| format!("`{part}` is not op=weight"))?;
            let op = Op::parse(name)?;
            let weight: u32 =
                weight.trim().parse().map_err(|_| format!("weight of `{name}` must be a whole number"))?;
            if weights.iter().any(|(known, _)| *known == op) {
                return Err(format!("`{name}` appears twice"));
            }
            if weight > 0 {
                weights.push((op, weight));
            }
        }
        let total = weights.iter().map(|(_, weight)| weight).sum();
        if total == 0 {
            return Err("the mix needs at least one positive weight".into());
        }
        Ok(Mix { weights, total })
    }

    /// Only `op`.
    pub fn only(op: Op) -> Mix {
        Mix { weights: vec![(op, 1)], total: 1 }
    }

    fn pick(&self, rng: &mut impl Rng) -> Op {
        let mut ticket = rng.gen_range(0..self.total);
        for (op, weight) in &self.weights {
            if ticket < *weight {
                return *op;
            }
            ticket -= weight;
        }
        unreachable!("the tickets are the sum of the weights")
    }
}

/// Sub-scene cid of person `index` of run `run_id`.
pub fn cid(run_id: &str, index: usize) -> String {
    format!("lg-{run_id}-c{index}")
}

/// Master cid of person `index` of run `run_id`.
pub fn master_cid(run_id: &str, index: usize) -> String {
    format!("lg-{run_id}-m{index}")
}

/// What the workers share and never change.
pub struct Plan {
    pub run_id: String,
    pub people: usize,
    pub equity_cid: String,
    pub utc_offset_minutes: i64,
    pub mix: Mix,
    pub deadline: Option<Instant>,
    pub requests: Option<u64>,
    /// Smallest and largest purchase, in cents.
    pub purchase_cents: (i64, i64),
}

impl Plan {
    fn purchase_body(&self, cid: &str, order_id: &str, amount_cents: i64) -> Value {
        json!({
            "cid": cid,
            "equityCid": self.equity_cid,
            "transactionId": order_id,
            "transactionPointA": cents(amount_cents),
            "transactionTime": wall_time(now_ms(), self.utc_offset_minutes),
            "transactionType": "loadgen",
            "type": 0,
            "data": ["loadgen"],
        })
    }

    fn refund_body(&self, purchase: &Purchase, order_id: &str, amount_cents: i64) -> Value {
        json!({
            "cid": purchase.cid,
            "equityCid": self.equity_cid,
            "transactionId": order_id,
            "parentTransactionId": purchase.order_id,
            "transactionPointA": cents(-amount_cents),
            "transactionTime": wall_time(now_ms(), self.utc_offset_minutes),
            "transactionType": "loadgen",
            "type": 0,
            "data": ["loadgen refund"],
        })
    }

    /// The `getPointsBillInfo` range that holds every order of this run: a day either side of
    /// `around_ms`, so a wrong `--utc-offset` cannot drop orders from it.
    pub fn bill_range(&self, around_ms: i64) -> (String, String) {
        (
            wall_time(around_ms - 86_400_000, self.utc_offset_minutes),
            wall_time(around_ms + 86_400_000, self.utc_offset_minutes),
        )
    }
}

/// Counters the progress line reads while the workers run.
#[derive(Default)]
pub struct Live {
    issued: AtomicU64,
    pub done: AtomicU64,
    pub errors: AtomicU64,
    pub settled: AtomicU64,
}

impl Live {
    /// Claims the next request, unless the run is over.
    fn claim(&self, plan: &Plan) -> bool {
        if plan.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return false;
        }
        match plan.requests {
            Some(limit) => self.issued.fetch_add(1, Ordering::Relaxed) < limit,
            None => true,
        }
    }
}

/// A purchase this worker settled and has not refunded yet.
struct Purchase {
    cid: String,
    order_id: String,
    amount_cents: i64,
}

/// What one worker saw; merged into the report at the end.
#[derive(Default)]
pub struct Tally {
    /// Latency of every answered request (any code), microseconds, per operation.
    pub latencies_us: HashMap<Op, Vec<u32>>,
    /// Requests per operation (answered or not).
    pub requests: BTreeMap<Op, u64>,
    /// Requests per operation that answered code 200.
    pub ok: BTreeMap<Op, u64>,
    /// Every answer other than 200: (operation, HTTP status, code) → count, with one example
    /// message.
    pub failures: BTreeMap<(Op, u16, String), (u64, String)>,
    /// Orders settled by this run: purchases and refunds known to have answered 200 (a 200
    /// always means a new settlement here, as every order id is new).
    pub settled: u64,
    /// Orders whose outcome stayed unknown (no answer, then no answer to any resend either).
    pub unresolved: u64,
    /// Orders that did not answer at first and were found settled by a resend.
    pub resolved_settled: u64,
    /// Refunds picked by the mix when this worker had no purchase left to refund (a purchase
    /// was sent instead).
    pub refunds_replaced: u64,
}

impl Tally {
    fn record(&mut self, op: Op, answer: &Answer, elapsed: Duration) {
        *self.requests.entry(op).or_default() += 1;
        if answer.status != 0 {
            let micros = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
            self.latencies_us.entry(op).or_default().push(micros);
        }
        if answer.is_ok() {
            *self.ok.entry(op).or_default() += 1;
        } else {
            let entry =
                self.failures.entry((op, answer.status, answer.code_key())).or_insert_with(|| (0, answer.msg.clone()));
            entry.0 += 1;
        }
    }

    /// Adds `other` into this tally.
    pub fn merge(&mut self, other: Tally) {
        for (op, mut latencies) in other.latencies_us {
            self.latencies_us.entry(op).or_default().append(&mut latencies);
        }
        for (op, count) in other.requests {
            *self.requests.entry(op).or_default() += count;
        }
        for (op, count) in other.ok {
            *self.ok.entry(op).or_default() += count;
        }
        for (key, (count, msg)) in other.failures {
            self.failures.entry(key).or_insert((0, msg)).0 += count;
        }
        self.settled += other.settled;
        self.unresolved += other.unresolved;
        self.resolved_settled += other.resolved_settled;
        self.refunds_replaced += other.refunds_replaced;
    }
}

/// An answer that says nothing about whether an order settled: no answer, or a server error.
fn ambiguous(answer: &Answer) -> bool {
    answer.status == 0 || answer.code == Some(50001) || (answer.code.is_none() && answer.status >= 500)
}

/// How often an order without a clear answer is sent again to learn its outcome.
const RESENDS: u32 = 5;

/// Learns the outcome of an order whose answer was [`ambiguous`] by sending the same body
/// again with fresh headers (safe: an order id settles at most once). `Some(true)`: settled.
async fn resolve(client: &Client, body: &Value) -> Option<bool> {
    for attempt in 0..RESENDS {
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        let answer = client.call(Method::POST, "/transaction/orderSettel", Some(body)).await;
        if !ambiguous(&answer) {
            return Some(answer.is_ok());
        }
    }
    None
}

/// One worker: sequential requests until the plan says stop.
pub async fn worker(index: usize, client: Arc<Client>, plan: Arc<Plan>, live: Arc<Live>) -> Tally {
    let mut rng = StdRng::from_entropy();
    let mut tally = Tally::default();
    let mut refundable: Vec<Purchase> = Vec::new();
    let mut sequence = 0_u64;
    while live.claim(&plan) {
        let mut op = plan.mix.pick(&mut rng);
        if op == Op::Refund && refundable.is_empty() {
            op = Op::Purchase;
            tally.refunds_replaced += 1;
        }
        let person = cid(&plan.run_id, rng.gen_range(0..plan.people));
        let started = Instant::now();
        let (answer, settle_body, bought) = match op {
            Op::Purchase => {
                sequence += 1;
                let order_id = format!("lg-{}-w{index}-{sequence}", plan.run_id);
                let amount_cents = rng.gen_range(plan.purchase_cents.0..=plan.purchase_cents.1);
                let body = plan.purchase_body(&person, &order_id, amount_cents);
                let answer = client.call(Method::POST, "/transaction/orderSettel", Some(&body)).await;
                (answer, Some(body), Some(Purchase { cid: person, order_id, amount_cents }))
            }
            Op::Refund => {
                let purchase = refundable.swap_remove(rng.gen_range(0..refundable.len()));
                // Partial: half of it, at least one cent.
                let amount_cents = (purchase.amount_cents / 2).max(1);
                let body = plan.refund_body(&purchase, &format!("{}-r", purchase.order_id), amount_cents);
                let answer = client.call(Method::POST, "/transaction/orderSettel", Some(&body)).await;
                (answer, Some(body), None)
            }
            Op::Balance => {
                let answer = client.call(Method::POST, "/account/getPointInfo", Some(&json!({ "cid": person }))).await;
                (answer, None, None)
            }
            Op::Bills => {
                let (begin, end) = plan.bill_range(now_ms());
                let query = json!({ "cid": person, "beginTime": begin, "endTime": end, "page": 1, "pageSize": 10 });
                let answer = client.call(Method::POST, "/account/getPointsBillInfo", Some(&query)).await;
                (answer, None, None)
            }
            Op::Ping => (client.call(Method::GET, "/auth/equity/licenseAgreement", None).await, None, None),
        };
        let elapsed = started.elapsed();
        tally.record(op, &answer, elapsed);
        live.done.fetch_add(1, Ordering::Relaxed);
        if !answer.is_ok() {
            live.errors.fetch_add(1, Ordering::Relaxed);
        }
        let Some(body) = settle_body else { continue };
        let settled = if ambiguous(&answer) {
            match resolve(&client, &body).await {
                Some(true) => {
                    tally.resolved_settled += 1;
                    true
                }
                Some(false) => false,
                None => {
                    tally.unresolved += 1;
                    false
                }
            }
        } else {
            answer.is_ok()
        };
        if settled {
            tally.settled += 1;
            live.settled.fetch_add(1, Ordering::Relaxed);
            if let Some(purchase) = bought {
                refundable.push(purchase);
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_pick_every_weighted_op() {
        let mix = Mix::parse("purchase=70,refund=10,balance=10,bills=10").unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = BTreeMap::new();
        for _ in 0..10_000 {
            *seen.entry(mix.pick(&mut rng)).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 4);
        assert!((6_500..7_500).contains(&seen[&Op::Purchase]), "{seen:?}");
        assert!(Mix::parse("purchase=0").is_err());
        assert!(Mix::parse("buy=1").is_err());
        assert!(Mix::parse("purchase=1,purchase=2").is_err());
        assert!(Mix::parse("purchase").is_err());
        assert_eq!(Mix::parse("ping=5, purchase=0").unwrap().pick(&mut rng), Op::Ping);
    }
}
