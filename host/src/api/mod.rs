//! The platform API (SPEC §3–§5) on axum.

mod admin;
mod auth;
mod body;
pub mod error;
mod handlers;
mod observe;
mod openapi;
mod wire_time;

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::routing::{get, post};
use carbon_engine::Engine;
use carbon_engine::rules::registry::PluginRegistry;

use crate::ca::{CaResolver, HttpCa, LocalCa};
use crate::config::Config;
use carbon_engine::store::ServerKey;

use crate::keys::{Decryptor, Signer};
use crate::metrics::Metrics;
use auth::RateLimiter;
use error::ApiError;

pub use handlers::order_from_json;

/// Base path of the platform API.
pub const BASE_PATH: &str = "/carbon-inclusion/apis/v1";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// The configuration.
    pub config: Arc<Config>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Resolves sub-scene cids for `accountAuthorize`.
    pub ca: Arc<dyn CaResolver>,
    /// Every platform's rules plugin.
    pub plugins: Arc<PluginRegistry>,
    /// Wakes this instance's push dispatcher (an authorization changed, a platform subscribed).
    pub push_wake: Arc<tokio::sync::Notify>,
    keys: Arc<RwLock<(Arc<Decryptor>, Arc<Signer>)>>,
    token_rate: Arc<RateLimiter>,
    tokens: Arc<auth::TokenCache>,
}

impl AppState {
    /// State for `engine` under `config`, decrypting and signing with `key`.
    pub fn new(engine: Engine, plugins: Arc<PluginRegistry>, config: Config, key: &ServerKey) -> anyhow::Result<Self> {
        let ca: Arc<dyn CaResolver> = match &config.ca_url {
            Some(url) => Arc::new(HttpCa::new(url)?),
            None => Arc::new(LocalCa(engine.clone())),
        };
        Ok(AppState {
            engine,
            plugins,
            ca,
            metrics: Arc::new(Metrics::default()),
            token_rate: Arc::new(RateLimiter::new(config.token_rate_per_min)),
            tokens: Arc::new(auth::TokenCache::default()),
            config: Arc::new(config),
            push_wake: Arc::new(tokio::sync::Notify::new()),
            keys: Arc::new(RwLock::new((Arc::new(Decryptor::new(key)?), Arc::new(Signer::new(key)?)))),
        })
    }

    /// The current decryptor.
    pub fn decryptor(&self) -> Arc<Decryptor> {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).0.clone()
    }

    /// The current push signer.
    pub fn signer(&self) -> Arc<Signer> {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).1.clone()
    }

    /// Swaps in a new key pair (after `carbon-host keygen` rotated it).
    pub fn set_key(&self, key: &ServerKey) -> anyhow::Result<()> {
        let keys = (Arc::new(Decryptor::new(key)?), Arc::new(Signer::new(key)?));
        *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
        Ok(())
    }
}

/// The router of the platform API, its OpenAPI document and the health endpoints.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/auth/getAccessToken", post(handlers::get_access_token))
        .route("/auth/equity/licenseAgreement", get(handlers::license_agreement))
        .route("/auth/accountAuthorize", post(handlers::account_authorize))
        .route("/auth/getReductionScene", get(handlers::get_reduction_scene))
        .route("/account/getPointInfo", post(handlers::get_point_info))
        .route("/account/getPointsBillInfo", post(handlers::get_points_bill_info))
        .route("/transaction/orderSettel", post(handlers::order_settel))
        .route("/subscribe", post(handlers::subscribe));
    let mut app = Router::new()
        .nest(BASE_PATH, api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", get(openapi::serve))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.config.admin_token.is_some() {
        app = app.nest("/admin/v1", admin::router(state.clone()));
    }
    app.fallback(|| async { ApiError::new(40400, "no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::new(40500, "method not allowed for this endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::observe))
        .with_state(state)
}

/// The process's counters, and the push backlog of the whole database (every instance).
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> String {
    let backlog = state.engine.store().push_backlog().await.unwrap_or_else(|err| {
        tracing::warn!(%err, "cannot read the push backlog for /metrics");
        Vec::new()
    });
    state.metrics.render_with(&backlog, state.engine.store().group_commit_stats(), carbon_engine::now_ms())
}

async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Result<&'static str, ApiError> {
    state.engine.store().platforms().await.map_err(ApiError::internal)?;
    Ok("ready")
}
