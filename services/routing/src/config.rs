//! Routing's section of the configuration (`[routing]`).

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// `[routing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Where the gRPC server listens.
    pub listen: SocketAddr,
    /// Routing's own database, overriding the common `database_url`.
    pub database_url: Option<String>,
    /// Routing's pool size, overriding `storage.max_connections`.
    pub max_connections: Option<u32>,
    /// Where intake listens (its event feed and public catalogue); `minqing up` fills it.
    pub intake_url: String,
    /// The rule file; empty for the built-in sample rules.
    pub rules_path: Option<PathBuf>,
    /// How often the rule file is checked for changes, in milliseconds; 0 to reload only on
    /// request (`ReloadRules`).
    pub rules_watch_ms: u64,
    /// A units file (TOML or CSV) loaded into an empty registry at start; empty for the
    /// built-in sample units when `seed_sample_units` is set.
    pub seed_units_path: Option<PathBuf>,
    /// Load the built-in sample units into an empty registry at start.
    pub seed_sample_units: bool,
    /// Minutes a unit has to accept an assignment when it sets no window of its own.
    pub default_acceptance_window_minutes: u32,
    /// Time limit in working days for a category the catalogue does not know.
    pub default_time_limit_working_days: u32,
    /// The city's local time, minutes east of UTC (480 for China).
    pub utc_offset_minutes: i32,
    /// How often overdue acceptances are looked for, in milliseconds.
    pub sweep_interval_ms: u64,
    /// How often the units directory is re-read (to see other replicas' changes), in ms.
    pub directory_refresh_ms: u64,
    /// How long the catalogue and gazetteer fetched from intake are kept, in seconds.
    pub catalogue_refresh_secs: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7402)),
            database_url: None,
            max_connections: None,
            intake_url: "http://127.0.0.1:7401".into(),
            rules_path: None,
            rules_watch_ms: 2_000,
            seed_units_path: None,
            seed_sample_units: true,
            default_acceptance_window_minutes: 120,
            default_time_limit_working_days: 5,
            utc_offset_minutes: 480,
            sweep_interval_ms: 1_000,
            directory_refresh_ms: 5_000,
            catalogue_refresh_secs: 300,
        }
    }
}

impl RoutingConfig {
    /// Checks ranges the types cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10_080).contains(&self.default_acceptance_window_minutes) {
            return Err("routing.default_acceptance_window_minutes must be 1 to 10080".into());
        }
        if self.default_time_limit_working_days > 365 {
            return Err("routing.default_time_limit_working_days must be 0 to 365".into());
        }
        if !(-18 * 60 < self.utc_offset_minutes && self.utc_offset_minutes < 18 * 60) {
            return Err("routing.utc_offset_minutes must be within ±1079".into());
        }
        if !(10..=3_600_000).contains(&self.sweep_interval_ms) {
            return Err("routing.sweep_interval_ms must be 10 to 3600000".into());
        }
        if !(10..=3_600_000).contains(&self.directory_refresh_ms) {
            return Err("routing.directory_refresh_ms must be 10 to 3600000".into());
        }
        if self.catalogue_refresh_secs == 0 {
            return Err("routing.catalogue_refresh_secs must be at least 1".into());
        }
        if !(self.intake_url.starts_with("http://") || self.intake_url.starts_with("https://")) {
            return Err("routing.intake_url must be an http:// or https:// address".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_checked() {
        assert!(RoutingConfig::default().validate().is_ok());
        let bad = RoutingConfig {
            default_acceptance_window_minutes: 0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = RoutingConfig {
            intake_url: "127.0.0.1:7401".into(),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
