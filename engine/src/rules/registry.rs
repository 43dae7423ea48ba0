//! The plugin registry: which rules decide each platform's orders right now, and the plugin
//! lifecycle (install, activate, roll back, configure).
//!
//! **Invariant:** the map of active rules is replaced whole (an `Arc` swap), and a settlement
//! takes its platform's rules once, so no order ever sees a half-swapped state. Every
//! instance polls the database ([`PluginRegistry::refresh`]) and so follows activations made
//! anywhere without restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;

use super::Balances;
use super::wasm::{CompiledPlugin, MAX_MEMORY_BYTES, PluginLimits, PluginRuntime, WasmRules, sha256_hex};
use super::{NativeDefaultRules, Rules, RulesError, RulesSource};
use crate::directory::Platform;
use crate::error::EngineError;
use crate::ids::PlatformId;
use crate::now_ms;
use crate::order::FieldError;
use crate::store::{PluginUpload, PluginVersion, Store, StoredLimits};

/// A platform's rules in force, and what they were built from.
struct Active {
    built_from: PluginVersion,
    rules: Arc<dyn Rules>,
}

/// Rules of a plugin version that could not be loaded: every order fails (50301) rather than
/// silently falling back to other rules.
struct Unloadable(String);

#[async_trait]
impl Rules for Unloadable {
    fn version(&self) -> Option<String> {
        None
    }
    async fn validate_transaction_type(&self, _transaction_type: &str) -> Result<(), RulesError> {
        Err(RulesError::Failed(self.0.clone()))
    }
    async fn convert_points(
        &self,
        _order: &crate::order::Order,
        _balances: &Balances,
    ) -> Result<Vec<super::Conversion>, RulesError> {
        Err(RulesError::Failed(self.0.clone()))
    }
    async fn convert_reduction(
        &self,
        _order: &crate::order::Order,
        _balances: &Balances,
    ) -> Result<Vec<super::Conversion>, RulesError> {
        Err(RulesError::Failed(self.0.clone()))
    }
}

/// Plugins of every platform, and the built-in rules for platforms without one.
pub struct PluginRegistry {
    store: Arc<dyn Store>,
    runtime: Arc<PluginRuntime>,
    defaults: PluginLimits,
    builtin: Arc<dyn Rules>,
    active: RwLock<Arc<HashMap<PlatformId, Arc<Active>>>>,
    compiled: Mutex<HashMap<String, Arc<CompiledPlugin>>>,
    compilations: AtomicU64,
}

/// One line of `plugin list`.
#[derive(Clone, Debug)]
pub struct ListedVersion {
    /// The version.
    pub version: PluginVersion,
    /// Whether it is the one in force.
    pub active: bool,
}

fn field(name: &str, reason: impl Into<String>) -> EngineError {
    FieldError::new(name, reason).into()
}

impl PluginRegistry {
    /// A registry over `store` with per-call `defaults`; nothing is loaded until
    /// [`PluginRegistry::refresh`].
    pub fn new(store: Arc<dyn Store>, defaults: PluginLimits) -> Result<Arc<Self>, EngineError> {
        let runtime = PluginRuntime::new().map_err(|err| EngineError::RulesFailed(err.to_string()))?;
        Ok(Arc::new(PluginRegistry {
            store,
            runtime,
            defaults,
            builtin: Arc::new(NativeDefaultRules::default()),
            active: RwLock::new(Arc::new(HashMap::new())),
            compiled: Mutex::new(HashMap::new()),
            compilations: AtomicU64::new(0),
        }))
    }

