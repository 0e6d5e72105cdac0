//! Matching's section of the configuration (`[matching]`).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// `[matching]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchingConfig {
    /// Where the gRPC server listens.
    pub listen: SocketAddr,
    /// Matching's own database, overriding the common `database_url`.
    pub database_url: Option<String>,
    /// Matching's pool size, overriding `storage.max_connections`.
    pub max_connections: Option<u32>,
    /// The gazetteer file; empty for the built-in sample city (the same file intake reads).
    pub places_path: Option<PathBuf>,
    /// The city's offset from UTC in minutes (weekly availability windows and record periods
    /// are in local time). China has one zone and no daylight saving: 480.
    pub utc_offset_minutes: i32,
    /// Volunteers living farther than this from a need, outside its community, are not
    /// candidates.
    pub max_distance_meters: u32,
    /// How long a volunteer has to answer an offer before it goes to the next candidate.
    pub offer_ttl_hours: u32,
    /// How often expired offers are looked for, in seconds.
    pub sweep_interval_seconds: u64,
    /// Re-offer a declined or expired place to the next candidate automatically.
    pub auto_reoffer: bool,
    /// The weights of the parts of the match score.
    pub weights: Weights,
    /// Where routing listens, for its event feed (`minqing up` fills this in).
    pub routing_url: String,
    /// Turn cases routed as volunteer-suitable into needs.
    pub consume_routing: bool,
    /// Needs made from cases are OPEN at once (true) or DRAFTs for the community to publish.
    pub publish_case_needs: bool,
    /// Effort assumed for a need made from a case, in minutes.
    pub case_need_effort_minutes: u32,
    /// The window a need made from a case gets when routing gives no deadline, in hours.
    pub case_need_window_hours: u32,
    /// Skills a need made from a case requires, by catalogue item.
    pub category_skills: BTreeMap<String, Vec<String>>,
}

impl Default for MatchingConfig {
    fn default() -> Self {
        let category_skills = [
            ("onsite-care-01", vec!["elderly-care"]),
            ("onsite-care-02", vec!["disability-care"]),
            ("onsite-care-04", vec!["tutoring"]),
            ("onsite-care-05", vec!["child-care"]),
            ("onsite-care-06", vec![]),
            ("onsite-care-08", vec!["elderly-care"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7403)),
            database_url: None,
            max_connections: None,
            places_path: None,
            utc_offset_minutes: 480,
            max_distance_meters: 5_000,
            offer_ttl_hours: 48,
            sweep_interval_seconds: 60,
            auto_reoffer: true,
            weights: Weights::default(),
            routing_url: "http://127.0.0.1:7402".into(),
            consume_routing: true,
            publish_case_needs: true,
            case_need_effort_minutes: 120,
            case_need_window_hours: 72,
            category_skills,
        }
    }
}

/// The weights of the score's parts; they must sum to 1.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// Skill fit.
    pub skill: f64,
    /// Distance, same grid or building.
    pub proximity: f64,
    /// Free time within the window.
    pub availability: f64,
    /// Room left in the volunteer's week and task list.
    pub load: f64,
    /// Not asked often lately.
    pub fairness: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            skill: 0.20,
            proximity: 0.30,
            availability: 0.15,
            load: 0.15,
            fairness: 0.20,
        }
    }
}

impl MatchingConfig {
    /// Checks ranges the types cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(-720..=840).contains(&self.utc_offset_minutes) {
            return Err("matching.utc_offset_minutes must be -720 to 840".into());
        }
        if !(100..=100_000).contains(&self.max_distance_meters) {
            return Err("matching.max_distance_meters must be 100 to 100000".into());
        }
        if !(1..=24 * 30).contains(&self.offer_ttl_hours) {
            return Err("matching.offer_ttl_hours must be 1 to 720".into());
        }
        if !(1..=3_600).contains(&self.sweep_interval_seconds) {
            return Err("matching.sweep_interval_seconds must be 1 to 3600".into());
        }
        if !(15..=1_440).contains(&self.case_need_effort_minutes) {
            return Err("matching.case_need_effort_minutes must be 15 to 1440".into());
        }
        if !(1..=24 * 90).contains(&self.case_need_window_hours) {
            return Err("matching.case_need_window_hours must be 1 to 2160".into());
        }
        let w = self.weights;
        let parts = [w.skill, w.proximity, w.availability, w.load, w.fairness];
        if parts.iter().any(|p| !p.is_finite() || *p < 0.0)
            || (parts.iter().sum::<f64>() - 1.0).abs() > 1e-6
        {
            return Err("matching.weights must be non-negative and sum to 1".into());
        }
        for (item, skills) in &self.category_skills {
            if let Some(bad) = skills.iter().find(|s| !crate::domain::is_code(s)) {
                return Err(format!(
                    "matching.category_skills.{item}: {bad:?} is not a skill code"
                ));
            }
        }
        Ok(())
    }
}
