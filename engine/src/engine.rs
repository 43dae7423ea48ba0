//! The engine: every business operation, over a [`Store`] and the platforms' [`Rules`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::amount::Grams;
use crate::bill::{BillPage, BillQuery};
use crate::credit::{Credit, CreditOutcome};
use crate::directory::{Authorization, MappingOutcome, Platform};
use crate::error::EngineError;
use crate::ids::{AppId, EquityCid, MasterCid, SubCid};
use crate::invariants::InvariantReport;
use crate::ledger::{AccountId, Asset, PostingSet, PostingSetBuilder, SystemAccount};
use crate::order::{Order, OrderKind};
use crate::rules::plan::{PlanError, plan_purchase};
use crate::rules::{
    Balances, Conversion, NativeDefaultRules, Rejection, Rules, RulesError, RulesSource, SameRulesForAll,
};
use crate::store::{ApplyError, CreditError, MappingError, SettlementWrite, Store};

/// How often a purchase is re-planned when its balances moved between planning and writing.
const MAX_SETTLE_ATTEMPTS: usize = 8;

/// How a settlement ended successfully.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Settled now.
    New,
    /// Settled before with the same content; nothing changed (the original success stands).
    Replayed,
}

/// The settlement engine. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    rules: Arc<dyn RulesSource>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}

impl Engine {
    /// An engine over `store`, asking `rules` for each platform's rules.
    pub fn new(store: Arc<dyn Store>, rules: Arc<dyn RulesSource>) -> Self {
        Engine { store, rules }
    }

