//! Deciding a batch of settlements in memory, from the rows the batch reads at its start.
//!
//! A batch's transaction first reads (and on PostgreSQL locks) every balance row and every
//! order row its settlements touch, then [`plan_batch`] decides each settlement in queue order
//! exactly as one-at-a-time conditional statements would — a duplicate order, a refund's
//! parent and its bounds, and no overdraft of a person or provider, each seeing what the
//! earlier settlements of the batch did — and the transaction writes only the accepted ones,
//! in a fixed number of multi-row statements. A refused settlement writes nothing, so its
//! batch-mates need neither savepoints nor an undo.

use std::collections::{BTreeMap, HashMap};

use super::{ApplyError, SettlementWrite};
use crate::ledger::Asset;
use crate::order::OrderKind;

/// A balance row's key: account key and asset.
pub(crate) type BalanceKey = (String, Asset);
/// An order row's key: platform id and `transactionId`.
pub(crate) type OrderKey = (i64, String);

/// An order row as far as duplicates and refunds need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredOrder {
    /// The row id.
    pub row_id: i64,
    pub sub_cid: String,
    pub equity_cid: String,
    pub point_a: i64,
    pub point_b: i64,
    pub refunded_a: i64,
    pub refunded_b: i64,
}

/// A refund's parent during planning: stored, or accepted earlier in the same batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Parent {
    /// A stored order: its row id and its refund counters when the batch started.
    Stored { row_id: i64, refunded: (i64, i64) },
    /// An order accepted earlier in the batch: its index in [`BatchPlan::accepted`].
    InBatch(usize),
}

/// What a batch writes, decided before anything is written.
#[derive(Debug, Default)]
pub(crate) struct BatchPlan {
    /// Per settlement of the batch, in order: accepted, or why not.
    pub outcomes: Vec<Result<(), ApplyError>>,
    /// The accepted settlements, as indexes into the batch, with what refunds accepted later
    /// in the same batch took back from each (written with its order row).
    pub accepted: Vec<Accepted>,
    /// Net balance change per row, in key order (the global lock order); no zeros.
    pub balance_changes: BTreeMap<BalanceKey, i64>,
    /// What refunds took back from stored orders, by row id: `(point_a, point_b)`.
    pub parent_refunds: BTreeMap<i64, (i64, i64)>,
}

/// An accepted settlement.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// Its index in the batch.
    pub index: usize,
    /// Refunded from it by batch-mates after it: `(point_a, point_b)`.
    pub refunded: (i64, i64),
}

/// The rows every settlement of `settlements` reads: the balance rows of all accounts they
/// change, and the order rows of their own ids and of refunds' parents.
pub(crate) fn keys_read(settlements: &[SettlementWrite]) -> (Vec<String>, Vec<OrderKey>) {
    let mut accounts = std::collections::BTreeSet::new();
    let mut orders = std::collections::BTreeSet::new();
    for write in settlements {
        for (account, _, _) in write.postings.net_changes() {
            accounts.insert(account.key());
        }
        orders.insert((write.platform_id.0, write.order.transaction_id.as_str().to_owned()));
        if let Some(parent) = refund_parent(write) {
            orders.insert((write.platform_id.0, parent.to_owned()));
        }
    }
    (accounts.into_iter().collect(), orders.into_iter().collect())
}

fn refund_parent(write: &SettlementWrite) -> Option<&str> {
    if write.order.kind() != OrderKind::Refund {
        return None;
    }
    write.order.parent_transaction_id.as_ref().map(|id| id.as_str())
}

/// Decides `settlements` in order against the stored `balances` (a missing row is zero) and
/// stored `orders` (keyed by platform and transaction id).
pub(crate) fn plan_batch(
    settlements: &[SettlementWrite],
    balances: &HashMap<BalanceKey, i64>,
    orders: &HashMap<OrderKey, StoredOrder>,
) -> BatchPlan {
    let mut plan = BatchPlan::default();
    let mut settled_here: HashMap<OrderKey, usize> = HashMap::new();
    let mut parent_counters: HashMap<Parent, (i64, i64)> = HashMap::new();
    for (index, write) in settlements.iter().enumerate() {
        let outcome = plan_one(settlements, write, balances, orders, &settled_here, &mut parent_counters, &mut plan);
        if outcome.is_ok() {
            let key = (write.platform_id.0, write.order.transaction_id.as_str().to_owned());
            settled_here.insert(key, plan.accepted.len());
            plan.accepted.push(Accepted { index, refunded: (0, 0) });
        }
        plan.outcomes.push(outcome);
    }
    for (parent, counters) in parent_counters {
        match parent {
            Parent::Stored { row_id, refunded } => {
                plan.parent_refunds.insert(row_id, (counters.0 - refunded.0, counters.1 - refunded.1));
            }
            Parent::InBatch(accepted) => plan.accepted[accepted].refunded = counters,
        }
    }
    plan.balance_changes.retain(|_, change| *change != 0);
    plan
}

