//! The one `bindgen!` of the plugin contract. **Invariant:** generated types never leave
//! `rules::wasm`; the rest of the engine sees only `rules::{Rules, Conversion, …}`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
});
