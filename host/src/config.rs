//! Configuration: defaults, then `carbon-host.toml` (if present), then `CARBON_*` environment
//! variables, then command-line flags. Unknown keys and invalid values fail at start, naming
//! the key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use carbon_engine::store::GroupCommitConfig;
use serde::Deserialize;

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://carbon.db";

/// Everything `carbon-host serve` can be told.
#[derive(Clone)]
pub struct Config {
    /// Address the API listens on (`CARBON_LISTEN`, default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Database URL (`CARBON_DATABASE_URL`).
    pub database_url: String,
    /// Access token validity (`CARBON_TOKEN_TTL_SECS`, default 86400).
    pub token_ttl_secs: u64,
    /// Allowed distance of the `timestamp` header from server time
    /// (`CARBON_TIMESTAMP_WINDOW_SECS`, default 300).
    pub timestamp_window_secs: u64,
    /// Time zone of wire times `yyyy-MM-dd HH:mm:ss` (`CARBON_TIMEZONE`, default Asia/Shanghai).
    pub timezone: chrono_tz::Tz,
    /// Bearer token of the admin API (`CARBON_ADMIN_TOKEN`); the admin API is off when unset.
    pub admin_token: Option<String>,
    /// `getAccessToken` calls allowed per client address per minute (`CARBON_TOKEN_RATE_PER_MIN`).
    pub token_rate_per_min: u32,
    /// Base URL of an HTTP CA (`CARBON_CA_URL`); the local mapping table when unset.
    pub ca_url: Option<String>,
    /// Allow push URLs on private, loopback and link-local addresses (`CARBON_PUSH_ALLOW_PRIVATE`).
    pub push_allow_private: bool,
    /// Default per-call limits of rules plugins (`CARBON_PLUGIN_FUEL`,
    /// `CARBON_PLUGIN_MEMORY_MIB`, `CARBON_PLUGIN_DEADLINE_MS`); a plugin version may override.
    pub plugin_limits: carbon_engine::rules::wasm::PluginLimits,
    /// How often each instance re-reads which plugin versions are in force
    /// (`CARBON_PLUGIN_REFRESH_SECS`, default 2).
    pub plugin_refresh_secs: u64,
    /// How often each platform's new bills are sealed into pushes (`CARBON_PUSH_INTERVAL_SECS`,
    /// default 60).
    pub push_interval: Duration,
    /// How often the dispatcher looks for due work: authorization changes, retries, expired
    /// leases (`CARBON_PUSH_POLL_MS`, default 1000).
    pub push_poll: Duration,
    /// Deadline of one push request, connection to last byte (`CARBON_PUSH_TIMEOUT_SECS`,
    /// default 10). A stream's lease is three times this.
    pub push_timeout: Duration,
    /// Wait after a failed attempt; doubled after the second (`CARBON_PUSH_RETRY_SECS`, default 30).
    pub push_retry: Duration,
    /// Streams one instance pushes at once (`CARBON_PUSH_CONCURRENCY`, default 16).
    pub push_concurrency: u32,
    /// How `serve` groups settlements and request-id records into shared transactions
    /// (`CARBON_GROUP_COMMIT_MAX_BATCH`, default 256, 1 = every settlement alone;
    /// `CARBON_GROUP_COMMIT_WAIT_US`, default 0 = a batch is what queued during the last commit).
    pub group_commit: Option<GroupCommitConfig>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("timestamp_window_secs", &self.timestamp_window_secs)
            .field("timezone", &self.timezone)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<secret>"))
            .field("token_rate_per_min", &self.token_rate_per_min)
            .field("ca_url", &self.ca_url)
            .field("push_allow_private", &self.push_allow_private)
            .field("plugin_limits", &self.plugin_limits)
            .field("plugin_refresh_secs", &self.plugin_refresh_secs)
            .field("push_interval", &self.push_interval)
            .field("push_poll", &self.push_poll)
            .field("push_timeout", &self.push_timeout)
            .field("push_retry", &self.push_retry)
            .field("push_concurrency", &self.push_concurrency)
            .field("group_commit", &self.group_commit)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            token_ttl_secs: 86_400,
            timestamp_window_secs: 300,
            timezone: chrono_tz::Asia::Shanghai,
            admin_token: None,
            token_rate_per_min: 60,
            ca_url: None,
            push_allow_private: false,
            plugin_limits: carbon_engine::rules::wasm::PluginLimits::default(),
            plugin_refresh_secs: 2,
            push_interval: Duration::from_secs(60),
            push_poll: Duration::from_millis(1000),
            push_timeout: Duration::from_secs(10),
            push_retry: Duration::from_secs(30),
            push_concurrency: 16,
            group_commit: Some(GroupCommitConfig::default()),
        }
    }
}

