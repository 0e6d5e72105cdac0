//! The feed's horizon on PostgreSQL: below which transaction id every event is committed and
//! visible, and no later one can appear.
//!
//! The cluster-wide horizon, `pg_snapshot_xmin`, would do, but it waits for the oldest
//! transaction running anywhere on the server: another service's long batch would hold back
//! this feed though it can never write here. So the horizon is the oldest running transaction
//! *not known to be another service's*, or the snapshot's `xmax` when there is none.
//!
//! A running transaction is known to be another service's when its backend, matched by
//! transaction id in `pg_stat_activity`, is connected to another database, or is named as
//! another Minqing service (each service's pool names its connections `minqing/<schema>`,
//! [`crate::db`], and only that pool writes the schema's feed). That a transaction id is
//! another service's is a fact for good, so readers keep what they learnt ([`Xids`], one per
//! [`Db`], what is learnt shared by the process's stores on one server) and pass it to each
//! read as a parameter: the read itself stays as cheap as before, and `pg_stat_activity` (about
//! 0.3 ms) is consulted only when a read was held back twice by a transaction not yet known
//! either way. Any transaction not known
//! to be another's — this service's own, one whose backend is not found (it may have just
//! finished, its events not in the read's snapshot), one of a connection named otherwise —
//! holds the horizon as before.
//!
//! **Lanes.** A service may run some of its transactions in a lane ([`crate::db::Lane`]): a
//! class of its transactions, such as one consumer's, that can append only the lane's kinds of
//! event (enforced where events are appended), their connection named
//! `minqing/<schema>/<lane>` while they run. A reader that wants none of a lane's kinds passes
//! that lane's running transactions like another service's ([`Pass`]): whatever they may yet
//! commit behind its cursor is nothing it would ever take. A reader that wants every kind, or
//! any of the lane's, waits for them as before.
//!
//! All of a read is one statement with one snapshot (`pg_current_snapshot` is the statement's
//! active snapshot), so the horizon and the rows returned agree.
//!
//! Hand-written: no crate reads PostgreSQL's snapshots this way.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use sqlx::Row;

use crate::{db::Db, error::StoreError};

/// The horizon as a common table expression `horizon(below)`; `$param` is the text of an array
/// of the transaction ids known to be other services' ([`Xids::param`]). Use it as
/// `WITH {cte} SELECT … WHERE txid < (SELECT below FROM horizon)`.
pub fn horizon_cte(param: usize) -> String {
    format!(
        "horizon AS (SELECT LEAST(pg_snapshot_xmax(s)::text::bigint, \
           (SELECT min(x::text::bigint) FROM pg_snapshot_xip(s) AS x \
             WHERE x::text::bigint <> ALL (${param}::text::bigint[]))) AS below \
         FROM pg_current_snapshot() AS s)"
    )
}

/// What a service's readers have learnt of the transactions running on the server.
#[derive(Debug)]
pub struct Xids {
    /// This service's connections' `application_name`, when the kit named them (`None` when
    /// the URL names the application: then only other databases' transactions are passed).
    app: Option<String>,
    /// What every store of the process on the same server has learnt.
    server: Arc<Mutex<Running>>,
    /// The last transaction seen holding this store's feed back and not yet known.
    last_held: Mutex<Option<i64>>,
}

/// The lanes a reader may pass: the connection names (`minqing/<schema>/<lane>`) of the lanes
/// of its store none of whose kinds it wants ([`crate::db::Db::passable`]). Sorted, so equal
/// sets compare equal; empty for a reader that passes no lane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Pass(Arc<[String]>);

impl Pass {
    /// The lanes named `apps` (full connection names).
    pub(crate) fn new(mut apps: Vec<String>) -> Self {
        apps.sort();
        apps.dedup();
        Self(apps.into())
    }

    /// Whether no lane is passed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, application_name: &str) -> bool {
        self.0.iter().any(|a| a == application_name)
    }
}

/// The running transactions last read from `pg_stat_activity`, by full transaction id.
#[derive(Debug, Default)]
struct Running {
    by_xid: HashMap<i64, Owner>,
}

/// Whose a running transaction is.
#[derive(Debug, Clone)]
struct Owner {
    /// Connected to the same database as the reader that learnt it.
    same_database: bool,
    application_name: String,
}

/// What each PostgreSQL server's readers in this process have learnt, by connection URL:
/// a transaction id means the same to every store on one server.
static SERVERS: LazyLock<Mutex<HashMap<String, Arc<Mutex<Running>>>>> =
    LazyLock::new(Default::default);

impl Xids {
    /// For a store connected to `url` whose connections are named `app` (see the field).
    pub(crate) fn new(url: Option<&str>, app: Option<String>) -> Self {
        let server = match url {
            Some(url) => lock(&SERVERS).entry(url.to_owned()).or_default().clone(),
            None => Arc::default(),
        };
        Self {
            app,
            server,
            last_held: Mutex::new(None),
        }
    }

    /// Whether `owner`'s transactions can never write what a reader passing `pass` takes from
    /// this store's feed: they are another service's, or of a lane passed.
    fn is_foreign(&self, owner: &Owner, pass: &Pass) -> bool {
        let name = owner.application_name.as_str();
        !owner.same_database
            || self.app.as_ref().is_some_and(|app| {
                let ours = name == app
                    || name
                        .strip_prefix(app.as_str())
                        .is_some_and(|lane| lane.starts_with('/'));
                (name.starts_with("minqing/") && !ours) || pass.contains(name)
            })
    }

