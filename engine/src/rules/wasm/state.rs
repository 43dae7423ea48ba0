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
    pub(super) fn new(memory_bytes: usize, label: String) -> Self {
        PluginState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            memory: MemoryCap { max_bytes: memory_bytes, denied: false },
            logs: CallLog { label, kept: Vec::new(), dropped: 0 },
        }
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

/// The log messages of one call, bounded in number and size.
pub struct CallLog {
    label: String,
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
        let label = logs.label.as_str();
        let level = match level {
            Level::Debug => {
                tracing::debug!(plugin = label, "{message}");
                "debug"
            }
            Level::Info => {
                tracing::info!(plugin = label, "{message}");
                "info"
            }
            Level::Warn => {
                tracing::warn!(plugin = label, "{message}");
                "warn"
            }
            Level::Error => {
                tracing::error!(plugin = label, "{message}");
                "error"
            }
        };
        logs.kept.push((level, message));
    }
}

/// The `types` interface has no functions; its (empty) host side.
impl super::bindings::carbon::rules::types::Host for PluginState {}
