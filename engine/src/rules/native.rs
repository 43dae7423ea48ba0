//! The built-in default rules; the `default` plugin implements exactly the same behaviour.

use async_trait::async_trait;

use super::{Balances, Conversion, Rejection, Rules, RulesError};
use crate::amount::Points;
use crate::ledger::Asset;
use crate::order::Order;

/// Longest transaction type the default rules accept.
pub const MAX_DEFAULT_TYPE_CHARS: usize = 32;

/// Default rules: a transaction type is 1–32 characters of `[A-Za-z0-9_-]`; no A↔B conversion;
/// reductions convert to class A points at `points_per_kg` (default 1 kg → 10 points), with the
/// grams rounded up so that exactly the shortfall is received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeDefaultRules {
    /// Points received per kilogram of reduction. Must be positive.
    pub points_per_kg: Points,
}

impl Default for NativeDefaultRules {
    fn default() -> Self {
        NativeDefaultRules { points_per_kg: Points::whole(10) }
    }
}

impl NativeDefaultRules {
    /// Default rules at a given rate; refuses a rate that is not positive.
    pub fn with_rate(points_per_kg: Points) -> Result<Self, String> {
        if points_per_kg.0 <= 0 {
            return Err(format!("the reduction rate must be positive, not {points_per_kg} points per kg"));
        }
        Ok(NativeDefaultRules { points_per_kg })
    }

    /// Grams needed to receive `hundredths` of points at this rate, rounded up.
    pub fn grams_for(&self, hundredths: i64) -> i64 {
        // hundredths / (points_per_kg hundredths per 1000 g), rounded up; i128 avoids overflow.
        let numerator = i128::from(hundredths) * 1000;
        let rate = i128::from(self.points_per_kg.0);
        ((numerator + rate - 1) / rate) as i64
    }
}

#[async_trait]
impl Rules for NativeDefaultRules {
    fn version(&self) -> Option<String> {
        None
    }

    async fn validate_transaction_type(&self, transaction_type: &str) -> Result<(), RulesError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if transaction_type.is_empty()
            || transaction_type.chars().count() > MAX_DEFAULT_TYPE_CHARS
            || !transaction_type.chars().all(allowed)
        {
            return Err(Rejection::InvalidTransactionType(format!(
                "`{transaction_type}` is not 1 to {MAX_DEFAULT_TYPE_CHARS} characters of A-Z, a-z, 0-9, `_` or `-`"
            ))
            .into());
        }
        Ok(())
    }

    async fn convert_points(&self, _order: &Order, _balances: &Balances) -> Result<Vec<Conversion>, RulesError> {
        Ok(Vec::new())
    }

    async fn convert_reduction(&self, order: &Order, balances: &Balances) -> Result<Vec<Conversion>, RulesError> {
        let short_a = order.point_a.0 - balances.point_a.0;
        if short_a <= 0 {
            return Ok(Vec::new());
        }
        let grams = self.grams_for(short_a);
        if grams > balances.reduction.0 {
            return Err(Rejection::Insufficient(format!(
                "{} kg of reduction needed to cover {} class A points, {} kg held",
                crate::amount::Grams(grams),
                Points(short_a),
                balances.reduction
            ))
            .into());
        }
        Ok(vec![Conversion { from: Asset::Reduction, to: Asset::PointA, spend: grams, receive: short_a }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grams_round_up() {
        let rules = NativeDefaultRules::default();
        // 10 points per kg = 1000 hundredths per 1000 g: one gram per hundredth.
        assert_eq!(rules.grams_for(1), 1);
        assert_eq!(rules.grams_for(1234), 1234);
        let rules = NativeDefaultRules::with_rate(Points::whole(3)).unwrap();
        // 1 point = 100 hundredths needs 1000/3 = 333.33… g, so 334 g.
        assert_eq!(rules.grams_for(100), 334);
        assert!(NativeDefaultRules::with_rate(Points(0)).is_err());
    }
}
