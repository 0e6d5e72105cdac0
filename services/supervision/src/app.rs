//! What every handler and worker shares: the database, the configuration, the clock, the
//! calendars and the gazetteer.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use crate::{
    calendar::Calendar,
    config::SupervisionConfig,
    store::{self, calendars::Stored},
};
use minqing_intake::places::Gazetteer;
use minqing_kit::{
    db::Db,
    error::StoreError,
    feed::{self, EventMeta},
    time::Clock,
};
use minqing_proto::minqing::supervision::v1 as pb;

/// The service's shared state.
#[derive(Debug)]
pub struct Ctx {
    /// Supervision's database.
    pub db: Db,
    /// Its configuration.
    pub config: SupervisionConfig,
    /// The clock (manual in tests).
    pub clock: Clock,
    /// The calendars, by city.
    pub calendars: CalendarBook,
    /// The city's places.
    pub gazetteer: Arc<Gazetteer>,
    /// When warnings go out and escalations repeat.
    pub policy: crate::clock::Policy,
    /// The in-memory due-time queue.
    pub timers: crate::timers::TimerQueue,
    /// Reply templates.
    pub templates: crate::templates::Templates,
    /// Where replies are sent, by contact method.
    pub outlets: crate::outlets::Outlets,
    /// Wakes the delivery worker when replies are queued.
    pub deliveries_ready: tokio::sync::Notify,
    /// Wakes the re-plan worker when a calendar was edited.
    pub replan_wake: tokio::sync::Notify,
}

/// The calendars in memory: read on every deadline, so never fetched from the database on
/// the hot path. Written through: the database first, then here after the commit.
#[derive(Debug, Default)]
pub struct CalendarBook {
    by_city: RwLock<BTreeMap<String, Arc<Stored>>>,
}

impl CalendarBook {
    /// Loads every stored calendar, first adding the file's cities the database lacks
    /// (each with its `CalendarChanged` event).
    pub async fn load(db: &Db, clock: &Clock, file: Vec<Calendar>) -> Result<Self, StoreError> {
        let now = clock.now_micros();
        let mut tx = db.begin().await?;
        for c in &file {
            if store::calendars::insert(&mut tx, c, now).await? {
                let stored = Stored {
                    calendar: c.clone(),
                    version: 1,
                    update_time: now,
                };
                let event = pb::CalendarChanged {
                    calendar: Some(crate::grpc::convert::calendar(&stored)),
                    changed_by: "file".into(),
                };
                let meta = EventMeta::current("system:supervision");
                feed::append(&mut tx, &meta, &calendar_name(&c.city), &event, now).await?;
            }
        }
        tx.commit().await?;
        let book = Self::default();
        for s in store::calendars::all(db.pool()).await? {
            book.put(s);
        }
        Ok(book)
    }

    /// Replaces a city's calendar in memory.
    pub fn put(&self, stored: Stored) {
        let mut map = self.by_city.write().unwrap_or_else(|e| e.into_inner());
        map.insert(stored.calendar.city.clone(), Arc::new(stored));
    }

    /// A city's calendar.
    pub fn get(&self, city: &str) -> Option<Arc<Stored>> {
        let map = self.by_city.read().unwrap_or_else(|e| e.into_inner());
        map.get(city).cloned()
    }

    /// Every calendar, by city.
    pub fn all(&self) -> Vec<Arc<Stored>> {
        let map = self.by_city.read().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// The calendar for a case in `district`: its city's (the code's first four digits), else
    /// `default_city`'s, else an ordinary Monday-to-Friday week.
    pub fn for_district(&self, district: &str, default_city: &str) -> Arc<Stored> {
        let city = district.get(..4).unwrap_or_default();
        self.get(city)
            .or_else(|| self.get(default_city))
            .unwrap_or_else(|| {
                Arc::new(Stored {
                    calendar: Calendar::plain(
                        default_city,
                        480,
                        vec![crate::calendar::Span {
                            start: 9 * 60,
                            end: 17 * 60 + 30,
                        }],
                    ),
                    version: 0,
                    update_time: 0,
                })
            })
    }
}

/// "calendars/{city}".
pub fn calendar_name(city: &str) -> String {
    format!("calendars/{city}")
}