    /// How many components this registry compiled (rather than loading a stored artifact).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// The wasmtime runtime (for tools that run plugins directly).
    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }

    /// The limits a stored version runs with.
    pub fn limits_of(&self, stored: &StoredLimits) -> PluginLimits {
        PluginLimits {
            fuel: stored.fuel.unwrap_or(self.defaults.fuel),
            memory_bytes: stored.memory_bytes.map_or(self.defaults.memory_bytes, |bytes| bytes as usize),
            deadline_ms: stored.deadline_ms.unwrap_or(self.defaults.deadline_ms),
        }
    }

    /// Re-reads which versions are in force and swaps in new rules where anything changed.
    pub async fn refresh(&self) -> Result<(), EngineError> {
        let wanted = self.store.active_plugins().await?;
        let current = self.active.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let mut next = HashMap::with_capacity(wanted.len());
        for version in wanted {
            if let Some(existing) = current.get(&version.platform_id).filter(|active| active.built_from == version) {
                next.insert(version.platform_id, existing.clone());
                continue;
            }
            let rules: Arc<dyn Rules> = match self.compiled(&version.sha256).await {
                Ok(plugin) => {
                    let label = format!("platform {} plugin v{}", version.platform_id.0, version.version);
                    let limits = self.limits_of(&version.limits);
                    Arc::new(WasmRules::new(self.runtime.clone(), plugin, &version.config, limits, &label))
                }
                Err(err) => {
                    tracing::error!(platform = version.platform_id.0, version = version.version, %err, "plugin cannot be loaded");
                    Arc::new(Unloadable(format!("plugin version {} cannot be loaded: {err}", version.version)))
                }
            };
            tracing::info!(platform = version.platform_id.0, version = version.version, sha256 = %version.sha256, "plugin in force");
            next.insert(version.platform_id, Arc::new(Active { built_from: version, rules }));
        }
        *self.active.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// The compiled plugin `sha256`: from memory, else from its stored artifact, else compiled
    /// now (and the artifact stored for the next start).
    async fn compiled(&self, sha256: &str) -> Result<Arc<CompiledPlugin>, EngineError> {
        if let Some(plugin) = self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(sha256) {
            return Ok(plugin.clone());
        }
        let runtime = self.runtime.clone();
        let engine_hash = runtime.engine_hash().to_owned();
        let stored = self.store.plugin_artifact(sha256, &engine_hash).await?;
        let artifact = match stored {
            Some((artifact, artifact_sha256)) if sha256_hex(&artifact) == artifact_sha256 => artifact,
            _ => {
                let wasm = self
                    .store
                    .plugin_wasm(sha256)
                    .await?
                    .ok_or_else(|| EngineError::NotFound(format!("plugin {sha256}")))?;
                let compiling = runtime.clone();
                let artifact = tokio::task::spawn_blocking(move || compiling.compile(&wasm))
                    .await
                    .map_err(|err| EngineError::RulesFailed(err.to_string()))?
                    .map_err(|err| EngineError::RulesFailed(err.to_string()))?;
                self.compilations.fetch_add(1, Ordering::Relaxed);
                tracing::info!(sha256, bytes = artifact.len(), "plugin compiled");
                self.store
                    .put_plugin_artifact(sha256, &engine_hash, &artifact, &sha256_hex(&artifact), now_ms())
                    .await?;
                artifact
            }
        };
        let sha = sha256.to_owned();
        let plugin = tokio::task::spawn_blocking(move || runtime.load(&sha, &artifact))
            .await
            .map_err(|err| EngineError::RulesFailed(err.to_string()))?
            .map_err(|err| EngineError::RulesFailed(err.to_string()))?;
        let plugin = Arc::new(plugin);
        self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(sha256.to_owned(), plugin.clone());
        Ok(plugin)
    }

    /// Installs `wasm` as the platform's next version, after checking that it is a component
    /// implementing the plugin world; activates it when asked. Returns the version.
    pub async fn install(
        &self,
        platform: &Platform,
        wasm: Vec<u8>,
        config: &str,
        limits: StoredLimits,
        activate: bool,
    ) -> Result<i64, EngineError> {
        check_limits(&limits)?;
        let sha256 = sha256_hex(&wasm);
        let runtime = self.runtime.clone();
        let (wasm, artifact) = tokio::task::spawn_blocking(move || {
            let artifact = runtime.compile(&wasm);
            (wasm, artifact)
        })
        .await
        .map_err(|err| EngineError::RulesFailed(err.to_string()))?;
        let artifact = artifact.map_err(|err| field("wasm", err.to_string()))?;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let engine_hash = self.runtime.engine_hash().to_owned();
        self.store.put_plugin_artifact(&sha256, &engine_hash, &artifact, &sha256_hex(&artifact), now_ms()).await?;
        let upload = PluginUpload { platform_id: platform.id, sha256: &sha256, wasm: &wasm, config, limits };
        let version = self.store.insert_plugin_version(&upload, now_ms()).await?;
        if activate {
            self.store.activate_plugin(platform.id, Some(version), now_ms()).await?;
        }
        Ok(version)
    }

    /// Puts `version` (or `None`: the built-in rules) in force for the platform.
    pub async fn activate(&self, platform: &Platform, version: Option<i64>) -> Result<(), EngineError> {
        if let Some(version) = version {
            let versions = self.store.plugin_versions(platform.id).await?;
            if !versions.iter().any(|stored| stored.version == version) {
                return Err(EngineError::NotFound(format!("plugin version {version} of platform {}", platform.app_id)));
            }
        }
        Ok(self.store.activate_plugin(platform.id, version, now_ms()).await?)
    }

    /// Puts back the version in force before the current one; returns it.
    pub async fn rollback(&self, platform: &Platform) -> Result<Option<i64>, EngineError> {
        let history = self.store.plugin_activations(platform.id).await?;
        let Some(&previous) = history.get(1) else {
            return Err(EngineError::NotFound(format!(
                "an earlier activation of platform {} to roll back to",
                platform.app_id
            )));
        };
        self.store.activate_plugin(platform.id, previous, now_ms()).await?;
        Ok(previous)
    }

    /// Replaces the configuration text of one version.
    pub async fn configure(&self, platform: &Platform, version: i64, config: &str) -> Result<(), EngineError> {
        if !self.store.set_plugin_config(platform.id, version, config).await? {
            return Err(EngineError::NotFound(format!("plugin version {version} of platform {}", platform.app_id)));
        }
        Ok(())
    }

    /// The platform's versions, oldest first, and which one is in force.
    pub async fn list(&self, platform: &Platform) -> Result<Vec<ListedVersion>, EngineError> {
        let in_force = self.store.plugin_activations(platform.id).await?.first().copied().flatten();
        Ok(self
            .store
            .plugin_versions(platform.id)
            .await?
            .into_iter()
            .map(|version| ListedVersion { active: Some(version.version) == in_force, version })
            .collect())
    }
}

fn check_limits(limits: &StoredLimits) -> Result<(), EngineError> {
    if limits.fuel == Some(0) {
        return Err(field("fuel", "must be positive"));
    }
    if let Some(bytes) = limits.memory_bytes
        && !(1024 * 1024..=MAX_MEMORY_BYTES as u64).contains(&bytes)
    {
        return Err(field("memory", format!("must be 1 MiB to {} MiB", MAX_MEMORY_BYTES / 1024 / 1024)));
    }
    if let Some(ms) = limits.deadline_ms
        && !(1..=10_000).contains(&ms)
    {
        return Err(field("deadline", "must be 1 to 10000 ms"));
    }
    Ok(())
}

#[async_trait]
impl RulesSource for PluginRegistry {
    async fn rules_for(&self, platform: &Platform) -> Result<Arc<dyn Rules>, RulesError> {
        let active = self.active.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        Ok(match active.get(&platform.id) {
            Some(active) => active.rules.clone(),
            None => self.builtin.clone(),
        })
    }
}
