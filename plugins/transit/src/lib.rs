//! A transit-themed platform: rides only, and reductions convert to either point class at
//! its own rate, with a cap on the kilograms one order may convert.
//!
//! ```toml
//! transaction_types = ["metro", "bus", "bike"]
//! a_points_per_kg = "12.5"
//! b_points_per_kg = "20"
//! max_kg_per_order = "5"
//! ```

use carbon_plugin::{Balances, Class, Conversion, Grams, Order, Points, Rejection, Rules, div_ceil, register_rules};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    transaction_types: Vec<String>,
    a_points_per_kg: Option<String>,
    b_points_per_kg: Option<String>,
    max_kg_per_order: Option<String>,
}

struct TransitRules;

impl Rules for TransitRules {
    fn validate_transaction_type(config_text: &str, transaction_type: &str) -> Result<(), String> {
        let config: Config = carbon_plugin::config(config_text)?;
        if config.transaction_types.is_empty() {
            return carbon_plugin::default_transaction_type(transaction_type);
        }
        if config.transaction_types.iter().any(|allowed| allowed == transaction_type) {
            Ok(())
        } else {
            Err(format!("`{transaction_type}` is not a ride type ({:?})", config.transaction_types))
        }
    }

    fn convert_reduction(config_text: &str, order: &Order, balances: &Balances) -> Result<Vec<Conversion>, Rejection> {
        let config: Config = carbon_plugin::config(config_text).map_err(Rejection::Other)?;
        let cap = Grams::parse_kg(config.max_kg_per_order.as_deref().unwrap_or("5")).map_err(Rejection::Other)?;
        let mut plan = Vec::new();
        let mut grams_left = balances.reduction;
        let mut converted = Grams(0);
        for (class, rate) in [(Class::A, &config.a_points_per_kg), (Class::B, &config.b_points_per_kg)] {
            let short = balances.shortfall(order, class);
            let Some(rate) = rate else { continue };
            if short.0 == 0 {
                continue;
            }
            let rate = Points::parse(rate).map_err(Rejection::Other)?;
            if rate.0 <= 0 {
                return Err(Rejection::Other("rates must be positive".into()));
            }
            let grams = Grams(div_ceil(short.0 * 1000, rate.0));
            if grams > grams_left {
                return Err(Rejection::Insufficient(format!("{} g needed, {} g held", grams.0, grams_left.0)));
            }
            converted = Grams(converted.0 + grams.0);
            if converted > cap {
                return Err(Rejection::Other(format!(
                    "converting {} g exceeds the cap of {} g per order",
                    converted.0, cap.0
                )));
            }
            grams_left = Grams(grams_left.0 - grams.0);
            plan.push(Conversion::reduction(grams, class, short));
        }
        Ok(plan)
    }
}

register_rules!(TransitRules);
