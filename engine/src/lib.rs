//! `carbon-engine`: the settlement engine of the carbon-inclusion master platform.
//!
//! It knows amounts, the double-entry ledger, orders and their settlement, the platforms'
//! rules and storage — and nothing of HTTP. Start at [`Engine`].
//!
//! **Architecture invariants:** amounts are fixed-point integers ([`amount`]), never floats;
//! the ledger changes only by balanced [`ledger::PostingSet`]s written atomically by a
//! [`store::Store`]; a platform's [`rules::Rules`] are never trusted ([`rules::plan`]).

#![warn(missing_docs)]

pub mod amount;
pub mod bill;
pub mod credit;
pub mod directory;
mod engine;
pub mod error;
pub mod ids;
pub mod invariants;
pub mod ledger;
pub mod order;
pub mod push;
pub mod rules;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use engine::{Engine, Settled, now_ms};
pub use error::EngineError;