/// The keys of `carbon-host.toml`; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    token_ttl_secs: Option<u64>,
    timestamp_window_secs: Option<u64>,
    timezone: Option<String>,
    admin_token: Option<String>,
    token_rate_per_min: Option<u32>,
    ca_url: Option<String>,
    push_allow_private: Option<bool>,
    plugin_fuel: Option<u64>,
    plugin_memory_mib: Option<u64>,
    plugin_deadline_ms: Option<u64>,
    plugin_refresh_secs: Option<u64>,
    push_interval_secs: Option<u64>,
    push_poll_ms: Option<u64>,
    push_timeout_secs: Option<u64>,
    push_retry_secs: Option<u64>,
    push_concurrency: Option<u32>,
    group_commit_max_batch: Option<usize>,
    group_commit_wait_us: Option<u64>,
}

impl Config {
    /// Loads the file (an explicit path must exist; `carbon-host.toml` in the working directory
    /// is read when present), then applies `env` (pairs of `CARBON_*` name and value).
    pub fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let mut config = Config::default();
        let default_path = Path::new("carbon-host.toml");
        let path = match file {
            Some(path) => Some(path),
            None if default_path.exists() => Some(default_path),
            None => None,
        };
        let mut file_config = FileConfig::default();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .map_err(|err| anyhow::anyhow!("cannot read configuration {}: {err}", path.display()))?;
            file_config = toml::from_str(&text)
                .map_err(|err| anyhow::anyhow!("invalid configuration {}: {err}", path.display()))?;
        }
        let pick = |name: &str, from_file: Option<String>| env(name).or(from_file);
        if let Some(listen) = pick("CARBON_LISTEN", file_config.listen) {
            config.listen = listen.parse().map_err(|_| {
                anyhow::anyhow!("listen / CARBON_LISTEN: `{listen}` is not an address like 127.0.0.1:8080")
            })?;
        }
        if let Some(url) = pick("CARBON_DATABASE_URL", file_config.database_url) {
            config.database_url = url;
        }
        if let Some(ttl) = number("token_ttl_secs", "CARBON_TOKEN_TTL_SECS", &env, file_config.token_ttl_secs)? {
            anyhow::ensure!(ttl > 0, "token_ttl_secs / CARBON_TOKEN_TTL_SECS must be positive");
            config.token_ttl_secs = ttl;
        }
        if let Some(window) =
            number("timestamp_window_secs", "CARBON_TIMESTAMP_WINDOW_SECS", &env, file_config.timestamp_window_secs)?
        {
            anyhow::ensure!(window > 0, "timestamp_window_secs / CARBON_TIMESTAMP_WINDOW_SECS must be positive");
            config.timestamp_window_secs = window;
        }
        if let Some(zone) = pick("CARBON_TIMEZONE", file_config.timezone) {
            config.timezone = zone.parse().map_err(|_| {
                anyhow::anyhow!("timezone / CARBON_TIMEZONE: `{zone}` is not an IANA zone like Asia/Shanghai")
            })?;
        }
        if let Some(token) = pick("CARBON_ADMIN_TOKEN", file_config.admin_token) {
            anyhow::ensure!(token.len() >= 16, "admin_token / CARBON_ADMIN_TOKEN must be at least 16 characters");
            config.admin_token = Some(token);
        }
        if let Some(rate) =
            number("token_rate_per_min", "CARBON_TOKEN_RATE_PER_MIN", &env, file_config.token_rate_per_min)?
        {
            anyhow::ensure!(rate > 0, "token_rate_per_min / CARBON_TOKEN_RATE_PER_MIN must be positive");
            config.token_rate_per_min = rate;
        }
        if let Some(url) = pick("CARBON_CA_URL", file_config.ca_url) {
            config.ca_url = Some(url).filter(|url| !url.is_empty());
        }
        match env("CARBON_PUSH_ALLOW_PRIVATE").as_deref() {
            Some("true" | "1") => config.push_allow_private = true,
            Some("false" | "0") => config.push_allow_private = false,
            Some(other) => {
                anyhow::bail!("push_allow_private / CARBON_PUSH_ALLOW_PRIVATE: `{other}` is not true or false")
            }
            None => config.push_allow_private = file_config.push_allow_private.unwrap_or(false),
        }
        if let Some(fuel) = number("plugin_fuel", "CARBON_PLUGIN_FUEL", &env, file_config.plugin_fuel)? {
            anyhow::ensure!(fuel > 0, "plugin_fuel / CARBON_PLUGIN_FUEL must be positive");
            config.plugin_limits.fuel = fuel;
        }
        if let Some(mib) = number("plugin_memory_mib", "CARBON_PLUGIN_MEMORY_MIB", &env, file_config.plugin_memory_mib)?
        {
            let max = carbon_engine::rules::wasm::MAX_MEMORY_BYTES as u64 / 1024 / 1024;
            anyhow::ensure!(
                (1..=max).contains(&mib),
                "plugin_memory_mib / CARBON_PLUGIN_MEMORY_MIB must be 1 to {max}"
            );
            config.plugin_limits.memory_bytes = (mib * 1024 * 1024) as usize;
        }
        if let Some(ms) =
            number("plugin_deadline_ms", "CARBON_PLUGIN_DEADLINE_MS", &env, file_config.plugin_deadline_ms)?
        {
            anyhow::ensure!(
                (1..=10_000).contains(&ms),
                "plugin_deadline_ms / CARBON_PLUGIN_DEADLINE_MS must be 1 to 10000"
            );
            config.plugin_limits.deadline_ms = ms;
        }
        if let Some(secs) =
            number("plugin_refresh_secs", "CARBON_PLUGIN_REFRESH_SECS", &env, file_config.plugin_refresh_secs)?
        {
            anyhow::ensure!(secs > 0, "plugin_refresh_secs / CARBON_PLUGIN_REFRESH_SECS must be positive");
            config.plugin_refresh_secs = secs;
        }
        let secs: fn(u64) -> Duration = Duration::from_secs;
        let millis: fn(u64) -> Duration = Duration::from_millis;
        let push_durations = [
            (
                "push_interval_secs",
                "CARBON_PUSH_INTERVAL_SECS",
                file_config.push_interval_secs,
                secs,
                &mut config.push_interval,
            ),
            ("push_poll_ms", "CARBON_PUSH_POLL_MS", file_config.push_poll_ms, millis, &mut config.push_poll),
            (
                "push_timeout_secs",
                "CARBON_PUSH_TIMEOUT_SECS",
                file_config.push_timeout_secs,
                secs,
                &mut config.push_timeout,
            ),
            ("push_retry_secs", "CARBON_PUSH_RETRY_SECS", file_config.push_retry_secs, secs, &mut config.push_retry),
        ];
        for (key, variable, from_file, unit, target) in push_durations {
            if let Some(value) = number(key, variable, &env, from_file)? {
                anyhow::ensure!((1..=86_400_000).contains(&value), "{key} / {variable} must be 1 to 86400000");
                *target = unit(value);
            }
        }
        if let Some(concurrency) =
            number("push_concurrency", "CARBON_PUSH_CONCURRENCY", &env, file_config.push_concurrency)?
        {
            anyhow::ensure!(
                (1..=1024).contains(&concurrency),
                "push_concurrency / CARBON_PUSH_CONCURRENCY must be 1 to 1024"
            );
            config.push_concurrency = concurrency;
        }
        let mut group = GroupCommitConfig::default();
        if let Some(max_batch) =
            number("group_commit_max_batch", "CARBON_GROUP_COMMIT_MAX_BATCH", &env, file_config.group_commit_max_batch)?
        {
            anyhow::ensure!(
                (1..=10_000).contains(&max_batch),
                "group_commit_max_batch / CARBON_GROUP_COMMIT_MAX_BATCH must be 1 to 10000"
            );
            group.max_batch = max_batch;
        }
        if let Some(wait_us) =
            number("group_commit_wait_us", "CARBON_GROUP_COMMIT_WAIT_US", &env, file_config.group_commit_wait_us)?
        {
            anyhow::ensure!(
                wait_us <= 100_000,
                "group_commit_wait_us / CARBON_GROUP_COMMIT_WAIT_US must be 0 to 100000"
            );
            group.max_wait = Duration::from_micros(wait_us);
        }
        config.group_commit = (group.max_batch > 1).then_some(group);
        Ok(config)
    }
}

