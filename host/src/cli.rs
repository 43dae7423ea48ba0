//! The operator CLI. Every subcommand works on the database directly, also while servers run.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use carbon_engine::credit::CreditOutcome;
use carbon_engine::{Engine, store};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::{keys, ops};

const EXAMPLES: &str = "Examples:
  carbon-host serve
  carbon-host platform add --name \"Green Mall\"
  carbon-host provider add --equity-cid shop-1 --name \"Tea Shop\" --platform APPID
  carbon-host ca import mappings.csv
  carbon-host credit points --master-cid M1 --class a --amount 100 --external-id grant-1
  carbon-host credit reduction --master-cid M1 --kg 1.5 --scene 地铁 --methodology SHCER020200120241 --external-id trip-1
  carbon-host push list --dead
  carbon-host push requeue 42
  carbon-host verify";

/// The carbon-inclusion master platform: API server and operator tools.
#[derive(Debug, Parser)]
#[command(name = "carbon-host", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Database URL: sqlite://FILE (default sqlite://carbon.db) or postgres://…
    #[arg(long, global = true, env = "CARBON_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The server's configuration file (default: ./carbon-host.toml when present).
    #[arg(long = "host-config", global = true, value_name = "FILE")]
    pub host_config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the API server.
    #[command(after_help = "Example:\n  CARBON_LISTEN=0.0.0.0:8080 carbon-host serve")]
    Serve {
        /// Address to listen on (overrides CARBON_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Create (or rotate) the server RSA key pair and print the public key PEM.
    #[command(after_help = "Example:\n  carbon-host keygen --bits 3072 > public.pem")]
    Keygen {
        /// Key size in bits.
        #[arg(long, default_value_t = keys::DEFAULT_KEY_BITS)]
        bits: usize,
    },
    /// The server key.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Equity platforms.
    Platform {
        #[command(subcommand)]
        command: PlatformCommand,
    },
    /// Equity providers.
    Provider {
        #[command(subcommand)]
        command: ProviderCommand,
    },
    /// The local CA table: sub-scene cid → master cid.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Credit points or reductions to a person.
    Credit {
        #[command(subcommand)]
        command: CreditCommand,
    },
    /// People's authorizations.
    Authorization {
        #[command(subcommand)]
        command: AuthorizationCommand,
    },
    /// License agreements shown by `licenseAgreement`.
    License {
        #[command(subcommand)]
        command: LicenseCommand,
    },
    /// Rules plugins (WebAssembly components) of platforms, and tools for plugin authors.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Pushes to platforms: list batches, re-queue dead-lettered ones.
    Push {
        #[command(subcommand)]
        command: PushCommand,
    },
    /// Check every ledger invariant; exits non-zero on any violation.
    Verify,
}

/// `carbon-host plugin …`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Install a component as the platform's next plugin version (checked first).
    #[command(
        after_help = "Example:\n  carbon-host plugin install --platform APPID mall_rules.wasm --config-file mall.toml --activate"
    )]
    Install {
        /// The platform's appId.
        #[arg(long)]
        platform: String,
        /// The component (wasm32-wasip2).
        file: PathBuf,
        /// The platform's configuration text for the plugin (TOML, usually).
        #[arg(long)]
        config_file: Option<PathBuf>,
        /// Put it in force at once.
        #[arg(long)]
        activate: bool,
        /// Fuel per call (default: the server's CARBON_PLUGIN_FUEL).
        #[arg(long)]
        fuel: Option<u64>,
        /// Memory cap per call, MiB (default: CARBON_PLUGIN_MEMORY_MIB).
        #[arg(long)]
        memory_mib: Option<u64>,
        /// Deadline per call, ms (default: CARBON_PLUGIN_DEADLINE_MS).
        #[arg(long)]
        deadline_ms: Option<u64>,
    },
    /// List the platform's plugin versions; `*` marks the one in force.
    List {
        /// The platform's appId.
        #[arg(long)]
        platform: String,
    },
    /// Put a version in force (or the built-in rules with --builtin); running servers follow.
    Activate {
        /// The platform's appId.
        #[arg(long)]
        platform: String,
        /// The version to put in force.
        #[arg(long, required_unless_present = "builtin")]
        version: Option<i64>,
        /// Go back to the built-in rules.
        #[arg(long, conflicts_with = "version")]
        builtin: bool,
    },
    /// Put back the version in force before the current one.
    Rollback {
        /// The platform's appId.
        #[arg(long)]
        platform: String,
    },
    /// Replace the configuration text of a version.
    Config {
        /// The platform's appId.
        #[arg(long)]
        platform: String,
        /// The version.
        #[arg(long)]
        version: i64,
        /// The new configuration text.
        #[arg(long)]
        file: PathBuf,
    },
    /// Check a component: does it implement the plugin world; its size and imports.
    Check {
        /// The component.
        file: PathBuf,
    },
    /// Run the three exports locally on an order and balances; print the answers, fuel and time.
    #[command(
        after_help = "Example:\n  carbon-host plugin run target/wasm32-wasip2/release/my_rules.wasm \\\n      --order order.json --balances balances.json --config my.toml\n\norder.json is an orderSettel body; balances.json is {\"pointA\": \"10\", \"pointB\": \"0\", \"reductionKg\": \"1.5\"}"
    )]
    Run {
        /// The component.
        file: PathBuf,
        /// An orderSettel body (JSON).
        #[arg(long)]
        order: PathBuf,
        /// The person's balances (JSON).
        #[arg(long)]
        balances: PathBuf,
        /// Configuration text for the plugin.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `carbon-host push …`
#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// List push batches, newest first, tab-separated: id, platform id, appId, type, status,
    /// rows, attempts, sealed at, last error.
    #[command(after_help = "Example:\n  carbon-host push list --dead")]
    List {
        /// Only dead-lettered batches (failed 3 times; they wait for `push requeue`).
        #[arg(long)]
        dead: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Re-queue a dead-lettered batch: it is sent next in its stream, with 3 fresh attempts.
    #[command(after_help = "Example:\n  carbon-host push requeue 42")]
    Requeue {
        /// The batch id (first column of `push list`).
        id: i64,
    },
}

/// `carbon-host key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the current public key PEM (creating a key pair if none exists).
    Show,
}

