//! The operator CLI. Every subcommand works on the database directly, also while servers run.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use carbon_engine::amount::{Grams, Points};
use carbon_engine::credit::{Credit, CreditOutcome};
use carbon_engine::directory::{MappingOutcome, Platform};
use carbon_engine::ids::{AppId, EquityCid, MasterCid, SubCid};
use carbon_engine::ledger::Asset;
use carbon_engine::store::License;
use carbon_engine::{Engine, EngineError, store};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::keys;

const EXAMPLES: &str = "Examples:
  carbon-host serve
  carbon-host platform add --name \"Green Mall\"
  carbon-host provider add --equity-cid shop-1 --name \"Tea Shop\" --platform APPID
  carbon-host ca import mappings.csv
  carbon-host credit points --master-cid M1 --class a --amount 100 --external-id grant-1
  carbon-host credit reduction --master-cid M1 --kg 1.5 --scene 地铁 --methodology SHCER020200120241 --external-id trip-1
  carbon-host verify";

/// The carbon-inclusion master platform: API server and operator tools.
#[derive(Debug, Parser)]
#[command(name = "carbon-host", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Database URL: sqlite://FILE (default sqlite://carbon.db) or postgres://…
    #[arg(long, global = true, env = "CARBON_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Configuration file (default: ./carbon-host.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
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
    /// Check every ledger invariant; exits non-zero on any violation.
    Verify,
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
    let mut config = Config::load(cli.config.as_deref(), |name| std::env::var(name).ok())?;
    if let Some(url) = cli.database_url {
        config.database_url = url;
    }
    let store = store::open(&config.database_url)
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
            let state = crate::server::state(engine, config).await?;
            crate::server::serve(listener, state, crate::server::shutdown_signal()).await
        }
        Command::Keygen { bits } => {
            let key = keys::rotate(engine.store().as_ref(), bits).await?;
            print!("{}", key.public_key_pem);
            Ok(())
        }
        Command::Key {
            command: KeyCommand::Show,
        } => {
            print!(
                "{}",
                keys::current_or_create(engine.store().as_ref()).await?.public_key_pem
            );
            Ok(())
        }
        Command::Platform { command } => platform(&engine, command).await,
        Command::Provider {
            command:
                ProviderCommand::Add {
                    equity_cid,
                    name,
                    platforms,
                },
        } => {
            let equity_cid = EquityCid::new(equity_cid).context("--equity-cid")?;
            let platforms = platforms
                .into_iter()
                .map(|app_id| AppId::new(app_id).context("--platform"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            engine.add_provider(&equity_cid, &name, &platforms).await?;
            println!("provider {equity_cid} linked to {} platform(s)", platforms.len());
            Ok(())
        }
        Command::Ca {
            command: CaCommand::Import { file },
        } => import_mappings(&engine, &file).await,
        Command::Credit { command } => credit(&engine, command).await,
        Command::Authorization {
            command: AuthorizationCommand::Cancel { platform, cid },
        } => {
            let platform = engine.platform(&AppId::new(platform).context("--platform")?).await?;
            let cid = SubCid::new(cid).context("--cid")?;
            engine.cancel_authorization(&platform, &cid).await?;
            println!("authorization of {cid} for platform {} cancelled", platform.app_id);
            Ok(())
        }
        Command::License {
            command: LicenseCommand::Add { name, url },
        } => {
            anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
            anyhow::ensure!(
                url.starts_with("https://") || url.starts_with("http://"),
                "--url must be an http(s) URL"
            );
            engine
                .store()
                .upsert_license(
                    &License {
                        name,
                        download_url: url,
                    },
                    carbon_engine::now_ms(),
                )
                .await?;
            println!("license saved");
            Ok(())
        }
        Command::Verify => {
            let report = engine.verify().await?;
            print!("{report}");
            anyhow::ensure!(
                report.is_sound(),
                "{} ledger invariant violation(s)",
                report.violations.len()
            );
            Ok(())
        }
    }
}

async fn platform(engine: &Engine, command: PlatformCommand) -> anyhow::Result<()> {
    match command {
        PlatformCommand::Add { name, app_id } => {
            let app_id = app_id.map(AppId::new).transpose().context("--app-id")?;
            let platform = engine.add_platform(&name, app_id).await?;
            println!("{}", platform.app_id);
        }
        PlatformCommand::List => {
            for platform in engine.store().platforms().await? {
                println!("{}\t{}", platform.app_id, platform.name);
            }
        }
    }
    Ok(())
}

