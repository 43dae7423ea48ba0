//! What each plugin call's `Store` holds: an empty WASI context (nothing granted), the memory
//! cap, and the bounded log of the call.

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::carbon::rules::log::{Host, Level};

/// Most log messages kept per call.
pub const MAX_LOG_MESSAGES: usize = 20;
/// Longest log message kept, bytes.
pub const MAX_LOG_BYTES: usize = 1024;

/// One call's state.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) memory: MemoryCap,
    pub(super) logs: CallLog,
}

impl PluginState {
    pub(super) fn new(memory_bytes: usize) -> Self {
        PluginState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            memory: MemoryCap { max_bytes: memory_bytes, denied: false },
            logs: CallLog { kept: Vec::new(), dropped: 0 },
        }
    }

    /// The call's resource table.
    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Refuses memory growth past the cap, and remembers that it did.
pub struct MemoryCap {
    pub(super) max_bytes: usize,
    pub(super) denied: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The log messages of one call, bounded in number and size. They reach the host's log
/// after the call ([`forward_logs`]), so an attempt that is abandoned and run again logs once.
pub struct CallLog {
    /// Messages kept, with their level as text.
    pub kept: Vec<(&'static str, String)>,
    /// Messages dropped beyond the bound.
    pub dropped: u32,
}

impl Host for PluginState {
    fn emit(&mut self, level: Level, message: String) {
        let logs = &mut self.logs;
        if logs.kept.len() >= MAX_LOG_MESSAGES {
            logs.dropped += 1;
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_BYTES {
            let mut end = MAX_LOG_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        logs.kept.push((level, message));
    }
}

/// Writes a call's kept log messages to the host's log, tagged with the plugin's `label`.
pub(super) fn forward_logs(label: &str, logs: &[(&'static str, String)]) {
    for (level, message) in logs {
        match *level {
            "debug" => tracing::debug!(plugin = label, "{message}"),
            "info" => tracing::info!(plugin = label, "{message}"),
            "warn" => tracing::warn!(plugin = label, "{message}"),
            _ => tracing::error!(plugin = label, "{message}"),
        }
    }
}

/// The `types` interface has no functions; its (empty) host side.
impl super::bindings::carbon::rules::types::Host for PluginState {}
