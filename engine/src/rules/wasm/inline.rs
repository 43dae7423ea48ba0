//! The linker of a plugin call's first attempt, which runs on the async worker that made the
//! call (see `WasmRules::run`).
//!
//! Wasmtime's synchronous WASI answers the blocking stream and poll functions by blocking on
//! the ambient tokio runtime, which must not happen on one of its workers (tokio panics). This
//! linker is the ordinary one with exactly those functions replaced by a trap,
//! [`NeedsBlockingPool`], so a plugin that writes to stdout or stderr, reads stdin or polls is
//! simply run again on the blocking pool, with the ordinary linker. Stream handles are dropped
//! without the runtime: the call's context grants no real stream, so nothing is left to flush.

use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use super::state::PluginState;

/// The version of `wasi:io` that wasmtime-wasi defines (imports of any 0.2.x resolve to it).
/// A wasmtime upgrade that changes it would leave the blocking functions unreplaced, and a
/// plugin that prints would panic the worker: `tests/plugins.rs`
/// (`calls_answer_inline_unless_they_block_or_run_long`) fails first.
const WASI_IO: &str = "0.2.12";

/// A call reached a WASI function that blocks: run it on the blocking pool instead.
#[derive(Debug)]
pub(super) struct NeedsBlockingPool;

impl std::fmt::Display for NeedsBlockingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the plugin called a blocking WASI function")
    }
}

impl std::error::Error for NeedsBlockingPool {}

/// `linker` with the blocking functions of `wasi:io/streams` and `wasi:io/poll` trapping.
pub(super) fn inline_linker(linker: &Linker<PluginState>) -> wasmtime::Result<Linker<PluginState>> {
    let mut inline = linker.clone();
    inline.allow_shadowing(true);
    {
        let mut streams = inline.instance(&format!("wasi:io/streams@{WASI_IO}"))?;
        streams.resource("output-stream", ResourceType::host::<DynOutputStream>(), |mut store, rep| {
            store.data_mut().table().delete(Resource::<DynOutputStream>::new_own(rep))?;
            Ok(())
        })?;
        streams.resource("input-stream", ResourceType::host::<DynInputStream>(), |mut store, rep| {
            store.data_mut().table().delete(Resource::<DynInputStream>::new_own(rep))?;
            Ok(())
        })?;
        for name in [
            "[method]output-stream.blocking-write-and-flush",
            "[method]output-stream.blocking-write-zeroes-and-flush",
            "[method]output-stream.blocking-flush",
            "[method]output-stream.blocking-splice",
            "[method]input-stream.blocking-read",
            "[method]input-stream.blocking-skip",
        ] {
            streams.func_new(name, |_, _, _, _| Err(NeedsBlockingPool.into()))?;
        }
    }
    let mut poll = inline.instance(&format!("wasi:io/poll@{WASI_IO}"))?;
    for name in ["poll", "[method]pollable.ready", "[method]pollable.block"] {
        poll.func_new(name, |_, _, _, _| Err(NeedsBlockingPool.into()))?;
    }
    Ok(inline)
}
