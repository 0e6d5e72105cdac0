//! Typed configuration: a TOML file plus environment overrides, with defaults that make
//! `minqing up` work with no file at all.
//!
//! Environment variables named `MINQING_<KEY>` override the file; `__` separates nesting, so
//! `MINQING_INTAKE__LISTEN=0.0.0.0:7401` sets `[intake] listen`. Values are read as TOML
//! (numbers, booleans, arrays) and fall back to strings. The environment is passed in rather
//! than read here, so tests never touch the process environment.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, de::DeserializeOwned};

/// Why a configuration could not be used. The binary prints it and exits with code 64
/// (`EX_USAGE`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value has the wrong type, a key is unknown, or a value is out of range.
    #[error("invalid configuration{}: {message}", section.as_ref().map(|s| format!(" in [{s}]")).unwrap_or_default())]
    Invalid {
        /// The section, when the problem is in one.
        section: Option<String>,
        /// What is wrong.
        message: String,
    },
}

/// The exit code for a configuration the program cannot use (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Settings every service shares: where data lives, how to log, how servers behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommonConfig {
    /// Where the embedded store and generated files (the admin token) live.
    pub data_dir: PathBuf,
    /// Empty for the embedded SQLite store (one file per service under `data_dir`);
    /// `postgres://…` for PostgreSQL (one schema per service in that database).
    pub database_url: String,
    /// Logging.
    pub log: LogConfig,
    /// Connection pools and durability.
    pub storage: StorageConfig,
    /// gRPC server behaviour under load.
    pub server: ServerConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_listen: SocketAddr,
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./minqing-data"),
            database_url: String::new(),
            log: LogConfig::default(),
            storage: StorageConfig::default(),
            server: ServerConfig::default(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,minqing_intake=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Pretty,
    /// One JSON object a line.
    Json,
}

/// Connection pools and durability.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Largest pool per service on PostgreSQL (SQLite uses one writer and a few readers).
    pub max_connections: u32,
    /// How long a request waits for a connection before it is answered UNAVAILABLE.
    pub acquire_timeout_ms: u64,
    /// SQLite durability: `full` (every commit reaches the disk, the default) or `normal`
    /// (WAL commits may be lost on power failure, never corrupted).
    pub sqlite_synchronous: SqliteSync,
    /// The least time between two batches of a background feed consumer while events keep
    /// coming (supervision's, indicators', matching's, intake's clusterer and routing-status
    /// follower; routing's dispatcher is never paced): larger batches cost less CPU a case,
    /// and what those consumers keep is that much later under load. 0 turns pacing off.
    pub background_pace_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            max_connections: 32,
            acquire_timeout_ms: 5_000,
            sqlite_synchronous: SqliteSync::Full,
            background_pace_ms: 1_000,
        }
    }
}

impl StorageConfig {
    /// [`StorageConfig::background_pace_ms`] as a duration.
    pub fn background_pace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.background_pace_ms)
    }
}

/// SQLite's `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// fsync on every commit.
    Full,
    /// fsync at WAL checkpoints.
    Normal,
}

/// How a gRPC server protects itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// A unary call that takes longer is cancelled.
    pub request_timeout_ms: u64,
    /// Requests in flight per server; beyond it new ones get RESOURCE_EXHAUSTED at once.
    pub concurrency_limit: usize,
    /// Largest request message, in bytes; larger ones are refused.
    pub max_message_bytes: usize,
    /// How long shutdown waits for calls in flight before it stops anyway.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 10_000,
            concurrency_limit: 1_024,
            max_message_bytes: 1024 * 1024,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// The parsed configuration: the common part, plus each service's section, which the
/// service itself deserializes (see [`Settings::section`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The shared settings.
    pub common: CommonConfig,
    sections: toml::Table,
}

impl Settings {
    /// Reads `path` (if any), applies `env` overrides, and checks the common part. Top-level
    /// tables named in `sections` are kept for their services; any other unknown key is an
    /// error.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sections: &[&str],
    ) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|source| ConfigError::Parse {
                        path: path.to_owned(),
                        source: Box::new(source),
                    })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let mut service_tables = toml::Table::new();
        for name in sections {
            if let Some(value) = table.remove(*name) {
                if !value.is_table() {
                    return Err(ConfigError::Invalid {
                        section: Some((*name).into()),
                        message: "must be a table".into(),
                    });
                }
                service_tables.insert((*name).to_string(), value);
            }
        }
        let common: CommonConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    section: None,
                    message: e.message().to_string(),
                })?;
        common.validate()?;
        Ok(Self {
            common,
            sections: service_tables,
        })
    }

    /// Deserializes one service's section; a missing section gives the service's defaults.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, ConfigError> {
        match self.sections.get(name) {
            None => Ok(T::default()),
            Some(value) => {
                value
                    .clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| ConfigError::Invalid {
                        section: Some(name.into()),
                        message: e.message().to_string(),
                    })
            }
        }
    }
}

