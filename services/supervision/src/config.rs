//! Supervision's section of the configuration (`[supervision]`).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// `[supervision]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    /// Where the gRPC server listens.
    pub listen: SocketAddr,
    /// Supervision's own database, overriding the common `database_url`.
    pub database_url: Option<String>,
    /// Supervision's pool size, overriding `storage.max_connections`.
    pub max_connections: Option<u32>,
    /// The calendar file (TOML); empty for the built-in sample (China's 2026–2027 public
    /// holidays and make-up working days). Cities in it that the database does not have yet
    /// are loaded at start; edits made by RPC are kept across restarts.
    pub calendar_path: Option<PathBuf>,
    /// The city whose calendar counts when a case's district matches no calendar.
    pub default_city: String,
    /// The gazetteer file; empty for the built-in sample city (the same file intake reads).
    pub places_path: Option<PathBuf>,
    /// Where intake listens, for its event feed (`minqing up` fills this in).
    pub intake_url: String,
    /// Where routing listens, for its event feed (`minqing up` fills this in).
    pub routing_url: String,
    /// Where matching listens, for its event feed (`minqing up` fills this in).
    pub matching_url: String,
    /// Follow matching's feed (volunteers' work on cases shows in their clocks).
    pub follow_matching: bool,
    /// Follow intake's and routing's feeds (clocks, replies). Off only in tests of the
    /// calendar alone.
    pub follow_feeds: bool,
    /// Warn this many working minutes before a working-day deadline.
    pub warning_working_minutes: u32,
    /// Escalate again, a level higher, after this many working minutes still overdue.
    pub repeat_escalation_working_minutes: u32,
    /// Escalations at most per deadline.
    pub max_escalations: u32,
    /// An emergency's limit in minutes (wall clock: emergency lines never close).
    pub emergency_minutes: u32,
    /// Warn this many minutes before an emergency's deadline.
    pub emergency_warning_minutes: u32,
    /// Escalate an emergency again after this many minutes.
    pub emergency_repeat_minutes: u32,
    /// Warn this many minutes before a unit's acceptance window ends.
    pub acceptance_warning_minutes: u32,
    /// The time limit assumed when papers arrive for a case whose limit is unknown.
    pub default_time_limit_working_days: u32,
    /// How often the timer worker looks at the clock when nothing is due sooner, in ms (the
    /// bound on how late a timer fires; a manual test clock is only seen this often).
    pub timer_tick_ms: u64,
    /// Reply templates (TOML, `resolved = "…"`); empty for the built-in texts.
    pub templates_path: Option<PathBuf>,
    /// The outlet for each contact method (`phone`, `letter`, `online`, `face_to_face`):
    /// `log` or `webhook`. Methods not named use the log outlet.
    pub outlets: BTreeMap<String, String>,
    /// Where the webhook outlet POSTs (http://).
    pub webhook_url: Option<String>,
    /// The first retry of a failed reply waits this long; each next one twice as long.
    pub reply_retry_seconds: u64,
    /// Tries before a reply is marked failed.
    pub reply_max_attempts: u32,
    /// Indicators and hot spots (`[supervision.indicators]`).
    pub indicators: crate::indicators::IndicatorsConfig,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7404)),
            database_url: None,
            max_connections: None,
            calendar_path: None,
            default_city: "6201".into(),
            places_path: None,
            intake_url: "http://127.0.0.1:7401".into(),
            routing_url: "http://127.0.0.1:7402".into(),
            matching_url: "http://127.0.0.1:7403".into(),
            follow_matching: true,
            follow_feeds: true,
            warning_working_minutes: 240,
            repeat_escalation_working_minutes: 420,
            max_escalations: 3,
            emergency_minutes: 60,
            emergency_warning_minutes: 15,
            emergency_repeat_minutes: 30,
            acceptance_warning_minutes: 30,
            default_time_limit_working_days: 5,
            timer_tick_ms: 250,
            templates_path: None,
            outlets: BTreeMap::new(),
            webhook_url: None,
            reply_retry_seconds: 30,
            reply_max_attempts: 6,
            indicators: crate::indicators::IndicatorsConfig::default(),
        }
    }
}

impl SupervisionConfig {
    /// Checks ranges the types cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_city.is_empty()
            || self.default_city.len() > 12
            || !self.default_city.bytes().all(|b| b.is_ascii_digit())
        {
            return Err("supervision.default_city must be a city code of 1 to 12 digits".into());
        }
        let ranges = [
            (
                "warning_working_minutes",
                self.warning_working_minutes,
                1,
                10_000,
            ),
            (
                "repeat_escalation_working_minutes",
                self.repeat_escalation_working_minutes,
                1,
                100_000,
            ),
            ("max_escalations", self.max_escalations, 1, 5),
            ("emergency_minutes", self.emergency_minutes, 1, 1_440),
            (
                "emergency_warning_minutes",
                self.emergency_warning_minutes,
                1,
                1_440,
            ),
            (
                "emergency_repeat_minutes",
                self.emergency_repeat_minutes,
                1,
                1_440,
            ),
            (
                "acceptance_warning_minutes",
                self.acceptance_warning_minutes,
                1,
                1_440,
            ),
            (
                "default_time_limit_working_days",
                self.default_time_limit_working_days,
                1,
                365,
            ),
        ];
        for (name, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(format!("supervision.{name} must be {min} to {max}"));
            }
        }
        if !(1..=86_400).contains(&self.reply_retry_seconds) {
            return Err("supervision.reply_retry_seconds must be 1 to 86400".into());
        }
        if !(1..=20).contains(&self.reply_max_attempts) {
            return Err("supervision.reply_max_attempts must be 1 to 20".into());
        }
        crate::outlets::Outlets::from_config(&self.outlets, self.webhook_url.as_deref())?;
        if !(10..=5_000).contains(&self.timer_tick_ms) {
            return Err("supervision.timer_tick_ms must be 10 to 5000".into());
        }
        self.indicators.validate()
    }

    /// The clock policy these settings make.
    pub fn policy(&self) -> crate::clock::Policy {
        crate::clock::Policy {
            warning_working_minutes: i64::from(self.warning_working_minutes),
            repeat_working_minutes: i64::from(self.repeat_escalation_working_minutes),
            emergency_warning_minutes: i64::from(self.emergency_warning_minutes),
            emergency_repeat_minutes: i64::from(self.emergency_repeat_minutes),
            acceptance_warning_minutes: i64::from(self.acceptance_warning_minutes),
            max_escalations: i32::try_from(self.max_escalations).unwrap_or(3),
        }
    }
}
