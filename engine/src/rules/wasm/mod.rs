//! Rules as WebAssembly components (SPEC §6), on wasmtime's component model.
//!
//! **Invariants:** a plugin is compiled once per version and engine build (the artifact is
//! kept in the database); every call runs in a fresh instance (`InstancePre` per version,
//! pooling allocator) with a memory cap, a fuel budget and an epoch deadline; WASI grants
//! nothing; every failure becomes a [`RulesError`] for that one order; at most
//! `CONCURRENT_CALLS` calls at once; a call holds an async worker for at most
//! `INLINE_DEADLINE_MS` before it is moved to the blocking pool (`WasmRules::run`), so a slow
//! plugin never stalls the async runtime.

mod bindings;
mod inline;
mod state;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use self::bindings::carbon::rules::types as wit;
use self::bindings::{Plugin, PluginPre};
use self::state::PluginState;
use super::{Balances, Conversion, Rejection, Rules, RulesError};
use crate::ledger::Asset;
use crate::order::Order;

pub use state::{MAX_LOG_BYTES, MAX_LOG_MESSAGES};

/// Largest component accepted at install.
pub const MAX_PLUGIN_BYTES: usize = 8 * 1024 * 1024;
/// Largest memory cap a platform may be given.
pub const MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// Longest text (rejection reason) accepted from a plugin.
pub const MAX_REASON_BYTES: usize = 1024;
/// Plugin instances alive at once, process-wide.
const CONCURRENT_CALLS: usize = 64;
/// How long a call runs on the async worker that made it before it is abandoned and run
/// again on the blocking pool (epoch ticks are 1 ms, so between 1 and 2 ms).
const INLINE_DEADLINE_MS: u64 = 2;
/// Bytes of each instance's linear memory kept resident between calls where the kernel has
/// PAGEMAP_SCAN: a plugin's stack and the heap it touches, so most calls fault in no page.
/// Costs at most the pages calls dirtied, per pooled memory slot in use (slots are reused, so
/// about the peak number of concurrent calls). Measured: three calls of the default plugin
/// 28 µs with it, 94 µs without (`rules-bench`, docs/BENCHMARKS.md).
const KEEP_RESIDENT_BYTES: usize = 1024 * 1024;

/// [`KEEP_RESIDENT_BYTES`] on Linux 6.7 or later; elsewhere 0 (Wasmtime's default): without
/// PAGEMAP_SCAN, keeping memory resident means a `memset` of all of it after every call,
/// which costs more than the page faults it saves.
fn keep_resident_bytes() -> usize {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit()).map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if (major, minor) >= (6, 7) { KEEP_RESIDENT_BYTES } else { 0 }
}

/// Per-call limits of a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PluginLimits {
    /// Fuel (about one unit per instruction, and per byte of bulk memory operations).
    pub fuel: u64,
    /// Linear memory cap, bytes.
    pub memory_bytes: usize,
    /// Wall-clock deadline, ms.
    pub deadline_ms: u64,
}

impl Default for PluginLimits {
    /// 50 M fuel, 16 MiB of memory, 100 ms: generous for real rules (see docs/PLUGINS.md for
    /// measured figures), tight enough that a hostile plugin costs one order a few ms.
    fn default() -> Self {
        PluginLimits { fuel: 50_000_000, memory_bytes: 16 * 1024 * 1024, deadline_ms: 100 }
    }
}

/// Why a component cannot be used as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Not a component implementing `carbon:rules/plugin`.
    #[error("not a rules plugin: {0}")]
    Invalid(String),
    /// Larger than [`MAX_PLUGIN_BYTES`].
    #[error("plugin is {0} bytes, more than the {MAX_PLUGIN_BYTES} allowed")]
    TooLarge(usize),
    /// The runtime failed.
    #[error("plugin runtime: {0}")]
    Runtime(String),
}

/// The process's plugin runtime: one wasmtime engine, linker and epoch ticker.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<PluginState>,
    /// The linker of a call's first attempt on the async worker; `None` if it could not be
    /// built (then every call runs on the blocking pool).
    inline_linker: Option<Linker<PluginState>>,
    /// Calls answered by their first attempt on the async worker.
    answered_inline: AtomicU64,
    /// Calls run on the blocking pool (all calls without the inline linker).
    ran_on_pool: AtomicU64,
    engine_hash: String,
    slots: Arc<Semaphore>,
}