impl CommonConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |message: &str| {
            Err(ConfigError::Invalid {
                section: None,
                message: message.into(),
            })
        };
        if !(self.database_url.is_empty()
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return bad("database_url must be empty (embedded SQLite) or a postgres:// URL");
        }
        if self.storage.max_connections == 0 || self.storage.max_connections > 1_000 {
            return bad("storage.max_connections must be 1 to 1000");
        }
        if self.storage.background_pace_ms > 10_000 {
            return bad("storage.background_pace_ms must be 0 to 10000");
        }
        if self.server.concurrency_limit == 0 {
            return bad("server.concurrency_limit must be at least 1");
        }
        if self.server.max_message_bytes < 1024 || self.server.max_message_bytes > 64 << 20 {
            return bad("server.max_message_bytes must be 1 KiB to 64 MiB");
        }
        if self.server.request_timeout_ms == 0 {
            return bad("server.request_timeout_ms must be at least 1");
        }
        Ok(())
    }
}

/// Applies `MINQING_A__B=value` overrides to the table.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    // Sorted so that overrides apply in a stable order.
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("MINQING_"))
        .collect();
    vars.sort();
    for (key, raw) in vars {
        let path: Vec<String> = key["MINQING_".len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        // Variables the binary reads itself (e.g. MINQING_TOKEN, MINQING_CONFIG) are not
        // configuration keys.
        if path.len() == 1 && NON_CONFIG_VARS.contains(&path[0].as_str()) {
            continue;
        }
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid {
                section: None,
                message: format!("environment variable {key} names an empty key"),
            });
        }
        let value = parse_env_value(&raw);
        let mut node = &mut *table;
        for part in &path[..path.len() - 1] {
            let entry = node
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry.as_table_mut().ok_or_else(|| ConfigError::Invalid {
                section: None,
                message: format!("environment variable {key}: {part} is not a table"),
            })?;
        }
        node.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

/// `MINQING_*` variables that are not configuration keys.
const NON_CONFIG_VARS: &[&str] = &[
    "token",
    "config",
    "endpoint",
    "service_token",
    // The CLI's addresses of the other services.
    "routing_endpoint",
    "matching_endpoint",
    "supervision_endpoint",
    // The test harness's (scripts/test.sh, CI): a `minqing up` started by a test inherits them.
    "test_postgres_url",
    "require_postgres",
];

fn parse_env_value(raw: &str) -> toml::Value {
    // `key = <raw>` parses numbers, booleans and arrays; anything else is a plain string.
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let s = Settings::load(None, env(&[]), &["intake"]).unwrap();
        assert_eq!(s.common.data_dir, PathBuf::from("./minqing-data"));
        assert!(s.common.database_url.is_empty());
    }

    #[test]
    fn env_overrides_file_and_nests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "data_dir = \"/a\"\n[server]\nconcurrency_limit = 5\n[intake]\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&path),
            env(&[
                ("MINQING_DATA_DIR", "/b"),
                ("MINQING_SERVER__CONCURRENCY_LIMIT", "9"),
                ("MINQING_INTAKE__LISTEN", "127.0.0.1:2"),
                ("MINQING_TOKEN", "not-config"),
                ("OTHER", "x"),
            ]),
            &["intake"],
        )
        .unwrap();
        assert_eq!(s.common.data_dir, PathBuf::from("/b"));
        assert_eq!(s.common.server.concurrency_limit, 9);
        #[derive(Deserialize, Default)]
        struct Intake {
            listen: Option<SocketAddr>,
        }
        let intake: Intake = s.section("intake").unwrap();
        assert_eq!(intake.listen, Some("127.0.0.1:2".parse().unwrap()));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let err = Settings::load(None, env(&[("MINQING_NO_SUCH_KEY", "1")]), &[]).unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
        let err =
            Settings::load(None, env(&[("MINQING_DATABASE_URL", "mysql://x")]), &[]).unwrap_err();
        assert!(err.to_string().contains("database_url"), "{err}");
        let err = Settings::load(
            None,
            env(&[("MINQING_SERVER__CONCURRENCY_LIMIT", "0")]),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("concurrency_limit"), "{err}");
    }

    #[test]
    fn background_pace_defaults_to_a_second_and_is_bounded() {
        let s = Settings::load(None, env(&[]), &[]).unwrap();
        assert_eq!(
            s.common.storage.background_pace(),
            std::time::Duration::from_secs(1)
        );
        let s = Settings::load(
            None,
            env(&[("MINQING_STORAGE__BACKGROUND_PACE_MS", "0")]),
            &[],
        )
        .unwrap();
        assert!(s.common.storage.background_pace().is_zero());
        let err = Settings::load(
            None,
            env(&[("MINQING_STORAGE__BACKGROUND_PACE_MS", "10001")]),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("background_pace_ms"), "{err}");
    }
}
