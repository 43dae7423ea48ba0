//! The admin API under `/admin/v1`: the operator operations of the CLI over HTTP, through the
//! same functions (`crate::ops`). Bearer token `CARBON_ADMIN_TOKEN`; absent when it is unset.

use axum::extract::{Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Router, middleware};
use carbon_engine::credit::CreditOutcome;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use super::body::JsonBody;
use super::error::{ApiError, ok};
use crate::{keys, ops};

/// The admin routes, guarded by the admin token.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/keys/public", get(public_key))
        .route("/keys/rotate", post(rotate_key))
        .route("/platforms", get(list_platforms).post(add_platform))
        .route("/providers", post(add_provider))
        .route("/ca/import", post(import_mappings))
        .route("/credits/points", post(credit_points))
        .route("/credits/reduction", post(credit_reduction))
        .route("/authorizations/cancel", post(cancel_authorization))
        .route("/licenses", post(add_license))
        .route("/verify", get(verify))
        .route("/plugins", get(list_plugins).post(install_plugin))
        .route("/plugins/activate", post(activate_plugin))
        .route("/plugins/rollback", post(rollback_plugin))
        .route("/plugins/config", post(configure_plugin))
        .route("/pushes", get(list_pushes))
        .route("/pushes/{id}/requeue", post(requeue_push))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_ADMIN_BODY_BYTES))
}

/// Largest admin request (a CSV import of about a million mappings).
const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024 * 1024;

async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let expected = state.config.admin_token.as_deref().unwrap_or_default();
    let given = request
        .headers()
        .get("Authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Comparing digests keeps the comparison's time independent of where the tokens differ.
    if expected.is_empty() || Sha256::digest(given.as_bytes()) != Sha256::digest(expected.as_bytes()) {
        return Err(ApiError::new(40101, "admin token missing or wrong"));
    }
    Ok(next.run(request).await)
}

async fn public_key(State(state): State<AppState>) -> Result<Response, ApiError> {
    let key = keys::current_or_create(state.engine.store().as_ref()).await.map_err(ApiError::internal)?;
    Ok(ok(Some(json!({ "publicKeyPem": key.public_key_pem }))))
}

#[derive(Deserialize, Default)]
struct RotateRequest {
    bits: Option<usize>,
}

/// The body may be empty (default size) or `{"bits": N}`.
async fn rotate_key(State(state): State<AppState>, body: String) -> Result<Response, ApiError> {
    let body: RotateRequest =
        if body.trim().is_empty() { RotateRequest::default() } else { super::body::decode(body.as_bytes())? };
    let bits = body.bits.unwrap_or(keys::DEFAULT_KEY_BITS);
    if !(2048..=8192).contains(&bits) {
        return Err(ApiError::invalid("bits", "must be 2048 to 8192"));
    }
    let key = keys::rotate(state.engine.store().as_ref(), bits).await.map_err(ApiError::internal)?;
    Ok(ok(Some(json!({ "publicKeyPem": key.public_key_pem }))))
}

