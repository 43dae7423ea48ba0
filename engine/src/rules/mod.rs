//! A platform's rules (SPEC §6): which transaction types it accepts, how A↔B conversions and
//! reduction→points conversions cover a shortfall.
//!
//! The engine asks through [`Rules`] and never trusts the answer: [`plan`] checks every
//! conversion before anything is written. [`NativeDefaultRules`] is the built-in default; the
//! WebAssembly implementation lives behind the same trait.

mod native;
pub mod plan;
pub mod registry;
pub mod wasm;

use std::sync::Arc;

use async_trait::async_trait;

pub use native::NativeDefaultRules;

use crate::amount::{Grams, Points};
use crate::directory::Platform;
use crate::ledger::Asset;
use crate::order::Order;

/// A person's spendable balances as the rules see them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balances {
    /// Class A points.
    pub point_a: Points,
    /// Class B points.
    pub point_b: Points,
    /// Unconverted reductions.
    pub reduction: Grams,
}

impl Balances {
    /// The balance of one asset, in its smallest unit.
    pub fn get(&self, asset: Asset) -> i64 {
        match asset {
            Asset::PointA => self.point_a.0,
            Asset::PointB => self.point_b.0,
            Asset::Reduction => self.reduction.0,
        }
    }

    fn add(&mut self, asset: Asset, amount: i64) {
        match asset {
            Asset::PointA => self.point_a.0 += amount,
            Asset::PointB => self.point_b.0 += amount,
            Asset::Reduction => self.reduction.0 += amount,
        }
    }
}

/// One conversion proposed by the rules: spend `spend` of `from` to receive `receive` of `to`,
/// each in the smallest unit of its asset (hundredths of points, grams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conversion {
    /// The asset given up.
    pub from: Asset,
    /// The asset received.
    pub to: Asset,
    /// How much of `from` is spent.
    pub spend: i64,
    /// How much of `to` is received.
    pub receive: i64,
}

/// A decision of the rules against the order. Retrying the same order gets the same answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The platform does not accept this `transactionType` (42202).
    #[error("transaction type rejected: {0}")]
    InvalidTransactionType(String),
    /// The person cannot cover the order even with conversions (42201).
    #[error("insufficient: {0}")]
    Insufficient(String),
    /// Any other refusal by the rules (42204).
    #[error("rejected by the platform's rules: {0}")]
    Other(String),
}

/// What can go wrong when asking the rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The rules answered and refused the order.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The rules could not answer (a plugin trapped, ran out of fuel or time): 50301.
    #[error("the platform's rules failed: {0}")]
    Failed(String),
}

/// The three jobs of a platform's rules. Implementations must be cheap to call concurrently.
#[async_trait]
pub trait Rules: Send + Sync {
    /// The version that decided, recorded on each settlement (a plugin's sha256); `None` for
    /// built-in rules.
    fn version(&self) -> Option<String>;

    /// Is this platform-defined `transactionType` allowed?
    async fn validate_transaction_type(&self, transaction_type: &str) -> Result<(), RulesError>;

    /// Which A↔B conversions cover the order's shortfall, given the person's balances.
    async fn convert_points(&self, order: &Order, balances: &Balances) -> Result<Vec<Conversion>, RulesError>;

    /// How many grams of reduction become how many points to cover what is still short (only
    /// asked when the order has `type = 1`). `balances` already include the point conversions.
    async fn convert_reduction(&self, order: &Order, balances: &Balances) -> Result<Vec<Conversion>, RulesError>;
}

/// Chooses the rules of a platform. The plugin registry implements this; [`SameRulesForAll`]
/// serves one set of rules to every platform.
#[async_trait]
pub trait RulesSource: Send + Sync {
    /// The rules that decide `platform`'s orders right now.
    async fn rules_for(&self, platform: &Platform) -> Result<Arc<dyn Rules>, RulesError>;
}

/// Every platform uses the same rules.
pub struct SameRulesForAll(pub Arc<dyn Rules>);

#[async_trait]
impl RulesSource for SameRulesForAll {
    async fn rules_for(&self, _platform: &Platform) -> Result<Arc<dyn Rules>, RulesError> {
        Ok(self.0.clone())
    }
}
