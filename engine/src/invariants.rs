//! The ledger's invariants, checked over the whole database by [`crate::Engine::verify`].

use std::fmt;

/// A breach of a ledger invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The balances of one asset over all accounts do not sum to zero.
    AssetNotZero {
        /// Asset code.
        asset: i64,
        /// The sum found.
        sum: i64,
    },
    /// A person or provider balance is below zero.
    Overdrawn {
        /// Account key.
        account: String,
        /// Asset code.
        asset: i64,
        /// The balance found.
        balance: i64,
    },
    /// A journal entry's postings do not sum to zero for an asset.
    JournalUnbalanced {
        /// Journal id.
        journal_id: i64,
        /// Asset code.
        asset: i64,
        /// The sum found.
        sum: i64,
    },
    /// A stored balance differs from the sum of its postings.
    BalanceMismatch {
        /// Account key.
        account: String,
        /// Asset code.
        asset: i64,
        /// The stored balance.
        balance: i64,
        /// The sum of postings.
        postings: i64,
    },
    /// Refunds of a purchase exceed it, or its refund counters disagree with its refunds.
    RefundsExceedParent {
        /// Platform key.
        platform_id: i64,
        /// The purchase.
        transaction_id: String,
        /// Class (1 = A, 2 = B).
        asset: i64,
        /// Points of the purchase, hundredths.
        purchased: i64,
        /// Points refunded, hundredths (sum of refund orders).
        refunded: i64,
        /// The purchase's own refund counter.
        counter: i64,
    },
    /// A settled order has no bill push queued (the outbox row is written with the order).
    BillNotQueued {
        /// Platform key.
        platform_id: i64,
        /// The order.
        transaction_id: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::AssetNotZero { asset, sum } => write!(f, "asset {asset}: balances sum to {sum}, not 0"),
            Violation::Overdrawn { account, asset, balance } => {
                write!(f, "{account} asset {asset}: balance {balance} is below zero")
            }
            Violation::JournalUnbalanced { journal_id, asset, sum } => {
                write!(f, "journal {journal_id} asset {asset}: postings sum to {sum}, not 0")
            }
            Violation::BalanceMismatch { account, asset, balance, postings } => {
                write!(f, "{account} asset {asset}: balance {balance} but postings sum to {postings}")
            }
            Violation::RefundsExceedParent { platform_id, transaction_id, asset, purchased, refunded, counter } => {
                write!(
                    f,
                    "platform {platform_id} order {transaction_id} class {asset}: purchased {purchased}, refunds sum to {refunded}, counter says {counter}"
                )
            }
            Violation::BillNotQueued { platform_id, transaction_id } => {
                write!(f, "platform {platform_id} order {transaction_id}: settled without a bill push in the outbox")
            }
        }
    }
}

/// The outcome of a full check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvariantReport {
    /// Balance rows checked.
    pub balances_checked: u64,
    /// Journal entries checked.
    pub journals_checked: u64,
    /// Orders checked.
    pub orders_checked: u64,
    /// Every breach found; empty when the ledger is sound.
    pub violations: Vec<Violation>,
}

impl InvariantReport {
    /// No violation was found.
    pub fn is_sound(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for InvariantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} balances, {} journal entries, {} orders: {}",
            self.balances_checked,
            self.journals_checked,
            self.orders_checked,
            if self.is_sound() { "ledger sound".to_owned() } else { format!("{} violation(s)", self.violations.len()) }
        )?;
        for violation in &self.violations {
            writeln!(f, "  VIOLATION {violation}")?;
        }
        Ok(())
    }
}
