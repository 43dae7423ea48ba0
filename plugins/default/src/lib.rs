//! The default rules as a plugin: the same behaviour as the host's built-in rules.
//!
//! Transaction types: 1–32 characters of `[A-Za-z0-9_-]`. No A↔B conversion. Reductions
//! convert to class A points at `points_per_kg` (default `"10"`), rounding the grams up so the
//! shortfall is covered exactly.
//!
//! ```toml
//! points_per_kg = "10"
//! ```

use carbon_plugin::{Balances, Class, Conversion, Grams, Order, Points, Rejection, Rules, div_ceil, register_rules};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    points_per_kg: Option<String>,
}

struct DefaultRules;

impl Rules for DefaultRules {
    fn convert_reduction(config: &str, order: &Order, balances: &Balances) -> Result<Vec<Conversion>, Rejection> {
        let config: Config = carbon_plugin::config(config).map_err(Rejection::Other)?;
        let rate = Points::parse(config.points_per_kg.as_deref().unwrap_or("10")).map_err(Rejection::Other)?;
        if rate.0 <= 0 {
            return Err(Rejection::Other("points_per_kg must be positive".into()));
        }
        let short = balances.shortfall(order, Class::A);
        if short.0 == 0 {
            return Ok(Vec::new());
        }
        let grams = Grams(div_ceil(short.0 * 1000, rate.0));
        if grams > balances.reduction {
            return Err(Rejection::Insufficient(format!(
                "{} g of reduction needed to cover {} hundredths of class A points, {} g held",
                grams.0, short.0, balances.reduction.0
            )));
        }
        Ok(vec![Conversion::reduction(grams, Class::A, short)])
    }
}

register_rules!(DefaultRules);