/// Decides one settlement; when accepted, adds its changes to `plan` and `parent_counters`.
fn plan_one(
    settlements: &[SettlementWrite],
    write: &SettlementWrite,
    balances: &HashMap<BalanceKey, i64>,
    orders: &HashMap<OrderKey, StoredOrder>,
    settled_here: &HashMap<OrderKey, usize>,
    parent_counters: &mut HashMap<Parent, (i64, i64)>,
    plan: &mut BatchPlan,
) -> Result<(), ApplyError> {
    let platform_id = write.platform_id.0;
    let own_key = (platform_id, write.order.transaction_id.as_str().to_owned());
    if orders.contains_key(&own_key) || settled_here.contains_key(&own_key) {
        return Err(ApplyError::DuplicateOrder);
    }
    let refund = match refund_parent(write) {
        Some(parent_id) => {
            Some(check_refund(settlements, write, parent_id, orders, settled_here, parent_counters, plan)?)
        }
        None => None,
    };
    let changes: Vec<(BalanceKey, bool, i64)> = write
        .postings
        .net_changes()
        .into_iter()
        .map(|(account, asset, amount)| ((account.key(), asset), account.must_not_overdraw(), amount))
        .collect();
    for (key, must_not_overdraw, amount) in &changes {
        if *amount < 0 && *must_not_overdraw {
            let now = balances.get(key).copied().unwrap_or(0) + plan.balance_changes.get(key).copied().unwrap_or(0);
            if now + amount < 0 {
                return Err(ApplyError::Overdraft { account: key.0.clone(), asset: key.1 });
            }
        }
    }
    for (key, _, amount) in changes {
        *plan.balance_changes.entry(key).or_insert(0) += amount;
    }
    if let Some((parent, counters)) = refund {
        parent_counters.insert(parent, counters);
    }
    Ok(())
}