fn number<T: std::str::FromStr>(
    key: &str,
    variable: &str,
    env: &impl Fn(&str) -> Option<String>,
    from_file: Option<T>,
) -> anyhow::Result<Option<T>> {
    match env(variable) {
        Some(text) => {
            text.parse().map(Some).map_err(|_| anyhow::anyhow!("{key} / {variable}: `{text}` is not a valid number"))
        }
        None => Ok(from_file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
    }

    #[test]
    fn environment_overrides_defaults() {
        let config =
            Config::load(None, env(&[("CARBON_LISTEN", "0.0.0.0:9000"), ("CARBON_TOKEN_TTL_SECS", "60")])).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.token_ttl_secs, 60);
        assert_eq!(config.timezone, chrono_tz::Asia::Shanghai);
    }

    #[test]
    fn invalid_values_name_their_key() {
        let err = Config::load(None, env(&[("CARBON_TOKEN_TTL_SECS", "soon")])).unwrap_err().to_string();
        assert!(err.contains("CARBON_TOKEN_TTL_SECS"), "{err}");
        let err = Config::load(None, env(&[("CARBON_TIMEZONE", "Mars/Olympus")])).unwrap_err().to_string();
        assert!(err.contains("CARBON_TIMEZONE"), "{err}");
    }

    #[test]
    fn push_settings_have_defaults_and_units() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!((config.push_interval, config.push_poll), (Duration::from_secs(60), Duration::from_secs(1)));
        assert_eq!((config.push_timeout, config.push_retry), (Duration::from_secs(10), Duration::from_secs(30)));
        let config = Config::load(
            None,
            env(&[
                ("CARBON_PUSH_INTERVAL_SECS", "5"),
                ("CARBON_PUSH_POLL_MS", "250"),
                ("CARBON_PUSH_TIMEOUT_SECS", "2"),
                ("CARBON_PUSH_RETRY_SECS", "7"),
                ("CARBON_PUSH_CONCURRENCY", "3"),
            ]),
        )
        .unwrap();
        assert_eq!((config.push_interval, config.push_poll), (Duration::from_secs(5), Duration::from_millis(250)));
        assert_eq!((config.push_timeout, config.push_retry), (Duration::from_secs(2), Duration::from_secs(7)));
        assert_eq!(config.push_concurrency, 3);
        let err = Config::load(None, env(&[("CARBON_PUSH_INTERVAL_SECS", "0")])).unwrap_err().to_string();
        assert!(err.contains("CARBON_PUSH_INTERVAL_SECS"), "{err}");
        let err = Config::load(None, env(&[("CARBON_PUSH_CONCURRENCY", "0")])).unwrap_err().to_string();
        assert!(err.contains("CARBON_PUSH_CONCURRENCY"), "{err}");
    }

    #[test]
    fn group_commit_is_on_by_default_and_can_be_turned_off() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.group_commit, Some(GroupCommitConfig::default()));
        let config =
            Config::load(None, env(&[("CARBON_GROUP_COMMIT_MAX_BATCH", "32"), ("CARBON_GROUP_COMMIT_WAIT_US", "500")]))
                .unwrap();
        assert_eq!(
            config.group_commit,
            Some(GroupCommitConfig { max_batch: 32, max_wait: Duration::from_micros(500) })
        );
        let config = Config::load(None, env(&[("CARBON_GROUP_COMMIT_MAX_BATCH", "1")])).unwrap();
        assert_eq!(config.group_commit, None);
        let err = Config::load(None, env(&[("CARBON_GROUP_COMMIT_MAX_BATCH", "0")])).unwrap_err().to_string();
        assert!(err.contains("CARBON_GROUP_COMMIT_MAX_BATCH"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carbon-host.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nlisten_port = 5\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("listen_port"), "{err}");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(Config::load(Some(&path), env(&[])).unwrap().listen.port(), 1);
    }
}
