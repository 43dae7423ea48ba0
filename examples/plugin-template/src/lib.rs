//! A template rules plugin: a gift shop with its own types and reduction rate.
//!
//! - Transaction types: those listed in the configuration (default: the built-in rule).
//! - A↔B: none.
//! - Reductions → class A points at `points_per_kg` (default 15 per kg), rounding the grams
//!   up so that exactly the shortfall is covered.
//!
//! ```toml
//! transaction_types = ["gift"]
//! points_per_kg = "15"
//! ```

use carbon_plugin::{Balances, Class, Conversion, Grams, Order, Points, Rejection, Rules, div_ceil, log, register_rules};

/// The configuration this plugin reads (TOML); every key is optional.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    transaction_types: Vec<String>,
    points_per_kg: Option<String>,
}

struct TemplateRules;

impl Rules for TemplateRules {
    fn validate_transaction_type(config: &str, transaction_type: &str) -> Result<(), String> {
        let config: Config = carbon_plugin::config(config)?;
        if config.transaction_types.is_empty() {
            return carbon_plugin::default_transaction_type(transaction_type);
        }
        if config.transaction_types.iter().any(|allowed| allowed == transaction_type) {
            Ok(())
        } else {
            Err(format!("`{transaction_type}` is not sold here"))
        }
    }

    fn convert_reduction(config: &str, order: &Order, balances: &Balances) -> Result<Vec<Conversion>, Rejection> {
        let config: Config = carbon_plugin::config(config).map_err(Rejection::Other)?;
        let rate = Points::parse(config.points_per_kg.as_deref().unwrap_or("15")).map_err(Rejection::Other)?;
        let short = balances.shortfall(order, Class::A);
        if short.0 == 0 || rate.0 <= 0 {
            return Ok(Vec::new());
        }
        let grams = Grams(div_ceil(short.0 * 1000, rate.0));
        if grams > balances.reduction {
            return Err(Rejection::Insufficient(format!("{} g needed, {} g held", grams.0, balances.reduction.0)));
        }
        log::info(&format!("converting {} g into {} hundredths of class A", grams.0, short.0));
        Ok(vec![Conversion::reduction(grams, Class::A, short)])
    }
}

register_rules!(TemplateRules);
