//! `carbon-plugin`: write a carbon-inclusion rules plugin in a few dozen lines.
//!
//! A plugin decides three things for one equity platform: which transaction types it accepts,
//! how class A and class B points convert into each other, and how emission reductions become
//! points when a person's points run short. Implement [`Rules`] (every method has a default)
//! and register the type:
//!
//! ```ignore
//! use carbon_plugin::{Rules, register_rules};
//!
//! struct MyRules;
//! impl Rules for MyRules {
//!     fn validate_transaction_type(_config: &str, transaction_type: &str) -> Result<(), String> {
//!         if transaction_type == "coffee" { Ok(()) } else { Err("only coffee".into()) }
//!     }
//! }
//! register_rules!(MyRules);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the host checks every answer
//! (see `wit/rules.wit`). Amounts are exact integers: [`Points`] in hundredths, [`Grams`].

#![deny(missing_docs)]

use std::marker::PhantomData;

#[doc(hidden)]
pub mod __wit {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "export_plugin",
        default_bindings_module: "carbon_plugin::__wit",
    });
}

use __wit::carbon::rules::types as wit;
use __wit::exports::carbon::rules::rules::Guest;

/// The version of the `carbon:rules` WIT package this SDK implements.
pub const API_VERSION: &str = "0.1.0";

/// Points, in hundredths (`Points(150)` is 1.5 points).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Points(pub i64);

/// Reductions, in grams CO2e.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grams(pub i64);

impl Points {
    /// Parses an exact decimal with at most 2 fraction digits (`"12.5"`), e.g. from config.
    pub fn parse(text: &str) -> Result<Points, String> {
        parse_fixed(text, 2).map(Points)
    }
}

impl Grams {
    /// Parses kilograms with at most 3 fraction digits (`"1.25"` → 1250 g).
    pub fn parse_kg(text: &str) -> Result<Grams, String> {
        parse_fixed(text, 3).map(Grams)
    }
}

fn parse_fixed(text: &str, scale: u32) -> Result<i64, String> {
    let refuse = || format!("`{text}` is not a non-negative decimal with at most {scale} fraction digits");
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > scale as usize {
        return Err(refuse());
    }
    if text.contains('.') && fraction.is_empty() {
        return Err(refuse());
    }
    let whole: i64 = whole.parse().map_err(|_| refuse())?;
    let fraction_value: i64 = if fraction.is_empty() { 0 } else { fraction.parse().map_err(|_| refuse())? };
    let unit = 10_i64.pow(scale);
    whole
        .checked_mul(unit)
        .and_then(|value| value.checked_add(fraction_value * 10_i64.pow(scale - fraction.len() as u32)))
        .ok_or_else(refuse)
}

/// A point class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Class A (`pointType` 1).
    A,
    /// Class B (`pointType` 2).
    B,
}

/// The order being settled.
#[derive(Clone, Debug)]
pub struct Order {
    /// The person's cid under this platform.
    pub cid: String,
    /// The provider paid.
    pub equity_cid: String,
    /// The platform's order id.
    pub transaction_id: String,
    /// For refunds: the purchase refunded.
    pub parent_transaction_id: Option<String>,
    /// Class A points of the order (negative for refunds).
    pub point_a: Points,
    /// Class B points of the order (negative for refunds).
    pub point_b: Points,
    /// When the order was placed, ms since the Unix epoch.
    pub transaction_time_ms: i64,
    /// The platform-defined transaction type.
    pub transaction_type: String,
    /// `type = 1`: reductions may be converted.
    pub auto_convert: bool,
    /// Item descriptions.
    pub items: Vec<String>,
}

impl Order {
    /// The points of one class.
    pub fn points(&self, class: Class) -> Points {
        match class {
            Class::A => self.point_a,
            Class::B => self.point_b,
        }
    }
}

/// The person's balances at this point of the settlement.
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
    /// The points of one class.
    pub fn points(&self, class: Class) -> Points {
        match class {
            Class::A => self.point_a,
            Class::B => self.point_b,
        }
    }

    /// What `order` still lacks in `class` (zero when covered).
    pub fn shortfall(&self, order: &Order, class: Class) -> Points {
        Points((order.points(class).0 - self.points(class).0).max(0))
    }
}

/// One conversion the plugin proposes.
#[derive(Clone, Copy, Debug)]
pub struct Conversion(wit::Conversion);

impl Conversion {
    /// Spend `spend` points of `from` to receive `receive` points of the other class.
    pub fn points(from: Class, spend: Points, receive: Points) -> Conversion {
        let (from, to) = match from {
            Class::A => (wit::Asset::PointA, wit::Asset::PointB),
            Class::B => (wit::Asset::PointB, wit::Asset::PointA),
        };
        Conversion(wit::Conversion { from, to, spend: spend.0, receive: receive.0 })
    }

    /// Spend `spend` of reductions to receive `receive` points of class `to`.
    pub fn reduction(spend: Grams, to: Class, receive: Points) -> Conversion {
        let to = match to {
            Class::A => wit::Asset::PointA,
            Class::B => wit::Asset::PointB,
        };
        Conversion(wit::Conversion { from: wit::Asset::Reduction, to, spend: spend.0, receive: receive.0 })
    }

