//! Turning the rules' answers into a conversion plan the host has checked (SPEC §5 step 4, §6).
//!
//! **Invariant:** nothing a [`Rules`] implementation returns reaches the ledger unchecked. A
//! conversion must be positive, within what the person holds at that point of the plan, of an
//! allowed direction for its phase, and within the amount limits; reductions are only converted
//! for `type = 1` orders; and the order must be covered afterwards.

use super::{Balances, Conversion, Rejection, Rules, RulesError};
use crate::amount::MAX_WHOLE_UNITS;
use crate::ledger::Asset;
use crate::order::Order;

/// Most conversions one phase may return.
pub const MAX_CONVERSIONS_PER_PHASE: usize = 16;

/// Why no plan covers the order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The rules refused or failed.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The rules returned a plan the host refuses (42204).
    #[error("the rules returned a plan the host refused: {0}")]
    Refused(String),
    /// Even with the conversions allowed, the points do not cover the order (42201).
    #[error("insufficient points: {0}")]
    Insufficient(String),
}

/// Which export produced a set of conversions; each may only convert in its own directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `convert-points`: A→B or B→A.
    Points,
    /// `convert-reduction`: reduction→A or reduction→B.
    Reduction,
}

/// What the order still lacks in class A and class B, given `balances`.
pub fn shortfall(order: &Order, balances: &Balances) -> (i64, i64) {
    ((order.point_a.0 - balances.point_a.0).max(0), (order.point_b.0 - balances.point_b.0).max(0))
}

/// Checks `conversions` of `phase` against the working balances and applies them to it.
pub fn check_conversions(phase: Phase, conversions: &[Conversion], working: &mut Balances) -> Result<(), PlanError> {
    if conversions.len() > MAX_CONVERSIONS_PER_PHASE {
        return Err(PlanError::Refused(format!(
            "{} conversions returned, at most {MAX_CONVERSIONS_PER_PHASE} allowed",
            conversions.len()
        )));
    }
    for (index, conversion) in conversions.iter().enumerate() {
        let refuse = |reason: String| PlanError::Refused(format!("conversion {index} ({conversion:?}): {reason}"));
        let direction_ok = match phase {
            Phase::Points => {
                conversion.from.is_points() && conversion.to.is_points() && conversion.from != conversion.to
            }
            Phase::Reduction => conversion.from == Asset::Reduction && conversion.to.is_points(),
        };
        if !direction_ok {
            return Err(refuse(format!("direction not allowed for {phase:?} conversions")));
        }
        if conversion.spend <= 0 || conversion.receive <= 0 {
            return Err(refuse("spend and receive must both be positive".into()));
        }
        if conversion.spend > limit(conversion.from) || conversion.receive > limit(conversion.to) {
            return Err(refuse("amount above the largest accepted magnitude".into()));
        }
        let available = working.get(conversion.from);
        if conversion.spend > available {
            return Err(refuse(format!("spends {} but only {available} is held", conversion.spend)));
        }
        working.add(conversion.from, -conversion.spend);
        working.add(conversion.to, conversion.receive);
    }
    Ok(())
}

fn limit(asset: Asset) -> i64 {
    let scale = if asset == Asset::Reduction { 1000 } else { 100 };
    MAX_WHOLE_UNITS * scale
}

/// Asks the rules for conversions until the purchase is covered or nothing more may be tried.
/// Returns the checked conversions, in the order they apply (possibly none).
pub async fn plan_purchase(rules: &dyn Rules, order: &Order, balances: Balances) -> Result<Vec<Conversion>, PlanError> {
    let mut working = balances;
    let mut plan = Vec::new();
    if shortfall(order, &working) == (0, 0) {
        return Ok(plan);
    }
    let conversions = rules.convert_points(order, &working).await?;
    check_conversions(Phase::Points, &conversions, &mut working)?;
    plan.extend(conversions);
    if shortfall(order, &working) != (0, 0) && order.auto_convert {
        let conversions = rules.convert_reduction(order, &working).await?;
        check_conversions(Phase::Reduction, &conversions, &mut working)?;
        plan.extend(conversions);
    }
    let (short_a, short_b) = shortfall(order, &working);
    if (short_a, short_b) != (0, 0) {
        return Err(PlanError::Insufficient(format!(
            "short by {} class A and {} class B points{}",
            crate::amount::Points(short_a),
            crate::amount::Points(short_b),
            if order.auto_convert { "" } else { " (reduction conversion not requested: type = 0)" }
        )));
    }
    Ok(plan)
}

impl From<Rejection> for PlanError {
    fn from(rejection: Rejection) -> Self {
        PlanError::Rules(RulesError::Rejected(rejection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::{Grams, Points};

    fn balances(a: i64, b: i64, grams: i64) -> Balances {
        Balances { point_a: Points(a), point_b: Points(b), reduction: Grams(grams) }
    }

    fn conversion(from: Asset, to: Asset, spend: i64, receive: i64) -> Conversion {
        Conversion { from, to, spend, receive }
    }

    #[test]
    fn refuses_bad_conversions() {
        let cases = [
            (Phase::Points, conversion(Asset::PointA, Asset::PointA, 1, 1)),
            (Phase::Points, conversion(Asset::Reduction, Asset::PointA, 1, 1)),
            (Phase::Reduction, conversion(Asset::PointB, Asset::PointA, 1, 1)),
            (Phase::Reduction, conversion(Asset::Reduction, Asset::Reduction, 1, 1)),
            (Phase::Points, conversion(Asset::PointA, Asset::PointB, 0, 1)),
            (Phase::Points, conversion(Asset::PointA, Asset::PointB, 1, -1)),
            (Phase::Points, conversion(Asset::PointA, Asset::PointB, 101, 1)),
            (Phase::Points, conversion(Asset::PointA, Asset::PointB, 1, i64::MAX)),
        ];
        for (phase, bad) in cases {
            let mut working = balances(100, 100, 100);
            let result = check_conversions(phase, &[bad], &mut working);
            assert!(matches!(result, Err(PlanError::Refused(_))), "{phase:?} {bad:?}");
        }
    }

    #[test]
    fn cumulative_spending_is_bounded_by_the_balance() {
        let mut working = balances(100, 0, 0);
        let twice =
            [conversion(Asset::PointA, Asset::PointB, 60, 60), conversion(Asset::PointA, Asset::PointB, 60, 60)];
        assert!(matches!(check_conversions(Phase::Points, &twice, &mut working), Err(PlanError::Refused(_))));
    }

    #[test]
    fn applies_good_conversions() {
        let mut working = balances(100, 0, 500);
        check_conversions(Phase::Points, &[conversion(Asset::PointA, Asset::PointB, 40, 20)], &mut working).unwrap();
        check_conversions(Phase::Reduction, &[conversion(Asset::Reduction, Asset::PointA, 500, 50)], &mut working)
            .unwrap();
        assert_eq!(working, balances(110, 20, 0));
    }
}
