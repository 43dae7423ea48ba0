//! The double-entry ledger model.
//!
//! Every change of state is a [`PostingSet`]: signed postings on (account, asset) that sum to
//! zero per asset. Person and provider balances may never go below zero; system accounts are
//! the other side of issuance, retirement and conversion and go negative by design, so the sum
//! over all accounts of each asset is always zero.

use std::collections::BTreeMap;
use std::fmt;

use crate::ids::{EquityCid, MasterCid};

/// What a balance is counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Asset {
    /// Class A points (`pointType` 1), in hundredths.
    PointA,
    /// Class B points (`pointType` 2), in hundredths.
    PointB,
    /// Emission reductions, in grams CO2e.
    Reduction,
}

impl Asset {
    /// All assets, in storage-code order.
    pub const ALL: [Asset; 3] = [Asset::PointA, Asset::PointB, Asset::Reduction];

    /// The stable integer stored in the database.
    pub fn code(self) -> i64 {
        match self {
            Asset::PointA => 1,
            Asset::PointB => 2,
            Asset::Reduction => 3,
        }
    }

    /// The asset stored as `code`.
    pub fn from_code(code: i64) -> Option<Asset> {
        Asset::ALL.into_iter().find(|asset| asset.code() == code)
    }

    /// Whether this is a point class (A or B).
    pub fn is_points(self) -> bool {
        matches!(self, Asset::PointA | Asset::PointB)
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Asset::PointA => "points-a",
            Asset::PointB => "points-b",
            Asset::Reduction => "reduction",
        })
    }
}

/// The system side of every movement that does not go from one holder to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SystemAccount {
    /// Source of credited points and reductions, and of points created from reductions.
    Issuance,
    /// Sink of reductions converted into points.
    ReductionRetirement,
    /// Counterparty of A↔B conversions.
    Conversion,
}

impl SystemAccount {
    fn key(self) -> &'static str {
        match self {
            SystemAccount::Issuance => "issuance",
            SystemAccount::ReductionRetirement => "reduction-retirement",
            SystemAccount::Conversion => "conversion",
        }
    }
}

/// An account of the ledger.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountId {
    /// A person's master account.
    Person(MasterCid),
    /// An equity provider's account.
    Provider(EquityCid),
    /// A system account.
    System(SystemAccount),
}

impl AccountId {
    /// Whether the balance of this account must stay at or above zero.
    pub fn must_not_overdraw(&self) -> bool {
        !matches!(self, AccountId::System(_))
    }

    /// The stable text key stored in the database (`person:…`, `provider:…`, `system:…`).
    pub fn key(&self) -> String {
        match self {
            AccountId::Person(cid) => format!("{PERSON_PREFIX}{cid}"),
            AccountId::Provider(cid) => format!("{PROVIDER_PREFIX}{cid}"),
            AccountId::System(system) => format!("{SYSTEM_PREFIX}{}", system.key()),
        }
    }
}

/// Key prefix of person accounts; storage uses it to find overdrawable accounts.
pub const PERSON_PREFIX: &str = "person:";
/// Key prefix of provider accounts.
pub const PROVIDER_PREFIX: &str = "provider:";
/// Key prefix of system accounts.
pub const SYSTEM_PREFIX: &str = "system:";

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// One signed movement on one account and asset (in hundredths or grams).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posting {
    /// The account moved.
    pub account: AccountId,
    /// The asset moved.
    pub asset: Asset,
    /// Positive adds to the balance, negative takes from it. Never zero.
    pub amount: i64,
}

/// A set of postings that balances per asset; the only way the ledger changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PostingSet {
    postings: Vec<Posting>,
}

/// A posting set that does not sum to zero for an asset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("postings of {asset} sum to {sum}, not zero")]
pub struct Unbalanced {
    /// The asset that does not balance.
    pub asset: Asset,
    /// What its postings sum to.
    pub sum: i64,
}

/// Builds posting sets from transfers, which balance by construction.
#[derive(Debug, Default)]
pub struct PostingSetBuilder {
    postings: Vec<Posting>,
}

impl PostingSetBuilder {
    /// Moves `amount` of `asset` from one account to another (no-op for zero).
    pub fn transfer(&mut self, from: &AccountId, to: &AccountId, asset: Asset, amount: i64) -> &mut Self {
        assert!(amount >= 0, "transfer amounts are non-negative; swap the accounts instead");
        if amount > 0 {
            self.postings.push(Posting { account: from.clone(), asset, amount: -amount });
            self.postings.push(Posting { account: to.clone(), asset, amount });
        }
        self
    }

    /// The finished set.
    pub fn build(&mut self) -> PostingSet {
        PostingSet::new(std::mem::take(&mut self.postings)).expect("transfers always balance")
    }
}

impl PostingSet {
    /// Checks that the postings sum to zero per asset.
    pub fn new(postings: Vec<Posting>) -> Result<Self, Unbalanced> {
        let mut sums: BTreeMap<Asset, i64> = BTreeMap::new();
        for posting in &postings {
            *sums.entry(posting.asset).or_default() += posting.amount;
        }
        if let Some((&asset, &sum)) = sums.iter().find(|(_, sum)| **sum != 0) {
            return Err(Unbalanced { asset, sum });
        }
        Ok(PostingSet { postings })
    }

    /// The postings, in the order they were made.
    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }

    /// The net change per (account, asset), sorted by account key then asset.
    ///
    /// Storage applies these in this order so that concurrent writers lock balance rows in one
    /// global order and cannot deadlock.
    pub fn net_changes(&self) -> Vec<(AccountId, Asset, i64)> {
        let mut net: BTreeMap<(String, Asset), (AccountId, i64)> = BTreeMap::new();
        for posting in &self.postings {
            let entry =
                net.entry((posting.account.key(), posting.asset)).or_insert_with(|| (posting.account.clone(), 0));
            entry.1 += posting.amount;
        }
        net.into_iter()
            .filter(|(_, (_, amount))| *amount != 0)
            .map(|((_, asset), (account, amount))| (account, asset, amount))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(cid: &str) -> AccountId {
        AccountId::Person(MasterCid::new(cid).unwrap())
    }

    #[test]
    fn unbalanced_sets_are_refused() {
        let err =
            PostingSet::new(vec![Posting { account: person("m1"), asset: Asset::PointA, amount: 5 }]).unwrap_err();
        assert_eq!(err, Unbalanced { asset: Asset::PointA, sum: 5 });
    }

    #[test]
    fn balance_is_checked_per_asset() {
        // +5 A and -5 B sum to zero overall but not per asset.
        let set = PostingSet::new(vec![
            Posting { account: person("m1"), asset: Asset::PointA, amount: 5 },
            Posting { account: person("m1"), asset: Asset::PointB, amount: -5 },
        ]);
        assert!(set.is_err());
    }

    #[test]
    fn net_changes_are_sorted_and_netted() {
        let provider = AccountId::Provider(EquityCid::new("e1").unwrap());
        let conversion = AccountId::System(SystemAccount::Conversion);
        let set = PostingSetBuilder::default()
            .transfer(&person("m1"), &conversion, Asset::PointA, 100)
            .transfer(&conversion, &person("m1"), Asset::PointB, 50)
            .transfer(&person("m1"), &provider, Asset::PointB, 50)
            .build();
        let net = set.net_changes();
        assert_eq!(
            net,
            vec![
                (person("m1"), Asset::PointA, -100),
                (provider, Asset::PointB, 50),
                (conversion.clone(), Asset::PointA, 100),
                (conversion, Asset::PointB, -50),
            ]
        );
    }
}