/// A compiled plugin version, ready to instantiate.
pub struct CompiledPlugin {
    sha256: String,
    pre: PluginPre<PluginState>,
    /// Prepared with the inline linker, for a call's first attempt.
    inline: Option<PluginPre<PluginState>>,
}

impl CompiledPlugin {
    /// sha256 (hex) of the component.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// The sha256 (hex) of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn runtime_error(err: impl std::fmt::Display) -> PluginError {
    PluginError::Runtime(err.to_string())
}

impl PluginRuntime {
    /// A runtime with fuel, epoch interruption and a pooling allocator.
    pub fn new() -> Result<Arc<Self>, PluginError> {
        let keep_resident = keep_resident_bytes();
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(CONCURRENT_CALLS as u32 * 2)
            .total_core_instances(CONCURRENT_CALLS as u32 * 16)
            .total_memories(CONCURRENT_CALLS as u32 * 4)
            .total_tables(CONCURRENT_CALLS as u32 * 8)
            .max_memory_size(MAX_MEMORY_BYTES)
            // Reset the pages a call dirtied with `memset` instead of `madvise`, so the next
            // call reuses them without page faults; PAGEMAP_SCAN (Linux 6.7+) finds those
            // pages, so an untouched region costs no `memset` (see `KEEP_RESIDENT_BYTES`).
            .linear_memory_keep_resident(keep_resident)
            .table_keep_resident(keep_resident / 16)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(runtime_error)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(runtime_error)?;
        Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).map_err(runtime_error)?;
        let inline_linker = match inline::inline_linker(&linker) {
            Ok(inline) => Some(inline),
            Err(err) => {
                tracing::warn!(%err, "plugin calls will all run on the blocking pool");
                None
            }
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = format!("{:016x}", hasher.finish());
        // One tick per millisecond; the thread ends when the engine is dropped.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .map_err(runtime_error)?;
        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            inline_linker,
            answered_inline: AtomicU64::new(0),
            ran_on_pool: AtomicU64::new(0),
            engine_hash,
            slots: Arc::new(Semaphore::new(CONCURRENT_CALLS)),
        }))
    }

    /// How many calls so far were answered on the async worker, and how many ran on the
    /// blocking pool (after an abandoned first attempt, or without one).
    pub fn call_counts(&self) -> (u64, u64) {
        (self.answered_inline.load(Ordering::Relaxed), self.ran_on_pool.load(Ordering::Relaxed))
    }

    /// Identifies this engine build's artifacts; an artifact of another build is recompiled.
    pub fn engine_hash(&self) -> &str {
        &self.engine_hash
    }

    /// Compiles a component to an artifact this engine can load, checking that it implements
    /// the plugin world first.
    pub fn compile(&self, wasm: &[u8]) -> Result<Vec<u8>, PluginError> {
        if wasm.len() > MAX_PLUGIN_BYTES {
            return Err(PluginError::TooLarge(wasm.len()));
        }
        let component = Component::new(&self.engine, wasm).map_err(|err| PluginError::Invalid(format!("{err:#}")))?;
        self.prepare(component, sha256_hex(wasm))?;
        self.engine.precompile_component(wasm).map_err(runtime_error)
    }

    /// Loads an artifact made by [`PluginRuntime::compile`] of the component `sha256`.
    pub fn load(&self, sha256: &str, artifact: &[u8]) -> Result<CompiledPlugin, PluginError> {
        // SAFETY: artifacts are only ever produced by `compile` of this engine build (their
        // key includes `engine_hash`) and stored with their sha256, which the caller checked.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, artifact) }.map_err(runtime_error)?;
        self.prepare(component, sha256.to_owned())
    }

    /// Compiles and prepares a component in one step (tools, tests).
    pub fn compile_and_load(&self, wasm: &[u8]) -> Result<CompiledPlugin, PluginError> {
        let artifact = self.compile(wasm)?;
        self.load(&sha256_hex(wasm), &artifact)
    }

    fn prepare(&self, component: Component, sha256: String) -> Result<CompiledPlugin, PluginError> {
        let pre = self.linker.instantiate_pre(&component).map_err(|err| PluginError::Invalid(format!("{err:#}")))?;
        let pre = PluginPre::new(pre).map_err(|err| PluginError::Invalid(format!("{err:#}")))?;
        let inline = self.inline_linker.as_ref().and_then(|linker| {
            let pre = linker.instantiate_pre(&component).ok()?;
            PluginPre::new(pre).ok()
        });
        Ok(CompiledPlugin { sha256, pre, inline })
    }

    /// What the component imports and exports, for `carbon-host plugin check`.
    pub fn describe(&self, wasm: &[u8]) -> Result<(Vec<String>, Vec<String>), PluginError> {
        let component = Component::new(&self.engine, wasm).map_err(|err| PluginError::Invalid(format!("{err:#}")))?;
        let ty = component.component_type();
        let imports = ty.imports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        let exports = ty.exports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        Ok((imports, exports))
    }
}