/// `carbon-host platform …`
#[derive(Debug, Subcommand)]
pub enum PlatformCommand {
    /// Add a platform; prints its appId alone on stdout.
    #[command(after_help = "Example:\n  APPID=$(carbon-host platform add --name \"Green Mall\")")]
    Add {
        /// Display name.
        #[arg(long)]
        name: String,
        /// The appId to use (default: a random one).
        #[arg(long)]
        app_id: Option<String>,
    },
    /// List platforms (appId and name).
    List,
}

/// `carbon-host provider …`
#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Add (or rename) a provider and link it to platforms.
    #[command(
        after_help = "Example:\n  carbon-host provider add --equity-cid shop-1 --name \"Tea Shop\" --platform APP1 --platform APP2"
    )]
    Add {
        /// The provider's carbon account.
        #[arg(long)]
        equity_cid: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// appId of a platform to link (repeatable).
        #[arg(long = "platform")]
        platforms: Vec<String>,
    },
}

/// `carbon-host ca …`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Import mappings from CSV with header `app_id,cid,master_cid`; bad rows are reported with
    /// their line numbers and skipped, good rows kept; importing again changes nothing.
    #[command(after_help = "Example:\n  carbon-host ca import mappings.csv")]
    Import {
        /// The CSV file.
        file: PathBuf,
    },
}

/// A point class on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PointClass {
    /// Class A (pointType 1).
    A,
    /// Class B (pointType 2).
    B,
}

/// `carbon-host credit …`
#[derive(Debug, Subcommand)]
pub enum CreditCommand {
    /// Credit class A or B points.
    Points {
        /// The person's master cid.
        #[arg(long)]
        master_cid: String,
        /// Point class.
        #[arg(long, value_enum)]
        class: PointClass,
        /// Points, a decimal with at most 2 fraction digits.
        #[arg(long)]
        amount: String,
        /// Your id for this credit; the same id never credits twice.
        #[arg(long)]
        external_id: String,
        /// The scene it was earned in.
        #[arg(long)]
        scene: Option<String>,
    },
    /// Credit emission reductions.
    Reduction {
        /// The person's master cid.
        #[arg(long)]
        master_cid: String,
        /// Kilograms CO2e, at most 3 fraction digits.
        #[arg(long)]
        kg: String,
        /// The scene (单车, 地铁 …).
        #[arg(long)]
        scene: String,
        /// The methodology code, e.g. SHCER020200120241.
        #[arg(long)]
        methodology: String,
        /// Your id for this credit; the same id never credits twice.
        #[arg(long)]
        external_id: String,
    },
}

/// `carbon-host authorization …`
#[derive(Debug, Subcommand)]
pub enum AuthorizationCommand {
    /// Cancel a person's authorization of a platform.
    Cancel {
        /// The platform's appId.
        #[arg(long)]
        platform: String,
        /// The person's cid under that platform.
        #[arg(long)]
        cid: String,
    },
}