async fn credit(engine: &Engine, command: CreditCommand) -> anyhow::Result<()> {
    let credit = match command {
        CreditCommand::Points {
            master_cid,
            class,
            amount,
            external_id,
            scene,
        } => {
            let class = match class {
                PointClass::A => Asset::PointA,
                PointClass::B => Asset::PointB,
            };
            let amount = Points::parse("--amount", &amount)?;
            Credit::points(
                MasterCid::new(master_cid).context("--master-cid")?,
                class,
                amount,
                external_id,
                scene,
            )?
        }
        CreditCommand::Reduction {
            master_cid,
            kg,
            scene,
            methodology,
            external_id,
        } => Credit::reduction(
            MasterCid::new(master_cid).context("--master-cid")?,
            Grams::parse_kg("--kg", &kg)?,
            scene,
            methodology,
            external_id,
        )?,
    };
    match engine.credit(&credit).await? {
        CreditOutcome::Credited => println!("credited"),
        CreditOutcome::AlreadyCredited => println!("already credited (external id {})", credit.external_id),
    }
    Ok(())
}

/// Counts of a CSV import.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// New mappings stored.
    pub inserted: u64,
    /// Rows already present.
    pub unchanged: u64,
    /// Rows refused, with their line numbers.
    pub refused: Vec<(usize, String)>,
}

async fn import_mappings(engine: &Engine, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let summary = import_csv(engine, &text).await?;
    for (line, reason) in &summary.refused {
        eprintln!("line {line}: {reason}");
    }
    println!(
        "{} imported, {} already present, {} refused",
        summary.inserted,
        summary.unchanged,
        summary.refused.len()
    );
    Ok(())
}

/// Imports `app_id,cid,master_cid` rows; a bad row is reported and skipped.
pub async fn import_csv(engine: &Engine, text: &str) -> anyhow::Result<ImportSummary> {
    let mut lines = text.lines().enumerate();
    let header = lines
        .next()
        .map(|(_, line)| line.trim().trim_start_matches('\u{feff}'))
        .unwrap_or("");
    anyhow::ensure!(
        header.replace(' ', "") == "app_id,cid,master_cid",
        "the first line must be the header `app_id,cid,master_cid`, not `{header}`"
    );
    let total = text.lines().count().saturating_sub(1);
    let progress = std::io::stderr().is_terminal();
    let mut platforms: HashMap<String, Platform> = HashMap::new();
    let mut summary = ImportSummary::default();
    for (index, line) in lines {
        let line_number = index + 1;
        if progress && index % 1000 == 0 {
            let done = index * 40 / total.max(1);
            eprint!(
                "\r[{}{}] {index}/{total}",
                "#".repeat(done),
                " ".repeat(40 - done.min(40))
            );
        }
        if line.trim().is_empty() {
            continue;
        }
        match import_row(engine, &mut platforms, line).await {
            Ok(MappingOutcome::Inserted) => summary.inserted += 1,
            Ok(MappingOutcome::Unchanged) => summary.unchanged += 1,
            Err(reason) => summary.refused.push((line_number, reason)),
        }
    }
    if progress {
        eprintln!("\r[{}] {total}/{total}", "#".repeat(40));
    }
    Ok(summary)
}

async fn import_row(
    engine: &Engine,
    platforms: &mut HashMap<String, Platform>,
    line: &str,
) -> Result<MappingOutcome, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [app_id, cid, master_cid] = fields.as_slice() else {
        return Err(format!("expected 3 fields, found {}", fields.len()));
    };
    let platform = match platforms.get(*app_id) {
        Some(platform) => platform.clone(),
        None => {
            let id = AppId::new(*app_id).map_err(|err| format!("app_id: {err}"))?;
            let platform = engine.platform(&id).await.map_err(|err| err.to_string())?;
            platforms.insert(app_id.to_string(), platform.clone());
            platform
        }
    };
    let cid = SubCid::new(*cid).map_err(|err| format!("cid: {err}"))?;
    let master_cid = MasterCid::new(*master_cid).map_err(|err| format!("master_cid: {err}"))?;
    engine
        .map_cid(&platform, &cid, &master_cid)
        .await
        .map_err(|err| match err {
            EngineError::Store(err) => format!("database error: {err}"),
            other => other.to_string(),
        })
}
