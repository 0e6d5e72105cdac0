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
//! another service's is a fact for good, so readers keep what they learnt
//! ([`Xids`], one per [`Db`]) and pass it to each read as a parameter: the read itself stays as
//! cheap as before, and `pg_stat_activity` (a fraction of a millisecond) is consulted only when
//! a read was held back by a transaction not yet known either way. Any transaction not known
//! to be another's — this service's own, one whose backend is not found (it may have just
//! finished, its events not in the read's snapshot), one of a connection named otherwise —
//! holds the horizon as before.
//!
//! All of a read is one statement with one snapshot (`pg_current_snapshot` is the statement's
//! active snapshot), so the horizon and the rows returned agree.
//!
//! Hand-written: no crate reads PostgreSQL's snapshots this way.

use std::sync::Mutex;

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
#[derive(Debug, Default)]
pub struct Xids {
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    /// Running (or lately running) transactions of other services or databases.
    foreign: Vec<i64>,
    /// Running transactions that could write this feed.
    ours: Vec<i64>,
}

impl Xids {
    /// The transactions known to be other services', as the text of a PostgreSQL array: the
    /// parameter of [`horizon_cte`].
    pub fn param(&self) -> String {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let list = known
            .foreign
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        format!("{{{list}}}")
    }

    /// After a read was held back at `below` (the id of the running transaction that holds
    /// the horizon): whether that transaction turned out to be another service's, so reading
    /// again at once will pass it. Asks `pg_stat_activity` unless `below` is already known to
    /// be one of ours.
    pub async fn learn(&self, db: &Db, below: i64) -> Result<bool, StoreError> {
        {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if known.ours.contains(&below) {
                return Ok(false);
            }
            if known.foreign.contains(&below) {
                // Learnt meanwhile by another reader.
                return Ok(true);
            }
        }
        let rows = sqlx::query(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, \
                    a.backend_xid::text::bigint, \
                    (a.datname IS DISTINCT FROM current_database() \
                     OR (a.application_name LIKE 'minqing/%' \
                         AND a.application_name <> current_setting('application_name'))) \
             FROM pg_stat_activity a WHERE a.backend_xid IS NOT NULL",
        )
        .fetch_all(db.pool())
        .await?;
        let mut foreign = Vec::new();
        let mut ours = Vec::new();
        for row in &rows {
            let next: i64 = row.try_get(0)?;
            let xid = widen(row.try_get(1)?, next);
            if row.try_get::<bool, _>(2)? {
                foreign.push(xid);
            } else {
                ours.push(xid);
            }
        }
        let passed = foreign.contains(&below);
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        *known = Known { foreign, ours };
        Ok(passed)
    }
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
    fn the_parameter_is_a_postgres_array() {
        let xids = Xids::default();
        assert_eq!(xids.param(), "{}");
        xids.known.lock().unwrap().foreign = vec![5, 4_294_967_301];
        assert_eq!(xids.param(), "{5,4294967301}");
    }
}
