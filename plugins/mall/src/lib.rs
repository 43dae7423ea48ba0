//! A mall's rules: only its own listed transaction types, and class B points may pay for
//! class A points at a configured rate.
//!
//! ```toml
//! transaction_types = ["coffee", "tea", "voucher"]
//! # class A points received for one class B point (exact decimal); absent: no conversion
//! a_per_b = "0.5"
//! ```

use carbon_plugin::{Balances, Class, Conversion, Order, Points, Rejection, Rules, div_ceil, register_rules};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    transaction_types: Vec<String>,
    a_per_b: Option<String>,
}

fn config(text: &str) -> Result<Config, String> {
    carbon_plugin::config(text)
}

struct MallRules;

impl Rules for MallRules {
    fn validate_transaction_type(config_text: &str, transaction_type: &str) -> Result<(), String> {
        let config = config(config_text)?;
        if config.transaction_types.iter().any(|allowed| allowed == transaction_type) {
            Ok(())
        } else {
            Err(format!("`{transaction_type}` is not one of {:?}", config.transaction_types))
        }
    }

    fn convert_points(config_text: &str, order: &Order, balances: &Balances) -> Result<Vec<Conversion>, Rejection> {
        let config = config(config_text).map_err(Rejection::Other)?;
        let Some(rate) = config.a_per_b else { return Ok(Vec::new()) };
        let rate = Points::parse(&rate).map_err(Rejection::Other)?;
        let short_a = balances.shortfall(order, Class::A);
        if short_a.0 == 0 || rate.0 <= 0 {
            return Ok(Vec::new());
        }
        // B points needed, in hundredths: short_a / rate, rounded up.
        let spend_b = Points(div_ceil(short_a.0 * 100, rate.0));
        let spare_b = Points(balances.point_b.0 - order.point_b.0.max(0));
        if spend_b > spare_b {
            return Err(Rejection::Insufficient(format!(
                "{} hundredths of class B needed to cover class A, {} spare",
                spend_b.0, spare_b.0
            )));
        }
        carbon_plugin::log::info(&format!("paying {} A with {} B", short_a.0, spend_b.0));
        Ok(vec![Conversion::points(Class::B, spend_b, short_a)])
    }
}

register_rules!(MallRules);