/// Checks a refund against its parent: a purchase of the same platform, cid and provider,
/// with enough left in each class. Returns the parent and its refund counters after it.
fn check_refund(
    settlements: &[SettlementWrite],
    write: &SettlementWrite,
    parent_id: &str,
    orders: &HashMap<OrderKey, StoredOrder>,
    settled_here: &HashMap<OrderKey, usize>,
    parent_counters: &HashMap<Parent, (i64, i64)>,
    plan: &BatchPlan,
) -> Result<(Parent, (i64, i64)), ApplyError> {
    let order = &write.order;
    let parent_key = (write.platform_id.0, parent_id.to_owned());
    // (parent, sub cid, provider, point_a, point_b, refunded so far)
    let (parent, sub_cid, equity_cid, point_a, point_b, refunded) = if let Some(stored) = orders.get(&parent_key) {
        let parent = Parent::Stored { row_id: stored.row_id, refunded: (stored.refunded_a, stored.refunded_b) };
        let refunded = parent_counters.get(&parent).copied().unwrap_or((stored.refunded_a, stored.refunded_b));
        (parent, stored.sub_cid.as_str(), stored.equity_cid.as_str(), stored.point_a, stored.point_b, refunded)
    } else if let Some(&accepted) = settled_here.get(&parent_key) {
        let parent = Parent::InBatch(accepted);
        let mate = &settlements[plan.accepted[accepted].index].order;
        let refunded = parent_counters.get(&parent).copied().unwrap_or((0, 0));
        (parent, mate.cid.as_str(), mate.equity_cid.as_str(), mate.point_a.0, mate.point_b.0, refunded)
    } else {
        return Err(ApplyError::ParentNotFound);
    };
    if sub_cid != order.cid.as_str() || equity_cid != order.equity_cid.as_str() || point_a + point_b <= 0 {
        return Err(ApplyError::ParentNotFound);
    }
    let after = (refunded.0 - order.point_a.0, refunded.1 - order.point_b.0);
    if after.0 > point_a || after.1 > point_b {
        return Err(ApplyError::RefundExceedsParent);
    }
    Ok((parent, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::{Grams, Points};
    use crate::ids::{EquityCid, MasterCid, OrderId, PlatformId, SubCid};
    use crate::ledger::{AccountId, PostingSetBuilder};
    use crate::order::Order;

    const PERSON: &str = "person:m1";

    /// A purchase (`points` > 0) or a refund (< 0, of `parent`) of class A points between m1
    /// and provider e1.
    fn write(id: &str, points: i64, parent: Option<&str>) -> SettlementWrite {
        let person = AccountId::Person(MasterCid::new("m1").unwrap());
        let provider = AccountId::Provider(EquityCid::new("e1").unwrap());
        let (from, to) = if points >= 0 { (&person, &provider) } else { (&provider, &person) };
        SettlementWrite {
            platform_id: PlatformId(1),
            order: Order {
                cid: SubCid::new("s1").unwrap(),
                equity_cid: EquityCid::new("e1").unwrap(),
                transaction_id: OrderId::new(id).unwrap(),
                parent_transaction_id: parent.map(|parent| OrderId::new(parent).unwrap()),
                point_a: Points(points),
                point_b: Points::ZERO,
                transaction_time_ms: 0,
                transaction_type: "t".into(),
                auto_convert: false,
                items: Vec::new(),
            },
            master_cid: MasterCid::new("m1").unwrap(),
            request_hash: String::new(),
            postings: PostingSetBuilder::default().transfer(from, to, Asset::PointA, points.abs()).build(),
            converted_reduction: Grams::ZERO,
            rules_version: None,
            settled_at_ms: 0,
        }
    }

    fn outcomes(plan: &BatchPlan) -> Vec<&'static str> {
        plan.outcomes
            .iter()
            .map(|outcome| match outcome {
                Ok(()) => "ok",
                Err(ApplyError::DuplicateOrder) => "duplicate",
                Err(ApplyError::Overdraft { .. }) => "overdraft",
                Err(ApplyError::ParentNotFound) => "no-parent",
                Err(ApplyError::RefundExceedsParent) => "exceeds",
                Err(ApplyError::Store(_)) => "store",
            })
            .collect()
    }

    #[test]
    fn a_refused_order_id_stays_free_for_a_later_batch_mate() {
        let balances = HashMap::from([((PERSON.to_owned(), Asset::PointA), 500)]);
        let batch = [write("p-1", 600, None), write("p-1", 500, None), write("p-1", 1, None)];
        let plan = plan_batch(&batch, &balances, &HashMap::new());
        assert_eq!(outcomes(&plan), ["overdraft", "ok", "duplicate"]);
        assert_eq!(plan.accepted, [Accepted { index: 1, refunded: (0, 0) }]);
        assert_eq!(plan.balance_changes[&(PERSON.to_owned(), Asset::PointA)], -500, "the overdraft took nothing");
        assert_eq!(plan.balance_changes[&("provider:e1".to_owned(), Asset::PointA)], 500);
    }

    #[test]
    fn refunds_count_against_stored_and_batch_parents_only_when_accepted() {
        let stored = StoredOrder {
            row_id: 7,
            sub_cid: "s1".into(),
            equity_cid: "e1".into(),
            point_a: 300,
            point_b: 0,
            refunded_a: 100,
            refunded_b: 0,
        };
        let orders = HashMap::from([((1, "old".to_owned()), stored)]);
        let balances =
            HashMap::from([(("provider:e1".to_owned(), Asset::PointA), 150), ((PERSON.to_owned(), Asset::PointA), 40)]);
        let batch = [
            write("r-1", -250, Some("old")), // 100 + 250 > 300
            write("r-2", -150, Some("old")), // fits
            write("p-1", 40, None),          // credits the provider 40
            write("r-3", -40, Some("p-1")),  // all of p-1, paid from that credit
            write("r-4", -1, Some("p-1")),   // nothing left of p-1
            write("r-5", -50, Some("old")),  // fits old, but the provider has 0 left
            write("r-6", -1, Some("gone")),
        ];
        let plan = plan_batch(&batch, &balances, &orders);
        assert_eq!(outcomes(&plan), ["exceeds", "ok", "ok", "ok", "exceeds", "overdraft", "no-parent"]);
        assert_eq!(plan.parent_refunds, BTreeMap::from([(7, (150, 0))]), "r-5 was refused: not counted");
        let p1 = plan.accepted.iter().find(|accepted| accepted.index == 2).unwrap();
        assert_eq!(p1.refunded, (40, 0));
        assert_eq!(plan.balance_changes[&("provider:e1".to_owned(), Asset::PointA)], -150);
        assert_eq!(plan.balance_changes[&(PERSON.to_owned(), Asset::PointA)], 150);
    }
}
