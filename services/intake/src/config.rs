//! Intake's section of the configuration (`[intake]`).

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// `[intake]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeConfig {
    /// Where the gRPC server listens.
    pub listen: SocketAddr,
    /// Intake's own database, overriding the common `database_url`.
    pub database_url: Option<String>,
    /// Intake's pool size, overriding `storage.max_connections`.
    pub max_connections: Option<u32>,
    /// The service catalogue file; empty for the built-in sample (54 items).
    pub catalogue_path: Option<PathBuf>,
    /// The gazetteer file; empty for the built-in sample city.
    pub places_path: Option<PathBuf>,
    /// How reports of the same issue are found.
    pub clusters: ClusterConfig,
    /// Where routing listens (its event feed tells the resident-visible state); `minqing up`
    /// fills it.
    pub routing_url: String,
    /// Whether routing's feed is followed at all (off when intake runs without routing).
    pub follow_routing: bool,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7401)),
            database_url: None,
            max_connections: None,
            catalogue_path: None,
            places_path: None,
            clusters: ClusterConfig::default(),
            routing_url: "http://127.0.0.1:7402".into(),
            follow_routing: true,
        }
    }
}

/// When two reports are the same issue: same catalogue item, at the same building or within
/// `distance_meters`, within `window_hours` of each other, with texts at least
/// `min_text_similarity` alike (Sørensen–Dice over character pairs, 0 to 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Whether reports are linked automatically at all.
    pub enabled: bool,
    /// How far apart (hours) two reports may be.
    pub window_hours: u32,
    /// How far apart (metres) two reports with coordinates may be.
    pub distance_meters: f64,
    /// How alike their texts must be.
    pub min_text_similarity: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_hours: 72,
            distance_meters: 150.0,
            min_text_similarity: 0.2,
        }
    }
}

impl IntakeConfig {
    /// Checks ranges the types cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.routing_url.starts_with("http://") || self.routing_url.starts_with("https://")) {
            return Err("intake.routing_url must be an http:// or https:// address".into());
        }
        let c = &self.clusters;
        if c.window_hours == 0 || c.window_hours > 24 * 90 {
            return Err("intake.clusters.window_hours must be 1 to 2160".into());
        }
        if !(c.distance_meters.is_finite() && (0.0..=10_000.0).contains(&c.distance_meters)) {
            return Err("intake.clusters.distance_meters must be 0 to 10000".into());
        }
        if !(c.min_text_similarity.is_finite() && (0.0..=1.0).contains(&c.min_text_similarity)) {
            return Err("intake.clusters.min_text_similarity must be 0 to 1".into());
        }
        Ok(())
    }
}
