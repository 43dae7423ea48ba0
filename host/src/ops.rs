//! Operator operations, shared by the CLI and the admin API so that there is one
//! implementation of each. Inputs arrive as text; every refusal is an [`EngineError`] whose
//! `InvalidField` names the offending input.

use std::collections::HashMap;

use carbon_engine::amount::{Grams, Points};
use carbon_engine::credit::{Credit, CreditOutcome};
use carbon_engine::directory::{MappingOutcome, Platform};
use carbon_engine::ids::{AppId, EquityCid, IdError, MasterCid, SubCid};
use carbon_engine::invariants::InvariantReport;
use carbon_engine::ledger::Asset;
use carbon_engine::order::FieldError;
use carbon_engine::push::{BatchFilter, PushBatchInfo, RequeueOutcome};
use carbon_engine::rules::registry::{ListedVersion, PluginRegistry};
use carbon_engine::store::{License, StoredLimits};
use carbon_engine::{Engine, EngineError};

fn id<T>(field: &str, value: String, make: fn(String) -> Result<T, IdError>) -> Result<T, EngineError> {
    make(value).map_err(|err| FieldError::new(field, err.to_string()).into())
}

/// Adds a platform; a random appId unless one is given.
pub async fn add_platform(engine: &Engine, name: &str, app_id: Option<String>) -> Result<Platform, EngineError> {
    let app_id = app_id.map(|app_id| id("appId", app_id, AppId::new)).transpose()?;
    engine.add_platform(name, app_id).await
}

/// Adds (or renames) a provider and links it to platforms by appId.
pub async fn add_provider(
    engine: &Engine,
    equity_cid: String,
    name: &str,
    platforms: Vec<String>,
) -> Result<(), EngineError> {
    let equity_cid = id("equityCid", equity_cid, EquityCid::new)?;
    if name.trim().is_empty() {
        return Err(FieldError::new("name", "must not be empty").into());
    }
    let platforms =
        platforms.into_iter().map(|app_id| id("platform", app_id, AppId::new)).collect::<Result<Vec<_>, _>>()?;
    engine.add_provider(&equity_cid, name, &platforms).await
}

/// A point class as operators write it: `a` or `b`.
pub fn point_class(class: &str) -> Result<Asset, EngineError> {
    match class {
        "a" | "A" | "1" => Ok(Asset::PointA),
        "b" | "B" | "2" => Ok(Asset::PointB),
        other => Err(FieldError::new("class", format!("must be a or b, not `{other}`")).into()),
    }
}

/// Credits points of `class` (`a`/`b`); `amount` is a decimal with at most 2 fraction digits.
pub async fn credit_points(
    engine: &Engine,
    master_cid: String,
    class: &str,
    amount: &str,
    external_id: String,
    scene: Option<String>,
) -> Result<CreditOutcome, EngineError> {
    let master_cid = id("masterCid", master_cid, MasterCid::new)?;
    let amount = Points::parse("amount", amount).map_err(FieldError::from)?;
    let credit = Credit::points(master_cid, point_class(class)?, amount, external_id, scene)?;
    engine.credit(&credit).await
}

/// Credits reductions; `kg` is a decimal with at most 3 fraction digits.
pub async fn credit_reduction(
    engine: &Engine,
    master_cid: String,
    kg: &str,
    scene: String,
    methodology: String,
    external_id: String,
) -> Result<CreditOutcome, EngineError> {
    let master_cid = id("masterCid", master_cid, MasterCid::new)?;
    let grams = Grams::parse_kg("kg", kg).map_err(FieldError::from)?;
    let credit = Credit::reduction(master_cid, grams, scene, methodology, external_id)?;
    engine.credit(&credit).await
}

/// Cancels a person's authorization of a platform.
pub async fn cancel_authorization(engine: &Engine, app_id: String, cid: String) -> Result<(), EngineError> {
    let platform = engine.platform(&id("platform", app_id, AppId::new)?).await?;
    engine.cancel_authorization(&platform, &id("cid", cid, SubCid::new)?).await?;
    Ok(())
}

/// Adds a license agreement, or changes the URL of the one with this name.
pub async fn add_license(engine: &Engine, name: String, url: String) -> Result<(), EngineError> {
    if name.trim().is_empty() {
        return Err(FieldError::new("name", "must not be empty").into());
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2048 {
        return Err(FieldError::new("url", "must be an http(s) URL of at most 2048 characters").into());
    }
    let license = License { name, download_url: url };
    Ok(engine.store().upsert_license(&license, carbon_engine::now_ms()).await?)
}

/// Push batches, newest first: all of them or only the dead-lettered ones; at most `limit`
/// (1 to 10000).
pub async fn list_pushes(engine: &Engine, dead_only: bool, limit: u32) -> Result<Vec<PushBatchInfo>, EngineError> {
    if !(1..=10_000).contains(&limit) {
        return Err(FieldError::new("limit", "must be 1 to 10000").into());
    }
    let filter = if dead_only { BatchFilter::Dead } else { BatchFilter::All };
    Ok(engine.store().push_batches(filter, limit).await?)
}

/// Makes a dead-lettered push batch pending again with fresh attempts; it is sent next in
/// its stream.
pub async fn requeue_push(engine: &Engine, batch_id: i64) -> Result<(), EngineError> {
    match engine.store().requeue_push_batch(batch_id, carbon_engine::now_ms()).await? {
        RequeueOutcome::Requeued => Ok(()),
        RequeueOutcome::NotDead(status) => {
            Err(EngineError::Conflict(format!("push batch {batch_id} is {status}, not dead-lettered")))
        }
        RequeueOutcome::Unknown => Err(FieldError::new("id", format!("no push batch {batch_id}")).into()),
    }
}

/// Checks every ledger invariant.
pub async fn verify(engine: &Engine) -> Result<InvariantReport, EngineError> {
    engine.verify().await
}

/// Counts of a CA mapping import.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// New mappings stored.
    pub inserted: u64,
    /// Rows already present.
    pub unchanged: u64,
    /// Rows refused: line number and reason.
    pub refused: Vec<(usize, String)>,
}

