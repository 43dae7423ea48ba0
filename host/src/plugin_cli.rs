//! `carbon-host plugin …`: the plugin lifecycle for operators, and local runs for authors.

use std::path::Path;

use anyhow::Context;
use carbon_engine::Engine;
use carbon_engine::amount::{Grams, Points};
use carbon_engine::rules::Balances;
use carbon_engine::rules::registry::PluginRegistry;
use carbon_engine::rules::wasm::{MAX_PLUGIN_BYTES, WasmRules, sha256_hex};
use carbon_engine::store::StoredLimits;

use crate::cli::PluginCommand;
use crate::config::Config;
use crate::ops;

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_text(path: Option<&Path>) -> anyhow::Result<String> {
    match path {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display())),
        None => Ok(String::new()),
    }
}

/// Runs one `plugin` subcommand.
pub async fn run(engine: &Engine, config: &Config, command: PluginCommand) -> anyhow::Result<()> {
    let registry = PluginRegistry::new(engine.store().clone(), config.plugin_limits)?;
    match command {
        PluginCommand::Install { platform, file, config_file, activate, fuel, memory_mib, deadline_ms } => {
            let limits = StoredLimits { fuel, memory_bytes: memory_mib.map(|mib| mib * 1024 * 1024), deadline_ms };
            let wasm = read(&file)?;
            let config_text = read_text(config_file.as_deref())?;
            let version =
                ops::plugin_install(engine, &registry, platform, wasm, &config_text, limits, activate).await?;
            println!("installed version {version}{}", if activate { " and put it in force" } else { "" });
        }
        PluginCommand::List { platform } => {
            println!("  version  sha256                                                            bytes  config");
            for listed in ops::plugin_list(engine, &registry, platform).await? {
                let version = listed.version;
                println!(
                    "{} {:>7}  {}  {:>7}  {} bytes",
                    if listed.active { "*" } else { " " },
                    version.version,
                    version.sha256,
                    version.size_bytes,
                    version.config.len()
                );
            }
        }
        PluginCommand::Activate { platform, version, builtin } => {
            let version = if builtin { None } else { version };
            ops::plugin_activate(engine, &registry, platform, version).await?;
            match version {
                Some(version) => println!("version {version} in force"),
                None => println!("built-in rules in force"),
            }
        }
        PluginCommand::Rollback { platform } => match ops::plugin_rollback(engine, &registry, platform).await? {
            Some(version) => println!("rolled back: version {version} in force"),
            None => println!("rolled back: built-in rules in force"),
        },
        PluginCommand::Config { platform, version, file } => {
            let text = read_text(Some(&file))?;
            ops::plugin_configure(engine, &registry, platform, version, &text).await?;
            println!("configuration of version {version} replaced");
        }
        PluginCommand::Check { file } => check(&registry, &read(&file)?)?,
        PluginCommand::Run { file, order, balances, config: config_file } => {
            let wasm = read(&file)?;
            let order = crate::api::order_from_json(&read(&order)?, config.timezone)
                .map_err(|err| anyhow::anyhow!("{}: {}", order.display(), err.msg))?;
            let balances = balances_from_json(&read(&balances)?)?;
            let config_text = read_text(config_file.as_deref())?;
            let runtime = registry.runtime().clone();
            let plugin = std::sync::Arc::new(runtime.compile_and_load(&wasm)?);
            let rules = WasmRules::new(runtime, plugin, &config_text, config.plugin_limits, "plugin run");
            println!(
                "limits: fuel {}, memory {} MiB, deadline {} ms",
                config.plugin_limits.fuel,
                config.plugin_limits.memory_bytes / 1024 / 1024,
                config.plugin_limits.deadline_ms
            );
            for (export, outcome, stats) in rules.trial(&order, &balances).await {
                println!("{export}:");
                match outcome {
                    Ok(answer) => println!("  answer  {answer}"),
                    Err(err) => println!("  FAILED  {err}"),
                }
                println!("  fuel    {}\n  time    {:?}", stats.fuel_used, stats.elapsed);
                for (level, message) in &stats.logs {
                    println!("  log     [{level}] {message}");
                }
                if stats.logs_dropped > 0 {
                    println!("  log     … {} more messages dropped", stats.logs_dropped);
                }
            }
        }
    }
    Ok(())
}

fn check(registry: &PluginRegistry, wasm: &[u8]) -> anyhow::Result<()> {
    println!("size     {} bytes (limit {MAX_PLUGIN_BYTES})", wasm.len());
    println!("sha256   {}", sha256_hex(wasm));
    let runtime = registry.runtime();
    let (imports, exports) = runtime.describe(wasm)?;
    for import in imports {
        println!("import   {import}");
    }
    for export in exports {
        println!("export   {export}");
    }
    runtime.compile(wasm)?;
    println!("ok: implements carbon:rules/plugin@0.1.0");
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BalancesFile {
    point_a: Option<String>,
    point_b: Option<String>,
    reduction_kg: Option<String>,
}

fn balances_from_json(bytes: &[u8]) -> anyhow::Result<Balances> {
    let file: BalancesFile = serde_json::from_slice(bytes).context("balances file")?;
    Ok(Balances {
        point_a: Points::parse("pointA", file.point_a.as_deref().unwrap_or("0"))?,
        point_b: Points::parse("pointB", file.point_b.as_deref().unwrap_or("0"))?,
        reduction: Grams::parse_kg("reductionKg", file.reduction_kg.as_deref().unwrap_or("0"))?,
    })
}
