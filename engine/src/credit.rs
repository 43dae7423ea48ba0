//! Credits: how people get points and reductions at all (operator or upstream systems).
//! Each credit is idempotent by an external id.

use sha2::{Digest, Sha256};

use crate::amount::{Grams, Points};
use crate::ids::MasterCid;
use crate::ledger::{AccountId, Asset, PostingSet, PostingSetBuilder, SystemAccount};
use crate::order::FieldError;

/// Longest external id, scene name or methodology code (characters).
pub const MAX_CREDIT_TEXT_CHARS: usize = 128;

/// A credit of points or reductions to a person's master account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    /// The caller's id for this credit; the same id never credits twice.
    pub external_id: String,
    /// Who receives it.
    pub master_cid: MasterCid,
    /// What is credited.
    pub asset: Asset,
    /// How much, in hundredths (points) or grams (reductions); always positive.
    pub amount: i64,
    /// The scene it was earned in (单车, 地铁 …); required for reductions.
    pub scene: Option<String>,
    /// The methodology code (e.g. `SHCER020200120241`); required for reductions.
    pub methodology: Option<String>,
}

/// What crediting did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditOutcome {
    /// The credit was applied now.
    Credited,
    /// The same credit had been applied before; nothing changed.
    AlreadyCredited,
}

fn text(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.trim() != value || value.chars().count() > MAX_CREDIT_TEXT_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_CREDIT_TEXT_CHARS} characters without surrounding whitespace"),
        ));
    }
    Ok(())
}

impl Credit {
    /// A credit of class A or B points.
    pub fn points(
        master_cid: MasterCid,
        class: Asset,
        amount: Points,
        external_id: impl Into<String>,
        scene: Option<String>,
    ) -> Result<Self, FieldError> {
        if !class.is_points() {
            return Err(FieldError::new("class", "must be class a or b"));
        }
        let credit = Credit {
            external_id: external_id.into(),
            master_cid,
            asset: class,
            amount: amount.0,
            scene,
            methodology: None,
        };
        credit.check()?;
        Ok(credit)
    }

    /// A credit of reductions earned in `scene` under `methodology`.
    pub fn reduction(
        master_cid: MasterCid,
        amount: Grams,
        scene: impl Into<String>,
        methodology: impl Into<String>,
        external_id: impl Into<String>,
    ) -> Result<Self, FieldError> {
        let credit = Credit {
            external_id: external_id.into(),
            master_cid,
            asset: Asset::Reduction,
            amount: amount.0,
            scene: Some(scene.into()),
            methodology: Some(methodology.into()),
        };
        credit.check()?;
        Ok(credit)
    }

    fn check(&self) -> Result<(), FieldError> {
        text("externalId", &self.external_id)?;
        if self.amount <= 0 {
            return Err(FieldError::new("amount", "must be positive"));
        }
        if let Some(scene) = &self.scene {
            text("scene", scene)?;
        }
        if let Some(methodology) = &self.methodology {
            text("methodology", methodology)?;
        }
        Ok(())
    }

    /// The sha256 (hex) of the credit's meaning, to tell a retry from a reuse of the id.
    pub fn canonical_hash(&self) -> String {
        let canonical = serde_json::json!([
            self.external_id,
            self.master_cid.as_str(),
            self.asset.code(),
            self.amount,
            self.scene,
            self.methodology,
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }

    /// Issuance → person.
    pub fn postings(&self) -> PostingSet {
        PostingSetBuilder::default()
            .transfer(
                &AccountId::System(SystemAccount::Issuance),
                &AccountId::Person(self.master_cid.clone()),
                self.asset,
                self.amount,
            )
            .build()
    }
}