/// What one call cost, and what it logged.
#[derive(Clone, Debug, Default)]
pub struct CallStats {
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Wall time, instantiation included.
    pub elapsed: Duration,
    /// Log messages kept (level, text).
    pub logs: Vec<(&'static str, String)>,
    /// Log messages dropped beyond the bound.
    pub logs_dropped: u32,
}

/// One platform's plugin: a compiled version, its configuration and limits.
pub struct WasmRules {
    runtime: Arc<PluginRuntime>,
    plugin: Arc<CompiledPlugin>,
    config: Arc<str>,
    limits: PluginLimits,
    label: Arc<str>,
}

impl WasmRules {
    /// Rules of `plugin` under `config`, with `limits`; `label` tags its log lines.
    pub fn new(
        runtime: Arc<PluginRuntime>,
        plugin: Arc<CompiledPlugin>,
        config: &str,
        limits: PluginLimits,
        label: &str,
    ) -> Self {
        WasmRules { runtime, plugin, config: config.into(), limits, label: label.into() }
    }

    /// Runs `job` in a fresh instance within the limits: first right here, on the async worker
    /// that asked, with a deadline of [`INLINE_DEADLINE_MS`] — real rules answer in
    /// microseconds, and a hop to the blocking pool and back would cost more than the call;
    /// a call still running then is abandoned and run again from the start on the blocking
    /// pool, with the full deadline, so a slow or hostile plugin holds a worker for at most
    /// that long. Running twice is sound: a call is a pure function of its arguments (a fresh
    /// instance, nothing granted; the abandoned attempt's logs are dropped).
    async fn run<R: Send + 'static>(
        &self,
        job: impl Fn(&Plugin, &mut Store<PluginState>, &str) -> wasmtime::Result<R> + Send + 'static,
    ) -> Result<(R, CallStats), RulesError> {
        let permit =
            self.runtime.slots.clone().acquire_owned().await.map_err(|err| RulesError::Failed(err.to_string()))?;
        if let (Some(pre), true) = (&self.plugin.inline, self.limits.deadline_ms > INLINE_DEADLINE_MS) {
            let inline = PluginLimits { deadline_ms: INLINE_DEADLINE_MS, ..self.limits };
            match call(&self.runtime, pre, &self.config, inline, &job) {
                (Err(CallFailure::Interrupted | CallFailure::NeedsBlockingPool), _abandoned) => {}
                (outcome, stats) => {
                    self.runtime.answered_inline.fetch_add(1, Ordering::Relaxed);
                    return finish(outcome, stats, &self.plugin, self.limits, &self.label);
                }
            }
        }
        self.runtime.ran_on_pool.fetch_add(1, Ordering::Relaxed);
        let (runtime, plugin, config, limits, label) =
            (self.runtime.clone(), self.plugin.clone(), self.config.clone(), self.limits, self.label.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (outcome, stats) = call(&runtime, &plugin.pre, &config, limits, &job);
            finish(outcome, stats, &plugin, limits, &label)
        })
        .await
        .map_err(|err| RulesError::Failed(format!("plugin call aborted: {err}")))?
    }

    /// Runs the three exports as a settlement would, for `carbon-host plugin run`: the
    /// validation, then each conversion export, with their answers and costs.
    pub async fn trial(
        &self,
        order: &Order,
        balances: &Balances,
    ) -> Vec<(String, Result<String, RulesError>, CallStats)> {
        let mut report = Vec::new();
        let transaction_type = order.transaction_type.clone();
        let outcome = self
            .run(move |plugin, store, config| {
                plugin.carbon_rules_rules().call_validate_transaction_type(store, config, &transaction_type)
            })
            .await;
        report.push(trial_line(
            "validate-transaction-type",
            outcome.map(|(answer, stats)| (format!("{answer:?}"), stats)),
        ));
        for export in ["convert-points", "convert-reduction"] {
            let (order, balances) = (to_wit_order(order), to_wit_balances(balances));
            let outcome = self
                .run(move |plugin, store, config| {
                    let rules = plugin.carbon_rules_rules();
                    if export == "convert-points" {
                        rules.call_convert_points(store, config, &order, balances)
                    } else {
                        rules.call_convert_reduction(store, config, &order, balances)
                    }
                })
                .await;
            report.push(trial_line(export, outcome.map(|(answer, stats)| (format!("{answer:?}"), stats))));
        }
        report
    }

    async fn conversions(
        &self,
        reduction: bool,
        order: &Order,
        balances: &Balances,
    ) -> Result<Vec<Conversion>, RulesError> {
        let (order, balances) = (to_wit_order(order), to_wit_balances(balances));
        let (answer, _stats) = self
            .run(move |plugin, store, config| {
                let rules = plugin.carbon_rules_rules();
                if reduction {
                    rules.call_convert_reduction(store, config, &order, balances)
                } else {
                    rules.call_convert_points(store, config, &order, balances)
                }
            })
            .await?;
        match answer {
            Ok(conversions) => Ok(conversions.into_iter().map(from_wit_conversion).collect()),
            Err(wit::Rejection::InvalidTransactionType(reason)) => {
                Err(Rejection::InvalidTransactionType(bounded(reason)?).into())
            }
            Err(wit::Rejection::Insufficient(reason)) => Err(Rejection::Insufficient(bounded(reason)?).into()),
            Err(wit::Rejection::Other(reason)) => Err(Rejection::Other(bounded(reason)?).into()),
        }
    }
}