/// Imports CSV text with header `app_id,cid,master_cid`. A bad row is reported with its line
/// number and skipped; good rows are kept; importing the same rows again changes nothing.
/// `progress` is called with (rows done, rows in all) every 1000 rows.
pub async fn import_csv(
    engine: &Engine,
    text: &str,
    progress: impl Fn(usize, usize),
) -> Result<ImportSummary, EngineError> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, line)| line.trim().trim_start_matches('\u{feff}')).unwrap_or("");
    if header.replace(' ', "") != "app_id,cid,master_cid" {
        return Err(
            FieldError::new("csv", format!("the first line must be `app_id,cid,master_cid`, not `{header}`")).into()
        );
    }
    let total = text.lines().count().saturating_sub(1);
    let mut platforms: HashMap<String, Platform> = HashMap::new();
    let mut summary = ImportSummary::default();
    for (index, line) in lines {
        if index % 1000 == 0 {
            progress(index, total);
        }
        if line.trim().is_empty() {
            continue;
        }
        match import_row(engine, &mut platforms, line).await {
            Ok(MappingOutcome::Inserted) => summary.inserted += 1,
            Ok(MappingOutcome::Unchanged) => summary.unchanged += 1,
            Err(EngineError::Store(err)) => return Err(EngineError::Store(err)),
            Err(reason) => summary.refused.push((index + 1, reason.to_string())),
        }
    }
    progress(total, total);
    Ok(summary)
}

async fn import_row(
    engine: &Engine,
    platforms: &mut HashMap<String, Platform>,
    line: &str,
) -> Result<MappingOutcome, EngineError> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [app_id, cid, master_cid] = fields.as_slice() else {
        return Err(FieldError::new("row", format!("expected 3 fields, found {}", fields.len())).into());
    };
    let platform = match platforms.get(*app_id) {
        Some(platform) => platform.clone(),
        None => {
            let platform = engine.platform(&id("app_id", app_id.to_string(), AppId::new)?).await?;
            platforms.insert(app_id.to_string(), platform.clone());
            platform
        }
    };
    let cid = id("cid", cid.to_string(), SubCid::new)?;
    let master_cid = id("master_cid", master_cid.to_string(), MasterCid::new)?;
    engine.map_cid(&platform, &cid, &master_cid).await
}

async fn platform_of(engine: &Engine, app_id: String) -> Result<Platform, EngineError> {
    engine.platform(&id("platform", app_id, AppId::new)?).await
}

/// Installs a plugin version for a platform (checked first); returns the version.
pub async fn plugin_install(
    engine: &Engine,
    registry: &PluginRegistry,
    app_id: String,
    wasm: Vec<u8>,
    config: &str,
    limits: StoredLimits,
    activate: bool,
) -> Result<i64, EngineError> {
    let platform = platform_of(engine, app_id).await?;
    registry.install(&platform, wasm, config, limits, activate).await
}

/// A platform's plugin versions.
pub async fn plugin_list(
    engine: &Engine,
    registry: &PluginRegistry,
    app_id: String,
) -> Result<Vec<ListedVersion>, EngineError> {
    registry.list(&platform_of(engine, app_id).await?).await
}

/// Puts a version (or, with `None`, the built-in rules) in force.
pub async fn plugin_activate(
    engine: &Engine,
    registry: &PluginRegistry,
    app_id: String,
    version: Option<i64>,
) -> Result<(), EngineError> {
    registry.activate(&platform_of(engine, app_id).await?, version).await
}

/// Puts back the previous version; returns it.
pub async fn plugin_rollback(
    engine: &Engine,
    registry: &PluginRegistry,
    app_id: String,
) -> Result<Option<i64>, EngineError> {
    registry.rollback(&platform_of(engine, app_id).await?).await
}

/// Replaces a version's configuration text.
pub async fn plugin_configure(
    engine: &Engine,
    registry: &PluginRegistry,
    app_id: String,
    version: i64,
    config: &str,
) -> Result<(), EngineError> {
    registry.configure(&platform_of(engine, app_id).await?, version, config).await
}