/// `carbon-host license …`
#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Add a license agreement (or change the URL of one with this name).
    Add {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Where the PDF is downloaded.
        #[arg(long)]
        url: String,
    },
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.host_config.as_deref(), |name| std::env::var(name).ok())?;
    if let Some(url) = cli.database_url {
        config.database_url = url;
    }
    // Only the server groups settlements; a one-shot command writes alone.
    let options = match cli.command {
        Command::Serve { .. } => store::StoreOptions { group_commit: config.group_commit },
        _ => store::StoreOptions::default(),
    };
    let store = store::open_with(&config.database_url, options)
        .await
        .with_context(|| format!("cannot open database {}", config.database_url))?;
    let engine = Engine::with_default_rules(store);
    match cli.command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            tracing::info!(listen = %config.listen, database = %config.database_url, "carbon-host serving");
            let state = crate::server::state(engine.store().clone(), config).await?;
            crate::server::serve(listener, state, crate::server::shutdown_signal()).await
        }
        Command::Keygen { bits } => {
            print!("{}", keys::rotate(engine.store().as_ref(), bits).await?.public_key_pem);
            Ok(())
        }
        Command::Key { command: KeyCommand::Show } => {
            print!("{}", keys::current_or_create(engine.store().as_ref()).await?.public_key_pem);
            Ok(())
        }
        Command::Platform { command: PlatformCommand::Add { name, app_id } } => {
            println!("{}", ops::add_platform(&engine, &name, app_id).await?.app_id);
            Ok(())
        }
        Command::Platform { command: PlatformCommand::List } => {
            for platform in engine.store().platforms().await? {
                println!("{}\t{}", platform.app_id, platform.name);
            }
            Ok(())
        }
        Command::Provider { command: ProviderCommand::Add { equity_cid, name, platforms } } => {
            let count = platforms.len();
            ops::add_provider(&engine, equity_cid.clone(), &name, platforms).await?;
            println!("provider {equity_cid} linked to {count} platform(s)");
            Ok(())
        }
        Command::Ca { command: CaCommand::Import { file } } => import_mappings(&engine, &file).await,
        Command::Credit { command } => {
            let outcome = match command {
                CreditCommand::Points { master_cid, class, amount, external_id, scene } => {
                    let class = match class {
                        PointClass::A => "a",
                        PointClass::B => "b",
                    };
                    ops::credit_points(&engine, master_cid, class, &amount, external_id, scene).await?
                }
                CreditCommand::Reduction { master_cid, kg, scene, methodology, external_id } => {
                    ops::credit_reduction(&engine, master_cid, &kg, scene, methodology, external_id).await?
                }
            };
            println!(
                "{}",
                match outcome {
                    CreditOutcome::Credited => "credited",
                    CreditOutcome::AlreadyCredited => "already credited: nothing changed",
                }
            );
            Ok(())
        }
        Command::Authorization { command: AuthorizationCommand::Cancel { platform, cid } } => {
            ops::cancel_authorization(&engine, platform.clone(), cid.clone()).await?;
            println!("authorization of {cid} for platform {platform} cancelled");
            Ok(())
        }
        Command::License { command: LicenseCommand::Add { name, url } } => {
            ops::add_license(&engine, name, url).await?;
            println!("license saved");
            Ok(())
        }
        Command::Plugin { command } => crate::plugin_cli::run(&engine, &config, command).await,
        Command::Push { command: PushCommand::List { dead, limit } } => {
            let batches = ops::list_pushes(&engine, dead, limit).await?;
            println!("id\tplatform\tappId\ttype\tstatus\trows\tattempts\tsealed\tlast error");
            for batch in batches {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    batch.id,
                    batch.platform_id.0,
                    batch.app_id,
                    batch.kind,
                    batch.status,
                    batch.rows,
                    batch.attempts,
                    wall_time(batch.created_at_ms, config.timezone),
                    batch.last_error.as_deref().unwrap_or("-").replace(['\t', '\n'], " "),
                );
            }
            Ok(())
        }
        Command::Push { command: PushCommand::Requeue { id } } => {
            ops::requeue_push(&engine, id).await?;
            println!("push batch {id} re-queued");
            Ok(())
        }
        Command::Verify => {
            let report = ops::verify(&engine).await?;
            print!("{report}");
            anyhow::ensure!(report.is_sound(), "{} ledger invariant violation(s)", report.violations.len());
            Ok(())
        }
    }
}

/// `yyyy-MM-dd HH:mm:ss` in the configured zone.
fn wall_time(ms: i64, zone: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|time| time.with_timezone(&zone).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

async fn import_mappings(engine: &Engine, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let terminal = std::io::stderr().is_terminal();
    let summary = ops::import_csv(engine, &text, |done, total| {
        if terminal {
            let filled = (done * 40).checked_div(total).unwrap_or(40).min(40);
            eprint!("\r[{}{}] {done}/{total}", "#".repeat(filled), " ".repeat(40 - filled));
            if done == total {
                eprintln!();
            }
        }
    })
    .await?;
    for (line, reason) in &summary.refused {
        eprintln!("line {line}: {reason}");
    }
    println!("{} imported, {} already present, {} refused", summary.inserted, summary.unchanged, summary.refused.len());
    Ok(())
}