fn trial_line(
    export: &str,
    outcome: Result<(String, CallStats), RulesError>,
) -> (String, Result<String, RulesError>, CallStats) {
    match outcome {
        Ok((answer, stats)) => (export.to_owned(), Ok(answer), stats),
        Err(err) => (export.to_owned(), Err(err), CallStats::default()),
    }
}

/// A reason from a plugin, refused when oversized (the plan is malformed: 42204).
fn bounded(reason: String) -> Result<String, RulesError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(Rejection::Other(format!(
            "the plugin answered with a {}-byte reason; at most {MAX_REASON_BYTES} are accepted",
            reason.len()
        ))
        .into());
    }
    Ok(reason)
}

/// Why a call did not answer.
enum CallFailure {
    /// The epoch deadline passed.
    Interrupted,
    /// The inline attempt reached a blocking WASI function.
    NeedsBlockingPool,
    /// Anything else, with the reason for the operator.
    Failed(String),
}

/// One call in a fresh instance, within `limits`: its answer, and what it cost and logged.
fn call<R>(
    runtime: &PluginRuntime,
    pre: &PluginPre<PluginState>,
    config: &str,
    limits: PluginLimits,
    job: &impl Fn(&Plugin, &mut Store<PluginState>, &str) -> wasmtime::Result<R>,
) -> (Result<R, CallFailure>, CallStats) {
    let started = Instant::now();
    let mut store = Store::new(&runtime.engine, PluginState::new(limits.memory_bytes));
    store.limiter(|state| &mut state.memory);
    if let Err(err) = store.set_fuel(limits.fuel) {
        return (Err(CallFailure::Failed(err.to_string())), CallStats::default());
    }
    store.set_epoch_deadline(limits.deadline_ms.max(1));
    store.epoch_deadline_trap();
    let outcome = pre.instantiate(&mut store).and_then(|instance| job(&instance, &mut store, config));
    let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
    let state = store.into_data();
    let stats =
        CallStats { fuel_used, elapsed: started.elapsed(), logs: state.logs.kept, logs_dropped: state.logs.dropped };
    let outcome = outcome.map_err(|err| {
        if err.downcast_ref::<inline::NeedsBlockingPool>().is_some() {
            CallFailure::NeedsBlockingPool
        } else if state.memory.denied {
            CallFailure::Failed(format!(
                "out of memory: the plugin tried to grow past its cap of {} bytes",
                limits.memory_bytes
            ))
        } else {
            match err.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => {
                    CallFailure::Failed(format!("out of fuel: the budget of {} was used up", limits.fuel))
                }
                Some(Trap::Interrupt) => CallFailure::Interrupted,
                Some(trap) => CallFailure::Failed(format!("trapped: {trap}")),
                None => CallFailure::Failed(format!("failed: {err:#}")),
            }
        }
    });
    (outcome, stats)
}

