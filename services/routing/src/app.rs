//! What the handlers, the dispatcher and the background tasks share: the database, the rules
//! in force, the units directory, intake's catalogue and gazetteer, the clock.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
};

use tokio::sync::Notify;

use crate::domain::CaseFacts;
use crate::{
    config::RoutingConfig,
    convert,
    directory::{Directory, SharedDirectory},
    knowledge::KnowledgeCache,
    rules::{Decider, Outcome, RuleSet},
    store,
    workdays::LocalTime,
};
use minqing_kit::{
    db::Db,
    error::StoreError,
    feed::{self, EventMeta},
    time::{Clock, Micros},
};
use minqing_proto::minqing::routing::v1 as pb;

/// Shared state.
#[derive(Debug)]
pub struct App {
    /// Routing's database.
    pub db: Db,
    /// The rules in force.
    rules: RwLock<Arc<RuleSet>>,
    /// The units.
    pub directory: SharedDirectory,
    /// Tells the refresher the directory changed.
    pub directory_changed: Notify,
    /// Catalogue and gazetteer.
    pub knowledge: KnowledgeCache,
    /// The clock.
    pub clock: Clock,
    /// Local time.
    pub local: LocalTime,
    /// Config.
    pub config: RoutingConfig,
    /// Serialises reloads.
    reload: tokio::sync::Mutex<()>,
}

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// Which file.
        path: String,
        /// Why.
        error: String,
    },
    /// The file was refused.
    #[error("the rule file was refused: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Recording it failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl App {
    /// The shared state, with `rules` in force.
    pub fn new(
        db: Db,
        rules: RuleSet,
        knowledge: KnowledgeCache,
        clock: Clock,
        config: RoutingConfig,
    ) -> Self {
        Self {
            db,
            rules: RwLock::new(Arc::new(rules)),
            directory: SharedDirectory::default(),
            directory_changed: Notify::new(),
            knowledge,
            clock,
            local: LocalTime::new(config.utc_offset_minutes),
            config,
            reload: tokio::sync::Mutex::new(()),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RuleSet> {
        match self.rules.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_rules(&self, set: RuleSet) {
        let set = Arc::new(set);
        match self.rules.write() {
            Ok(mut r) => *r = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    /// Reads the units from the database into the directory.
    pub async fn refresh_directory(&self) -> Result<(), StoreError> {
        let units = store::all_units(self.db.pool()).await?;
        self.directory.replace(Directory::new(units));
        Ok(())
    }

    /// Decides the route of `facts` now, against what is in force.
    pub fn decide(
        &self,
        facts: &CaseFacts,
        exclude: &[String],
        knowledge: &crate::knowledge::Knowledge,
        now: Micros,
    ) -> Outcome {
        let rules = self.rules();
        let units = self.directory.current();
        Decider {
            rules: &rules,
            units: &units,
            knowledge,
            local: self.local,
            default_time_limit: self.config.default_time_limit_working_days,
        }
        .decide(facts, exclude, now)
    }

    /// Where the rules come from.
    pub fn rules_source(&self) -> String {
        self.config
            .rules_path
            .as_ref()
            .map_or_else(|| "builtin:sample".to_string(), |p| p.display().to_string())
    }

    /// Reads the rule text from the configured file (or the built-in sample).
    pub fn read_rules_text(&self) -> Result<String, ReloadError> {
        match &self.config.rules_path {
            None => Ok(crate::rules::SAMPLE.to_string()),
            Some(path) => read(path),
        }
    }

    /// Re-reads and loads the rule file. A refused file leaves the running rules in force.
    /// `Ok(false)` when the text is the one in force already.
    pub async fn reload_rules(&self, actor: &str) -> Result<bool, ReloadError> {
        let _one = self.reload.lock().await;
        let text = self.read_rules_text()?;
        let current = self.rules();
        let now = self.clock.now_micros();
        let knowledge = self.knowledge.get().await.ok();
        let set = RuleSet::parse(&text, &self.rules_source(), now, knowledge.as_deref())
            .map_err(ReloadError::Invalid)?;
        if set.sha256 == current.sha256 {
            return Ok(false);
        }
        self.record_load(&set, actor).await?;
        tracing::info!(version = %set.version, rules = set.rules.len(), "routing rules loaded");
        self.set_rules(set);
        Ok(true)
    }

    /// Records the set in force with a `RuleSetLoaded` event when it changed.
    pub async fn record_load(&self, set: &RuleSet, actor: &str) -> Result<(), StoreError> {
        let now = self.clock.now_micros();
        let mut tx = self.db.begin().await?;
        if let Some(previous) =
            store::record_rule_load(&mut tx, &set.sha256, &set.version, now).await?
        {
            let event = pb::RuleSetLoaded {
                rule_set: Some(convert::rule_set(set)),
                previous_version: previous,
            };
            feed::append(
                &mut tx,
                &EventMeta::current(actor),
                &format!("rule-sets/{}", set.sha256),
                &event,
                now,
            )
            .await?;
        }
        tx.commit().await
    }
}

fn read(path: &PathBuf) -> Result<String, ReloadError> {
    std::fs::read_to_string(path).map_err(|e| ReloadError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    })
}