    /// A raw conversion, unchecked (for tests of the host's checks).
    #[doc(hidden)]
    pub fn raw(from: u8, to: u8, spend: i64, receive: i64) -> Conversion {
        let asset = |code| match code {
            1 => wit::Asset::PointA,
            2 => wit::Asset::PointB,
            _ => wit::Asset::Reduction,
        };
        Conversion(wit::Conversion { from: asset(from), to: asset(to), spend, receive })
    }
}

/// Why the rules refuse an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The transaction type is not allowed (42202).
    InvalidTransactionType(String),
    /// The person cannot cover the order (42201).
    Insufficient(String),
    /// Any other refusal (42204).
    Other(String),
}

/// A platform's rules. Every method has a default: accept types like the built-in rules,
/// convert nothing.
pub trait Rules {
    /// Is `transaction_type` allowed? The default accepts 1–32 characters of
    /// `[A-Za-z0-9_-]`, like the host's built-in rules.
    fn validate_transaction_type(config: &str, transaction_type: &str) -> Result<(), String> {
        let _ = config;
        default_transaction_type(transaction_type)
    }

    /// Which A↔B conversions cover the order? Called only when points are short.
    fn convert_points(config: &str, order: &Order, balances: &Balances) -> Result<Vec<Conversion>, Rejection> {
        let _ = (config, order, balances);
        Ok(Vec::new())
    }

    /// Which reductions become which points? Called only for `type = 1` orders still short.
    fn convert_reduction(config: &str, order: &Order, balances: &Balances) -> Result<Vec<Conversion>, Rejection> {
        let _ = (config, order, balances);
        Ok(Vec::new())
    }
}

/// The built-in rule for transaction types: 1–32 characters of `[A-Za-z0-9_-]`.
pub fn default_transaction_type(transaction_type: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if transaction_type.is_empty() || transaction_type.chars().count() > 32 || !transaction_type.chars().all(allowed) {
        return Err(format!("`{transaction_type}` is not 1 to 32 characters of A-Z, a-z, 0-9, `_` or `-`"));
    }
    Ok(())
}

/// Parses the configuration text as TOML into `T`; empty text gives `T::default()`.
pub fn config<T: serde::de::DeserializeOwned + Default>(text: &str) -> Result<T, String> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    toml::from_str(text).map_err(|err| format!("invalid plugin configuration: {err}"))
}

/// Messages to the host's log (at most 20 of 1024 bytes per call are kept).
pub mod log {
    use super::__wit::carbon::rules::log::{Level, emit};

    /// Detail for plugin authors.
    pub fn debug(message: &str) {
        emit(Level::Debug, message);
    }
    /// Normal events.
    pub fn info(message: &str) {
        emit(Level::Info, message);
    }
    /// Something looks wrong.
    pub fn warn(message: &str) {
        emit(Level::Warn, message);
    }
    /// Something failed.
    pub fn error(message: &str) {
        emit(Level::Error, message);
    }
}

/// Connects a [`Rules`] type to the component's exports; use [`register_rules!`].
#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

fn order_from(order: wit::Order) -> Order {
    Order {
        cid: order.cid,
        equity_cid: order.equity_cid,
        transaction_id: order.transaction_id,
        parent_transaction_id: order.parent_transaction_id,
        point_a: Points(order.point_a),
        point_b: Points(order.point_b),
        transaction_time_ms: order.transaction_time_ms,
        transaction_type: order.transaction_type,
        auto_convert: order.auto_convert,
        items: order.items,
    }
}

fn balances_from(balances: wit::Balances) -> Balances {
    Balances {
        point_a: Points(balances.point_a),
        point_b: Points(balances.point_b),
        reduction: Grams(balances.reduction),
    }
}

fn answer(result: Result<Vec<Conversion>, Rejection>) -> Result<Vec<wit::Conversion>, wit::Rejection> {
    match result {
        Ok(conversions) => Ok(conversions.into_iter().map(|conversion| conversion.0).collect()),
        Err(Rejection::InvalidTransactionType(reason)) => Err(wit::Rejection::InvalidTransactionType(reason)),
        Err(Rejection::Insufficient(reason)) => Err(wit::Rejection::Insufficient(reason)),
        Err(Rejection::Other(reason)) => Err(wit::Rejection::Other(reason)),
    }
}

impl<T: Rules> Guest for Adapter<T> {
    fn validate_transaction_type(config: String, transaction_type: String) -> Result<(), String> {
        T::validate_transaction_type(&config, &transaction_type)
    }

    fn convert_points(
        config: String,
        order: wit::Order,
        balances: wit::Balances,
    ) -> Result<Vec<wit::Conversion>, wit::Rejection> {
        answer(T::convert_points(&config, &order_from(order), &balances_from(balances)))
    }

    fn convert_reduction(
        config: String,
        order: wit::Order,
        balances: wit::Balances,
    ) -> Result<Vec<wit::Conversion>, wit::Rejection> {
        answer(T::convert_reduction(&config, &order_from(order), &balances_from(balances)))
    }
}

/// Exports a [`Rules`] type as this component's rules: `register_rules!(MyRules);`
#[macro_export]
macro_rules! register_rules {
    ($rules:ty) => {
        type __CarbonPluginRules = $crate::Adapter<$rules>;
        $crate::__wit::export_plugin!(__CarbonPluginRules with_types_in $crate::__wit);
    };
}

/// Rounds `numerator / denominator` up, for "spend enough to cover" arithmetic.
pub fn div_ceil(numerator: i64, denominator: i64) -> i64 {
    let (n, d) = (i128::from(numerator), i128::from(denominator));
    ((n + d - 1) / d) as i64
}
