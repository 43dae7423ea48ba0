//! Builds the rules plugins (the separate `plugins/` workspace) for wasm32-wasip2, so the
//! tests always run against freshly compiled components; nothing prebuilt is committed.
//! The components' folder reaches the tests as `CARBON_PLUGIN_DIR`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let plugins = manifest_dir.join("../plugins");
    let wit = manifest_dir.join("../wit");
    // target/<profile>/build/<crate>/out → target/wasm-plugins (outside the plugins' sources,
    // and not the outer build's own folder, whose lock is held while this runs).
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let target_dir = out_dir.ancestors().nth(4).expect("OUT_DIR is inside the target folder").join("wasm-plugins");
    let template = manifest_dir.join("../examples/plugin-template");
    ensure_wasm_target();
    // The template is its own workspace: build it too, so the copy authors start from works.
    for manifest in [plugins.join("Cargo.toml"), template.join("Cargo.toml")] {
        build(&manifest, &target_dir);
    }
    println!("cargo:rustc-env=CARBON_PLUGIN_DIR={}", target_dir.join("wasm32-wasip2/release").display());
    for watched in ["sdk", "default", "mall", "transit", "hostile", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", plugins.join(watched).display());
    }
    for watched in ["src", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", template.join(watched).display());
    }
    println!("cargo:rerun-if-changed={}", wit.display());
}

fn build(manifest: &std::path::Path, target_dir: &std::path::Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .expect("run cargo to build the plugins");
    assert!(status.success(), "building the plugins of {} for wasm32-wasip2 failed", manifest.display());
}

/// rust-toolchain.toml names the wasm32-wasip2 target, but rustup installs it on first use only
/// when auto-install is on (`RUSTUP_AUTO_INSTALL=0` turns it off): add it if its standard
/// library is missing, so the README's test command works on a fresh machine either way.
fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if libdir.is_some_and(|dir| dir.is_dir()) {
        return;
    }
    let status = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    if !matches!(status, Ok(status) if status.success()) {
        println!(
            "cargo:warning=the wasm32-wasip2 target is missing and `rustup target add wasm32-wasip2` failed; \
             install it to build the plugins"
        );
    }
}
