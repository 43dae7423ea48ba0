//! TEST ONLY: a plugin that misbehaves as its configuration text says, to prove the host
//! survives it. Behaviours: `loop`, `memory`, `trap`, `panic` (in validate-transaction-type),
//! `huge-error` (a 4 MiB error string), `huge-plan` (100,000 conversions), `bad-plan`
//! (spends points the person does not have), `log-flood` (500 log lines of 2 kB, then accepts).

use carbon_plugin::{Balances, Conversion, Order, Points, Rejection, Rules, register_rules};

struct HostileRules;

impl Rules for HostileRules {
    fn validate_transaction_type(config: &str, _transaction_type: &str) -> Result<(), String> {
        match config.trim() {
            "loop" => {
                let mut counter: u64 = 0;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => core::arch::wasm32::unreachable(),
            "panic" => panic!("hostile plugin panics on purpose"),
            "huge-error" => Err("x".repeat(4 << 20)),
            "log-flood" => {
                for i in 0..500 {
                    carbon_plugin::log::warn(&format!("flood {i} {}", "y".repeat(2000)));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn convert_points(config: &str, _order: &Order, _balances: &Balances) -> Result<Vec<Conversion>, Rejection> {
        match config.trim() {
            "huge-plan" => Ok((0..100_000).map(|_| Conversion::raw(1, 2, 1, 1)).collect()),
            "bad-plan" => {
                Ok(vec![Conversion::points(carbon_plugin::Class::A, Points(1_000_000_000), Points(1_000_000_000))])
            }
            _ => Ok(Vec::new()),
        }
    }
}

register_rules!(HostileRules);