async fn list_platforms(State(state): State<AppState>) -> Result<Response, ApiError> {
    let platforms = state.engine.store().platforms().await.map_err(ApiError::internal)?;
    let list: Vec<_> = platforms.iter().map(|p| json!({ "appId": p.app_id.as_str(), "name": p.name })).collect();
    Ok(ok(Some(json!({ "platforms": list }))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlatformRequest {
    name: String,
    app_id: Option<String>,
}

async fn add_platform(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PlatformRequest>,
) -> Result<Response, ApiError> {
    let platform = ops::add_platform(&state.engine, &body.name, body.app_id).await?;
    Ok(ok(Some(json!({ "appId": platform.app_id.as_str(), "name": platform.name }))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderRequest {
    equity_cid: String,
    name: String,
    platforms: Vec<String>,
}

async fn add_provider(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ProviderRequest>,
) -> Result<Response, ApiError> {
    ops::add_provider(&state.engine, body.equity_cid, &body.name, body.platforms).await?;
    Ok(ok::<()>(None))
}

/// The body is the CSV text itself (`app_id,cid,master_cid` header).
async fn import_mappings(State(state): State<AppState>, body: String) -> Result<Response, ApiError> {
    let summary = ops::import_csv(&state.engine, &body, |_, _| {}).await?;
    let refused: Vec<_> =
        summary.refused.iter().map(|(line, reason)| json!({ "line": line, "reason": reason })).collect();
    Ok(ok(Some(json!({ "inserted": summary.inserted, "unchanged": summary.unchanged, "refused": refused }))))
}

fn credited(outcome: CreditOutcome) -> Response {
    ok(Some(json!({ "credited": outcome == CreditOutcome::Credited })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PointsCredit {
    master_cid: String,
    class: String,
    amount: String,
    external_id: String,
    scene: Option<String>,
}

async fn credit_points(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PointsCredit>,
) -> Result<Response, ApiError> {
    let outcome =
        ops::credit_points(&state.engine, body.master_cid, &body.class, &body.amount, body.external_id, body.scene)
            .await?;
    Ok(credited(outcome))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReductionCredit {
    master_cid: String,
    kg: String,
    scene: String,
    methodology: String,
    external_id: String,
}

async fn credit_reduction(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ReductionCredit>,
) -> Result<Response, ApiError> {
    let outcome =
        ops::credit_reduction(&state.engine, body.master_cid, &body.kg, body.scene, body.methodology, body.external_id)
            .await?;
    Ok(credited(outcome))
}

#[derive(Deserialize)]
struct CancelRequest {
    platform: String,
    cid: String,
}

async fn cancel_authorization(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CancelRequest>,
) -> Result<Response, ApiError> {
    ops::cancel_authorization(&state.engine, body.platform, body.cid).await?;
    state.push_wake.notify_one();
    Ok(ok::<()>(None))
}

#[derive(Deserialize)]
struct LicenseRequest {
    name: String,
    url: String,
}

async fn add_license(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LicenseRequest>,
) -> Result<Response, ApiError> {
    ops::add_license(&state.engine, body.name, body.url).await?;
    Ok(ok::<()>(None))
}

async fn verify(State(state): State<AppState>) -> Result<Response, ApiError> {
    let report = ops::verify(&state.engine).await?;
    let violations: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
    Ok(ok(Some(json!({
        "sound": report.is_sound(),
        "balancesChecked": report.balances_checked,
        "journalsChecked": report.journals_checked,
        "ordersChecked": report.orders_checked,
        "violations": violations,
    }))))
}

#[derive(Deserialize)]
struct PlatformQuery {
    platform: String,
}

fn listed(versions: Vec<carbon_engine::rules::registry::ListedVersion>) -> Response {
    let list: Vec<_> = versions
        .into_iter()
        .map(|listed| {
            let version = listed.version;
            json!({
                "version": version.version,
                "active": listed.active,
                "sha256": version.sha256,
                "sizeBytes": version.size_bytes,
                "config": version.config,
                "fuel": version.limits.fuel,
                "memoryBytes": version.limits.memory_bytes,
                "deadlineMs": version.limits.deadline_ms,
                "uploadedAt": version.uploaded_at_ms,
            })
        })
        .collect();
    ok(Some(json!({ "versions": list })))
}

async fn list_plugins(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<PlatformQuery>,
) -> Result<Response, ApiError> {
    Ok(listed(ops::plugin_list(&state.engine, &state.plugins, query.platform).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstallRequest {
    platform: String,
    /// The component, base64.
    wasm_base64: String,
    #[serde(default)]
    config: String,
    #[serde(default)]
    activate: bool,
    fuel: Option<u64>,
    memory_mib: Option<u64>,
    deadline_ms: Option<u64>,
}

async fn install_plugin(State(state): State<AppState>, body: String) -> Result<Response, ApiError> {
    use base64::Engine as _;
    let request: InstallRequest = super::body::decode(body.as_bytes())?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(request.wasm_base64.trim())
        .map_err(|_| ApiError::invalid("wasmBase64", "not base64"))?;
    let limits = carbon_engine::store::StoredLimits {
        fuel: request.fuel,
        memory_bytes: request.memory_mib.map(|mib| mib * 1024 * 1024),
        deadline_ms: request.deadline_ms,
    };
    let version = ops::plugin_install(
        &state.engine,
        &state.plugins,
        request.platform,
        wasm,
        &request.config,
        limits,
        request.activate,
    )
    .await?;
    refresh(&state).await?;
    Ok(ok(Some(json!({ "version": version }))))
}

/// This instance follows at once; others within `CARBON_PLUGIN_REFRESH_SECS`.
async fn refresh(state: &AppState) -> Result<(), ApiError> {
    Ok(state.plugins.refresh().await?)
}

#[derive(Deserialize)]
struct ActivateRequest {
    platform: String,
    /// `null`: the built-in rules.
    version: Option<i64>,
}

async fn activate_plugin(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ActivateRequest>,
) -> Result<Response, ApiError> {
    ops::plugin_activate(&state.engine, &state.plugins, body.platform, body.version).await?;
    refresh(&state).await?;
    Ok(ok::<()>(None))
}

async fn rollback_plugin(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PlatformQuery>,
) -> Result<Response, ApiError> {
    let version = ops::plugin_rollback(&state.engine, &state.plugins, body.platform).await?;
    refresh(&state).await?;
    Ok(ok(Some(json!({ "version": version }))))
}

#[derive(Deserialize)]
struct ConfigRequest {
    platform: String,
    version: i64,
    config: String,
}

async fn configure_plugin(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ConfigRequest>,
) -> Result<Response, ApiError> {
    ops::plugin_configure(&state.engine, &state.plugins, body.platform, body.version, &body.config).await?;
    refresh(&state).await?;
    Ok(ok::<()>(None))
}

#[derive(Deserialize)]
struct PushQuery {
    dead: Option<bool>,
    limit: Option<u32>,
}

/// `GET /admin/v1/pushes?dead=true&limit=100`: batches, newest first.
async fn list_pushes(
    State(state): State<AppState>,
    query: Result<Query<PushQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::invalid("query", err))?;
    let batches = ops::list_pushes(&state.engine, query.dead.unwrap_or(false), query.limit.unwrap_or(100)).await?;
    let list: Vec<_> = batches
        .iter()
        .map(|batch| {
            json!({
                "id": batch.id,
                "platformId": batch.platform_id.0,
                "appId": batch.app_id,
                "type": batch.kind.code(),
                "status": batch.status.name(),
                "rows": batch.rows,
                "attempts": batch.attempts,
                "createdAt": batch.created_at_ms,
                "nextAttemptAt": batch.next_attempt_at_ms,
                "deliveredAt": batch.delivered_at_ms,
                "lastError": batch.last_error,
            })
        })
        .collect();
    Ok(ok(Some(json!({ "pushes": list }))))
}

/// `POST /admin/v1/pushes/{id}/requeue`: a dead-lettered batch goes out again.
async fn requeue_push(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::invalid("id", "must be a batch number"))?;
    ops::requeue_push(&state.engine, id).await?;
    state.push_wake.notify_one();
    Ok(ok::<()>(None))
}