    /// An engine where every platform uses [`NativeDefaultRules::default`].
    pub fn with_default_rules(store: Arc<dyn Store>) -> Self {
        let rules: Arc<dyn Rules> = Arc::new(NativeDefaultRules::default());
        Engine::new(store, Arc::new(SameRulesForAll(rules)))
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Adds a platform; a random app id is made when none is given.
    pub async fn add_platform(&self, name: &str, app_id: Option<AppId>) -> Result<Platform, EngineError> {
        if name.trim().is_empty() {
            return Err(crate::order::FieldError::new("name", "must not be empty").into());
        }
        let app_id = match app_id {
            Some(app_id) => app_id,
            None => AppId::new(uuid::Uuid::new_v4().simple().to_string()).expect("a uuid is a valid app id"),
        };
        self.store
            .insert_platform(&app_id, name, now_ms())
            .await?
            .ok_or_else(|| EngineError::AlreadyExists(format!("platform with app id `{app_id}`")))
    }

    /// The platform with this app id.
    pub async fn platform(&self, app_id: &AppId) -> Result<Platform, EngineError> {
        self.store.platform_by_app_id(app_id).await?.ok_or_else(|| EngineError::UnknownPlatform(app_id.to_string()))
    }

    /// Adds (or renames) a provider and links it to each of `platforms`. Checks every platform
    /// exists before changing anything.
    pub async fn add_provider(
        &self,
        equity_cid: &EquityCid,
        name: &str,
        platforms: &[AppId],
    ) -> Result<(), EngineError> {
        let mut resolved = Vec::with_capacity(platforms.len());
        for app_id in platforms {
            resolved.push(self.platform(app_id).await?);
        }
        self.store.upsert_provider(equity_cid, name, now_ms()).await?;
        for platform in resolved {
            self.store.link_provider(platform.id, equity_cid).await?;
        }
        Ok(())
    }

    /// Records that `sub_cid` of `platform` is the person `master_cid` (the local CA table).
    pub async fn map_cid(
        &self,
        platform: &Platform,
        sub_cid: &SubCid,
        master_cid: &MasterCid,
    ) -> Result<MappingOutcome, EngineError> {
        self.store.put_cid_mapping(platform.id, sub_cid, master_cid).await.map_err(|err| match err {
            MappingError::Conflict(existing) => {
                EngineError::Conflict(format!("cid `{sub_cid}` is already mapped to master cid `{existing}`"))
            }
            MappingError::Store(err) => err.into(),
        })
    }

    /// The master cid of a platform's sub-scene cid in the local CA table.
    pub async fn resolve_cid(&self, platform: &Platform, sub_cid: &SubCid) -> Result<Option<MasterCid>, EngineError> {
        Ok(self.store.resolve_cid(platform.id, sub_cid).await?)
    }

    /// The person authorizes the platform (`accountAuthorize`); the cid must be known.
    pub async fn authorize(&self, platform: &Platform, sub_cid: &SubCid) -> Result<Authorization, EngineError> {
        let master_cid = self.resolve_cid(platform, sub_cid).await?.ok_or(EngineError::UnknownCid)?;
        self.store.set_authorization(platform.id, sub_cid, &master_cid, true, now_ms()).await?;
        self.authorized(platform, sub_cid).await
    }

    /// The person authorizes the platform, an external CA having resolved `sub_cid` to
    /// `master_cid`; the mapping is kept so settlement never asks the CA.
    pub async fn authorize_resolved(
        &self,
        platform: &Platform,
        sub_cid: &SubCid,
        master_cid: &MasterCid,
    ) -> Result<Authorization, EngineError> {
        self.map_cid(platform, sub_cid, master_cid).await?;
        self.store.set_authorization(platform.id, sub_cid, master_cid, true, now_ms()).await?;
        self.authorized(platform, sub_cid).await
    }

    /// Cancels the person's authorization of the platform.
    pub async fn cancel_authorization(
        &self,
        platform: &Platform,
        sub_cid: &SubCid,
    ) -> Result<Authorization, EngineError> {
        let authorization = self.authorized(platform, sub_cid).await?;
        self.store.set_authorization(platform.id, sub_cid, &authorization.master_cid, false, now_ms()).await?;
        Ok(Authorization { active: false, ..authorization })
    }

    /// The active authorization of `sub_cid` for `platform`, or [`EngineError::NotAuthorized`].
    pub async fn authorized(&self, platform: &Platform, sub_cid: &SubCid) -> Result<Authorization, EngineError> {
        match self.store.authorization(platform.id, sub_cid).await? {
            Some(authorization) if authorization.active => Ok(authorization),
            _ => Err(EngineError::NotAuthorized),
        }
    }

    /// The person's balances, as seen by an authorized platform (`getPointInfo`).
    pub async fn point_balances(&self, platform: &Platform, sub_cid: &SubCid) -> Result<Balances, EngineError> {
        let authorization = self.authorized(platform, sub_cid).await?;
        Ok(self.store.balances(&authorization.master_cid).await?)
    }

    /// Scenes in which the person has reductions (`getReductionScene`).
    pub async fn scenes(&self, platform: &Platform, sub_cid: &SubCid) -> Result<Vec<String>, EngineError> {
        let authorization = self.authorized(platform, sub_cid).await?;
        Ok(self.store.scenes(&authorization.master_cid).await?)
    }

    /// Credits points or reductions, once per external id.
    pub async fn credit(&self, credit: &Credit) -> Result<CreditOutcome, EngineError> {
        self.store.apply_credit(credit, now_ms()).await.map_err(|err| match err {
            CreditError::Conflict => {
                EngineError::Conflict(format!("external id `{}` was used for a different credit", credit.external_id))
            }
            CreditError::Store(err) => err.into(),
        })
    }

    /// A platform's bills (`getPointsBillInfo`).
    pub async fn bills(&self, platform: &Platform, query: &BillQuery) -> Result<BillPage, EngineError> {
        query.validate()?;
        Ok(self.store.bills(platform.id, query).await?)
    }

    /// Checks every ledger invariant over the whole database.
    pub async fn verify(&self) -> Result<InvariantReport, EngineError> {
        Ok(self.store.verify().await?)
    }

    /// Settles an order of `platform` exactly once (SPEC §5).
    pub async fn settle(&self, platform: &Platform, order: &Order) -> Result<Settled, EngineError> {
        match self.settle_unless_settled(platform, order).await {
            // The same order sent to two instances at once: the twin that won debited the
            // points this one found short. Answer as a resend would, not "insufficient".
            Err(EngineError::InsufficientPoints(reason)) => {
                match self.store.order_hash(platform.id, &order.transaction_id).await? {
                    Some(existing) => replay_or_conflict(&existing, &order.canonical_hash()),
                    None => Err(EngineError::InsufficientPoints(reason)),
                }
            }
            other => other,
        }
    }

    /// [`Engine::settle`], except that a twin settled while this one planned is not looked for.
    async fn settle_unless_settled(&self, platform: &Platform, order: &Order) -> Result<Settled, EngineError> {
        let context =
            self.store.settle_context(platform.id, &order.cid, &order.equity_cid, &order.transaction_id).await?;
        let authorization = context.authorization.filter(|found| found.active).ok_or(EngineError::NotAuthorized)?;
        if !context.provider_linked {
            return Err(EngineError::ProviderNotLinked);
        }
        let request_hash = order.canonical_hash();
        if let Some(existing) = context.settled_hash {
            return replay_or_conflict(&existing, &request_hash);
        }
        let mut read_balances = Some(context.balances);
        let rules = self.rules.rules_for(platform).await.map_err(rules_error)?;
        rules.validate_transaction_type(&order.transaction_type).await.map_err(rules_error)?;
        let rules_version = rules.version();
        let person = AccountId::Person(authorization.master_cid.clone());
        let provider = AccountId::Provider(order.equity_cid.clone());

        for attempt in 1..=MAX_SETTLE_ATTEMPTS {
            let (postings, converted_reduction) = match order.kind() {
                OrderKind::Purchase => {
                    // The first plan uses the balances read with the context; a re-plan reads afresh.
                    let balances = match read_balances.take() {
                        Some(balances) => balances,
                        None => self.store.balances(&authorization.master_cid).await?,
                    };
                    let plan = plan_purchase(rules.as_ref(), order, balances).await.map_err(plan_error)?;
                    purchase_postings(order, &plan, &person, &provider)
                }
                OrderKind::Refund => (refund_postings(order, &person, &provider), Grams::ZERO),
            };
            let write = SettlementWrite {
                platform_id: platform.id,
                order: order.clone(),
                master_cid: authorization.master_cid.clone(),
                request_hash: request_hash.clone(),
                postings,
                converted_reduction,
                rules_version: rules_version.clone(),
                settled_at_ms: now_ms(),
            };
            match self.store.apply_settlement(write).await {
                Ok(()) => return Ok(Settled::New),
                Err(ApplyError::DuplicateOrder) => {
                    let existing = self.store.order_hash(platform.id, &order.transaction_id).await?;
                    let existing = existing.ok_or_else(|| {
                        EngineError::Store(crate::store::StoreError::Corrupt(
                            "duplicate order reported but not found".into(),
                        ))
                    })?;
                    return replay_or_conflict(&existing, &request_hash);
                }
                // The person's balances moved since planning; plan again on fresh balances.
                Err(ApplyError::Overdraft { .. })
                    if order.kind() == OrderKind::Purchase && attempt < MAX_SETTLE_ATTEMPTS =>
                {
                    continue;
                }
                Err(ApplyError::Overdraft { account, asset }) => {
                    return Err(EngineError::InsufficientPoints(format!("{account} cannot cover {asset}")));
                }
                Err(ApplyError::ParentNotFound) => return Err(EngineError::ParentNotFound),
                Err(ApplyError::RefundExceedsParent) => return Err(EngineError::RefundExceedsParent),
                Err(ApplyError::Store(err)) => return Err(err.into()),
            }
        }
        unreachable!("the last attempt always returns")
    }
}

fn replay_or_conflict(existing_hash: &str, request_hash: &str) -> Result<Settled, EngineError> {
    if existing_hash == request_hash { Ok(Settled::Replayed) } else { Err(EngineError::OrderConflict) }
}

fn rules_error(err: RulesError) -> EngineError {
    match err {
        RulesError::Rejected(Rejection::InvalidTransactionType(reason)) => EngineError::TransactionTypeRejected(reason),
        RulesError::Rejected(Rejection::Insufficient(reason)) => EngineError::InsufficientPoints(reason),
        RulesError::Rejected(Rejection::Other(reason)) => EngineError::RulesRejected(reason),
        RulesError::Failed(reason) => EngineError::RulesFailed(reason),
    }
}

fn plan_error(err: PlanError) -> EngineError {
    match err {
        PlanError::Rules(err) => rules_error(err),
        PlanError::Refused(reason) => EngineError::RulesRejected(reason),
        PlanError::Insufficient(reason) => EngineError::InsufficientPoints(reason),
    }
}

/// Conversions first, then person → provider per class.
fn purchase_postings(
    order: &Order,
    plan: &[Conversion],
    person: &AccountId,
    provider: &AccountId,
) -> (PostingSet, Grams) {
    let mut builder = PostingSetBuilder::default();
    let mut converted = Grams::ZERO;
    for conversion in plan {
        let (sink, source) = if conversion.from == Asset::Reduction {
            converted.0 += conversion.spend;
            (SystemAccount::ReductionRetirement, SystemAccount::Issuance)
        } else {
            (SystemAccount::Conversion, SystemAccount::Conversion)
        };
        builder.transfer(person, &AccountId::System(sink), conversion.from, conversion.spend);
        builder.transfer(&AccountId::System(source), person, conversion.to, conversion.receive);
    }
    builder.transfer(person, provider, Asset::PointA, order.point_a.0);
    builder.transfer(person, provider, Asset::PointB, order.point_b.0);
    (builder.build(), converted)
}

/// Provider → person per class; conversions of the purchase are not undone.
fn refund_postings(order: &Order, person: &AccountId, provider: &AccountId) -> PostingSet {
    PostingSetBuilder::default()
        .transfer(provider, person, Asset::PointA, -order.point_a.0)
        .transfer(provider, person, Asset::PointB, -order.point_b.0)
        .build()
}