/// A call's answer as the rules give it: its logs forwarded under `label`, a failure logged.
fn finish<R>(
    outcome: Result<R, CallFailure>,
    stats: CallStats,
    plugin: &CompiledPlugin,
    limits: PluginLimits,
    label: &str,
) -> Result<(R, CallStats), RulesError> {
    state::forward_logs(label, &stats.logs);
    match outcome {
        Ok(answer) => Ok((answer, stats)),
        Err(failure) => {
            let reason = match failure {
                CallFailure::Interrupted => format!("deadline of {} ms exceeded", limits.deadline_ms),
                CallFailure::NeedsBlockingPool => "a blocking WASI call outside the blocking pool".to_owned(),
                CallFailure::Failed(reason) => reason,
            };
            tracing::warn!(plugin = label, sha256 = %plugin.sha256, %reason, "plugin call failed");
            Err(RulesError::Failed(reason))
        }
    }
}

fn from_wit_asset(asset: wit::Asset) -> Asset {
    match asset {
        wit::Asset::PointA => Asset::PointA,
        wit::Asset::PointB => Asset::PointB,
        wit::Asset::Reduction => Asset::Reduction,
    }
}

fn from_wit_conversion(conversion: wit::Conversion) -> Conversion {
    Conversion {
        from: from_wit_asset(conversion.from),
        to: from_wit_asset(conversion.to),
        spend: conversion.spend,
        receive: conversion.receive,
    }
}

fn to_wit_order(order: &Order) -> wit::Order {
    wit::Order {
        cid: order.cid.to_string(),
        equity_cid: order.equity_cid.to_string(),
        transaction_id: order.transaction_id.to_string(),
        parent_transaction_id: order.parent_transaction_id.as_ref().map(ToString::to_string),
        point_a: order.point_a.0,
        point_b: order.point_b.0,
        transaction_time_ms: order.transaction_time_ms,
        transaction_type: order.transaction_type.clone(),
        auto_convert: order.auto_convert,
        items: order.items.clone(),
    }
}

fn to_wit_balances(balances: &Balances) -> wit::Balances {
    wit::Balances { point_a: balances.point_a.0, point_b: balances.point_b.0, reduction: balances.reduction.0 }
}

#[async_trait]
impl Rules for WasmRules {
    fn version(&self) -> Option<String> {
        Some(self.plugin.sha256.clone())
    }

    async fn validate_transaction_type(&self, transaction_type: &str) -> Result<(), RulesError> {
        let transaction_type = transaction_type.to_owned();
        let (answer, _stats) = self
            .run(move |plugin, store, config| {
                plugin.carbon_rules_rules().call_validate_transaction_type(store, config, &transaction_type)
            })
            .await?;
        answer.map_err(|reason| match bounded(reason) {
            Ok(reason) => Rejection::InvalidTransactionType(reason).into(),
            Err(err) => err,
        })
    }

    async fn convert_points(&self, order: &Order, balances: &Balances) -> Result<Vec<Conversion>, RulesError> {
        self.conversions(false, order, balances).await
    }

    async fn convert_reduction(&self, order: &Order, balances: &Balances) -> Result<Vec<Conversion>, RulesError> {
        self.conversions(true, order, balances).await
    }
}
