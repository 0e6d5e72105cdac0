//! The pool of volunteers kept current with the database: loaded at start, reloaded for the
//! volunteers a local change touched (right after its commit, so a caller reads its own
//! writes), and following the service's own event feed for changes made by other replicas.
//!
//! Ranking reads the pool; every offer, claim and acceptance checks the volunteer again in
//! its transaction, so a pool that lags by a moment can only rank, never break a rule.

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use prost::{Message, Name};
use tokio_util::sync::CancellationToken;

use crate::{
    calendar::Calendar,
    domain::{Place, Volunteer, VolunteerState},
    pool::Pool,
    rank::{Entry, Point},
    store,
};
use minqing_intake::{domain::LatLng, places::Gazetteer};
use minqing_kit::{
    db::Db,
    error::StoreError,
    feed::{self, Cursor},
    time::Clock,
};
use minqing_proto::minqing::matching::v1 as pb;

/// Where a place is: its own coordinates, else its building's, grid's or community's.
pub fn locate(gazetteer: &Gazetteer, place: &Place, location: Option<LatLng>) -> Option<Point> {
    if let Some(l) = location {
        return Some(Point {
            lat: l.latitude,
            lng: l.longitude,
        });
    }
    [&place.building, &place.grid, &place.community]
        .into_iter()
        .filter(|c| !c.is_empty())
        .find_map(|c| {
            let e = gazetteer.get(c)?;
            Some(Point {
                lat: e.latitude?,
                lng: e.longitude?,
            })
        })
}

/// The pool, kept current.
#[derive(Debug)]
pub struct Index {
    pool: RwLock<Pool>,
    cursor: tokio::sync::Mutex<Cursor>,
    db: Db,
    gazetteer: Arc<Gazetteer>,
    calendar: Calendar,
    clock: Clock,
}

/// Just the assignment inside any assignment event (field 1 of each of them).
#[derive(Clone, PartialEq, Message)]
struct AssignmentEnvelope {
    #[prost(message, optional, tag = "1")]
    assignment: Option<pb::Assignment>,
}

impl Index {
    /// Loads every current volunteer and their load.
    pub async fn load(
        db: Db,
        gazetteer: Arc<Gazetteer>,
        calendar: Calendar,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        // The cursor first: changes committed while loading are replayed (reloads are idempotent).
        let cursor = feed::latest_cursor(&db).await?;
        let now = clock.now_micros();
        let volunteers = store::volunteers::all_current(db.pool()).await?;
        let mut loads = store::volunteers::all_loads(db.pool(), &calendar, now).await?;
        let mut pool = Pool::new();
        for v in &volunteers {
            let load = loads.remove(&v.id).unwrap_or_default();
            let point = locate(&gazetteer, &v.profile.home, v.profile.location);
            pool.upsert(Entry::new(v, load, point));
        }
        tracing::info!(volunteers = pool.len(), "volunteer index loaded");
        Ok(Self {
            pool: RwLock::new(pool),
            cursor: tokio::sync::Mutex::new(cursor),
            db,
            gazetteer,
            calendar,
            clock,
        })
    }

    /// Runs `f` on the pool (read-locked; never held across an await).
    pub fn read<T>(&self, f: impl FnOnce(&Pool) -> T) -> T {
        let guard = self.pool.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    /// The entry for a volunteer as the database holds them now, with their load.
    pub fn entry_for(&self, v: &Volunteer, load: crate::rank::Load) -> Entry {
        let point = locate(&self.gazetteer, &v.profile.home, v.profile.location);
        Entry::new(v, load, point)
    }

    /// Reloads volunteers `ids` from the database.
    pub async fn reload<I: IntoIterator<Item = String>>(&self, ids: I) -> Result<(), StoreError> {
        let now = self.clock.now_micros();
        let mut fresh = Vec::new();
        for id in ids {
            match store::volunteers::get(self.db.pool(), &id).await? {
                Some(v) if v.state != VolunteerState::Retired => {
                    let load =
                        store::volunteers::load(self.db.pool(), &id, &self.calendar, now).await?;
                    fresh.push((id, Some(self.entry_for(&v, load))));
                }
                _ => fresh.push((id, None)),
            }
        }
        let mut pool = self.pool.write().unwrap_or_else(|e| e.into_inner());
        for (id, entry) in fresh {
            match entry {
                Some(e) => pool.upsert(e),
                None => pool.remove(&id),
            }
        }
        Ok(())
    }

    /// Applies the feed's events since the last call: reloads the volunteers they touched.
    pub async fn catch_up(&self) -> Result<(), StoreError> {
        let mut cursor = self.cursor.lock().await;
        let mut waits = 0;
        loop {
            let batch = feed::read_after(&self.db, *cursor, 1_000).await?;
            let events = batch.events;
            let Some(last) = events.last().map(|e| e.cursor) else {
                // Events held back behind an older transaction still running (PostgreSQL)
                // are picked up when it ends; wait a little for them, then let `follow` retry.
                if batch.held_back && waits < 20 {
                    waits += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                return Ok(());
            };
            let mut ids = BTreeSet::new();
            for e in &events {
                if let Some(id) = e.subject.strip_prefix("volunteers/") {
                    ids.insert(id.to_string());
                } else if e.subject.starts_with("assignments/") {
                    let reassigned = e.kind == pb::AssignmentReassigned::full_name();
                    if reassigned {
                        if let Ok(r) = pb::AssignmentReassigned::decode(e.payload.as_slice()) {
                            for a in [r.assignment, r.replacement].into_iter().flatten() {
                                if let Some(id) = a.assignee.strip_prefix("volunteers/") {
                                    ids.insert(id.to_string());
                                }
                            }
                        }
                    } else if let Ok(env) = AssignmentEnvelope::decode(e.payload.as_slice())
                        && let Some(a) = env.assignment
                        && let Some(id) = a.assignee.strip_prefix("volunteers/")
                    {
                        ids.insert(id.to_string());
                    }
                }
            }
            self.reload(ids).await?;
            *cursor = last;
        }
    }

    /// Follows the feed until `shutdown`: wakes on local and (PostgreSQL) other replicas'
    /// commits, and every few seconds in case a wake-up was missed.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let mut commits = self.db.commits();
        loop {
            if let Err(err) = self.catch_up().await {
                tracing::warn!(error = %err, "volunteer index could not catch up; retrying");
            }
            tokio::select! {
                _ = commits.changed() => {},
                () = tokio::time::sleep(Duration::from_secs(5)) => {},
                () = shutdown.cancelled() => return,
            }
        }
    }
}
