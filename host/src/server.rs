//! `carbon-host serve`: the API on a listener, with background upkeep, the push dispatcher
//! and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use carbon_engine::Engine;
use carbon_engine::rules::registry::PluginRegistry;
use carbon_engine::store::Store;
use tokio::net::TcpListener;

use crate::api::{AppState, router};
use crate::config::Config;
use crate::keys;

/// How often each instance reloads the key and purges expired tokens and request ids.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Expired tokens are kept this long so that their use answers "expired" (40102), not "unknown".
const EXPIRED_TOKEN_GRACE_MS: i64 = 7 * 86_400_000;

/// Builds the state over `store` under `config`: the server key (created on first start) and
/// the plugin registry with every platform's rules in force.
pub async fn state(store: Arc<dyn Store>, config: Config) -> anyhow::Result<AppState> {
    let key = keys::current_or_create(store.as_ref()).await?;
    let plugins = PluginRegistry::new(store.clone(), config.plugin_limits)?;
    plugins.refresh().await?;
    let engine = Engine::new(store, plugins.clone());
    AppState::new(engine, plugins, config, &key)
}

/// Aborts a background task when dropped, so that dropping `serve` (a killed server in tests)
/// takes its tasks down with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the API on `listener` until `shutdown` completes; in-flight requests finish first.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _upkeep = AbortOnDrop(tokio::spawn(upkeep(state.clone())));
    let _plugin_refresh = AbortOnDrop(tokio::spawn(refresh_plugins(state.clone())));
    let (stop_pushes, stopped) = tokio::sync::watch::channel(false);
    let mut dispatcher = AbortOnDrop(tokio::spawn(crate::push::run(state.clone(), stopped)));
    // A push in flight may finish (bounded by its timeout) before the process exits; one cut
    // off is sent again by whichever instance next claims its stream.
    let drain = state.config.push_timeout + Duration::from_secs(1);
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    let _ = stop_pushes.send(true);
    let _ = tokio::time::timeout(drain, &mut dispatcher.0).await;
    Ok(served?)
}

async fn upkeep(state: AppState) {
    let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        ticks.tick().await;
        let store = state.engine.store();
        match store.current_server_key().await {
            Ok(Some(key)) => {
                if let Err(err) = state.set_key(&key) {
                    tracing::error!(%err, "stored server key unreadable");
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "cannot reload server key"),
        }
        let now = carbon_engine::now_ms();
        if let Err(err) = store.purge_expired(now, now - EXPIRED_TOKEN_GRACE_MS).await {
            tracing::warn!(%err, "cannot purge expired tokens and request ids");
        }
    }
}

/// Follows plugin activations made by any instance or the CLI.
async fn refresh_plugins(state: AppState) {
    let mut ticks = tokio::time::interval(Duration::from_secs(state.config.plugin_refresh_secs));
    loop {
        ticks.tick().await;
        if let Err(err) = state.plugins.refresh().await {
            tracing::warn!(%err, "cannot refresh plugins");
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