    /// The transactions known to be other services' (or of the lanes in `pass`), as the text of
    /// a PostgreSQL array: the parameter of [`horizon_cte`].
    pub fn param(&self, pass: &Pass) -> String {
        let running = lock(&self.server);
        let list = running
            .by_xid
            .iter()
            .filter(|(_, owner)| self.is_foreign(owner, pass))
            .map(|(xid, _)| xid.to_string())
            .collect::<Vec<_>>()
            .join(",");
        format!("{{{list}}}")
    }

    /// After a read passing `pass` was held back at `below` (the id of the running transaction
    /// that holds the horizon): whether that transaction is known to be another service's (or
    /// of a lane passed), so reading
    /// again at once will pass it. A transaction not known either way is looked up in
    /// `pg_stat_activity` the second time it is seen holding the feed: most are short and
    /// have ended by the next look, and are never looked up.
    pub async fn learn(&self, db: &Db, below: i64, pass: &Pass) -> Result<bool, StoreError> {
        if let Some(owner) = lock(&self.server).by_xid.get(&below) {
            return Ok(self.is_foreign(owner, pass));
        }
        {
            let mut last = lock(&self.last_held);
            if *last != Some(below) {
                *last = Some(below);
                return Ok(false);
            }
        }
        let rows = sqlx::query(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, \
                    a.backend_xid::text::bigint, \
                    a.datname IS NOT DISTINCT FROM current_database(), \
                    coalesce(a.application_name, '') \
             FROM pg_stat_activity a WHERE a.backend_xid IS NOT NULL",
        )
        .fetch_all(db.pool())
        .await?;
        let mut by_xid = HashMap::with_capacity(rows.len());
        for row in &rows {
            let next: i64 = row.try_get(0)?;
            let owner = Owner {
                same_database: row.try_get(2)?,
                application_name: row.try_get(3)?,
            };
            by_xid.insert(widen(row.try_get(1)?, next), owner);
        }
        let passed = by_xid.get(&below).is_some_and(|o| self.is_foreign(o, pass));
        tracing::debug!(
            store = db.name(),
            below,
            running = by_xid.len(),
            passed,
            "looked up the transactions holding the feed back"
        );
        // What is no longer running has ended, and no later snapshot will list it.
        lock(&self.server).by_xid = by_xid;
        Ok(passed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The full (epoch-qualified) id of a running transaction whose 32-bit id is `short`, given
/// `next`, the full id the server will assign next: the one within 2^31 of `next`.
fn widen(short: i64, next: i64) -> i64 {
    const WRAP: i64 = 1 << 32;
    let full = (next & !(WRAP - 1)) | (short & (WRAP - 1));
    if full > next + WRAP / 2 {
        full - WRAP
    } else if full < next - WRAP / 2 {
        full + WRAP
    } else {
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_id_widens_to_the_epoch_of_the_next_id() {
        let epoch = 7_i64 << 32;
        assert_eq!(widen(1_000, epoch + 5_000), epoch + 1_000);
        // Just before the next id wrapped into a new epoch.
        assert_eq!(widen(0xFFFF_FFF0, epoch + 16), epoch - 16);
        // Ids are never far ahead of the next one, but one read a moment later may be.
        assert_eq!(widen(20, epoch - 16), epoch + 20);
        assert_eq!(widen(3, 3), 3);
    }

    #[test]
    fn other_services_and_databases_are_foreign_to_a_service() {
        let xids = Xids::new(None, Some("minqing/intake".into()));
        let owner = |same_database, name: &str| Owner {
            same_database,
            application_name: name.into(),
        };
        {
            let mut running = lock(&xids.server);
            running.by_xid.insert(5, owner(true, "minqing/routing"));
            running.by_xid.insert(6, owner(true, "minqing/intake"));
            running.by_xid.insert(7, owner(true, "psql"));
            running
                .by_xid
                .insert(4_294_967_301, owner(false, "minqing/intake"));
            // This service's lanes are its own; a service whose name merely begins alike is not.
            running
                .by_xid
                .insert(8, owner(true, "minqing/intake/clusters"));
            running
                .by_xid
                .insert(9, owner(true, "minqing/intake/follow"));
            running.by_xid.insert(10, owner(true, "minqing/intakes"));
        }
        let ids = |param: String| {
            let mut ids: Vec<i64> = param
                .trim_matches(['{', '}'])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(xids.param(&Pass::default())), [5, 10, 4_294_967_301]);
        // A reader passing a lane passes that lane's transactions, and no other of ours.
        let pass = Pass::new(vec!["minqing/intake/clusters".into()]);
        assert_eq!(ids(xids.param(&pass)), [5, 8, 10, 4_294_967_301]);
        // A service whose URL names the application passes other databases' only.
        let named = Xids::new(None, None);
        *lock(&named.server) = std::mem::take(&mut lock(&xids.server));
        assert_eq!(named.param(&pass), "{4294967301}");
        assert_eq!(Xids::new(None, None).param(&Pass::default()), "{}");
    }
}
