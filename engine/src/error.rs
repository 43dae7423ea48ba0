//! The engine's one error type. The host maps each variant to a code of SPEC §3 in one place.

use crate::order::FieldError;
use crate::store::StoreError;

/// Everything an engine operation can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A parameter is missing or malformed (40001).
    #[error("invalid parameter {0}")]
    InvalidField(#[from] FieldError),
    /// No platform has this app id.
    #[error("unknown platform `{0}`")]
    UnknownPlatform(String),
    /// No provider has this equity cid.
    #[error("unknown provider `{0}`")]
    UnknownProvider(String),
    /// The thing named does not exist (operator operations).
    #[error("not found: {0}")]
    NotFound(String),
    /// Something with this identity already exists (operator operations).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The person has not authorized this platform, or cancelled (40301).
    #[error("the cid has not authorized this platform")]
    NotAuthorized,
    /// The provider is not linked to this platform (40302).
    #[error("the equityCid is not linked to this platform")]
    ProviderNotLinked,
    /// The CA knows no master cid for this sub-scene cid (40401).
    #[error("the cid is unknown to the CA")]
    UnknownCid,
    /// The refund's parent is not a purchase of this platform, cid and provider (40402).
    #[error("parentTransactionId is not an order of this platform, cid and provider")]
    ParentNotFound,
    /// The order id was settled before with different content (40901).
    #[error("transactionId already settled with different content")]
    OrderConflict,
    /// An id (credit external id, cid mapping) was used before for something else (40901).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Insufficient points, with no conversion allowed or possible (42201).
    #[error("insufficient points: {0}")]
    InsufficientPoints(String),
    /// The platform's rules reject the `transactionType` (42202).
    #[error("transactionType rejected: {0}")]
    TransactionTypeRejected(String),
    /// The refund exceeds what is left of the parent order (42203).
    #[error("refund exceeds what is left of the parent order")]
    RefundExceedsParent,
    /// The rules rejected the order, or returned a plan the host refused (42204).
    #[error("rejected by the platform's rules: {0}")]
    RulesRejected(String),
    /// The rules could not answer (50301).
    #[error("the platform's rules failed: {0}")]
    RulesFailed(String),
    /// The database failed (50001).
    #[error(transparent)]
    Store(#[from] StoreError),
}
