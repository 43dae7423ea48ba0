//! Who is who: platforms, providers, sub-scene cid mappings and authorizations.

use crate::ids::{AppId, MasterCid, PlatformId, SubCid};

/// An equity platform (tenant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// The engine's key.
    pub id: PlatformId,
    /// The application id the platform proves with RSA.
    pub app_id: AppId,
    /// A display name for operators.
    pub name: String,
}

/// A person's authorization of one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The platform authorized.
    pub platform_id: PlatformId,
    /// The person's cid under that platform.
    pub sub_cid: SubCid,
    /// The person's master cid.
    pub master_cid: MasterCid,
    /// Authorized now (not cancelled since).
    pub active: bool,
    /// When it was last authorized, ms since the epoch.
    pub authorized_at_ms: i64,
    /// When it was last cancelled, if it was.
    pub cancelled_at_ms: Option<i64>,
}

/// What recording a cid mapping did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingOutcome {
    /// A new mapping was stored.
    Inserted,
    /// The same mapping was already there.
    Unchanged,
}
