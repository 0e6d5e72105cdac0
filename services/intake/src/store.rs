//! Intake's storage. Functions that change state take the handler's `&mut Tx`, so the change
//! and its event commit together; reads take any executor.

use std::collections::HashSet;

use sqlx::{Any, AnyConnection, Executor, Row, any::AnyRow};

use crate::domain::{Case, CaseState, Cluster, Disposition, LatLng, Submission};
use minqing_kit::{
    db::{Backend, Db, MAX_STATEMENT_BYTES, Planning, Tx},
    error::StoreError,
    feed::{self, EventRow},
    time::Micros,
};

pub(crate) const MIGRATIONS: minqing_kit::db::Migrations = minqing_kit::db::Migrations {
    sqlite: &[
        (
            100,
            "intake tables",
            include_str!("../migrations/sqlite.sql"),
        ),
        (101, "cluster comparison text", COMPARE_TEXT_MIGRATION),
        (
            102,
            "no partial indexes on SQLite",
            SQLITE_FULL_INDEXES_MIGRATION,
        ),
        (
            103,
            "cluster membership apart from the case row",
            SQLITE_MEMBERSHIP_MIGRATION,
        ),
    ],
    postgres: &[
        (
            100,
            "intake tables",
            include_str!("../migrations/postgres.sql"),
        ),
        (101, "cluster comparison text", COMPARE_TEXT_MIGRATION),
        (
            102,
            "candidate indexes of open cases only",
            POSTGRES_OPEN_CANDIDATES_MIGRATION,
        ),
        (
            103,
            "cluster membership apart from the case row",
            POSTGRES_MEMBERSHIP_MIGRATION,
        ),
    ],
};

/// The candidate lookups want open cases only (`open_states`, 1 to 5): indexes of those alone
/// let a lookup at a building whose recent cases are all closed or referred find that at once,
/// instead of reading every one of them in the window to check its state (a building with
/// hundreds of reports in the window cost each new report's lookup hundreds of rows). A
/// state change already rewrites the case's index entries (the updates were seldom HOT), so
/// the condition costs the writes nothing measurable. PostgreSQL only, as SQLite re-plans
/// statements on tables with partial indexes (see [`SQLITE_FULL_INDEXES_MIGRATION`]).
const POSTGRES_OPEN_CANDIDATES_MIGRATION: &str = "
    DROP INDEX cases_same_building;
    DROP INDEX cases_nearby;
    CREATE INDEX cases_open_same_building ON cases (category, building, create_time)
        WHERE state IN (1, 2, 3, 4, 5);
    CREATE INDEX cases_open_nearby ON cases (category, lat_e6)
        WHERE lat_e6 IS NOT NULL AND state IN (1, 2, 3, 4, 5);
";

/// The words duplicate detection compares, kept beside the case so candidates need no
/// document parsing; and indexes that find the candidates (same building, or nearby) directly.
const COMPARE_TEXT_MIGRATION: &str = "
    ALTER TABLE cases ADD COLUMN compare_text TEXT NOT NULL DEFAULT '';
    DROP INDEX cases_category_time;
    CREATE INDEX cases_same_building ON cases (category, building, create_time);
    CREATE INDEX cases_nearby ON cases (category, lat_e6) WHERE lat_e6 IS NOT NULL;
";

/// SQLite plans a statement on a table with a partial index by comparing the statement's
/// bound values with the index's condition, and then must plan it again each time new values
/// are bound: every query on `cases` was prepared anew on every run (measured: a candidate
/// lookup 0.41 ms with the partial indexes, 0.13 ms without). The same indexes, whole.
/// PostgreSQL keeps its partial ones.
const SQLITE_FULL_INDEXES_MIGRATION: &str = "
    DROP INDEX cases_phone;
    DROP INDEX cases_cluster;
    DROP INDEX cases_nearby;
    CREATE INDEX cases_phone ON cases (reporter_phone);
    CREATE INDEX cases_cluster ON cases (cluster_id);
    CREATE INDEX cases_nearby ON cases (category, lat_e6);
";

macro_rules! membership_table {
    () => {
        "
    CREATE TABLE case_clusters (
        case_id TEXT PRIMARY KEY,
        cluster_id TEXT,
        cluster_version BIGINT NOT NULL,
        cluster_update_time BIGINT NOT NULL
    );
    INSERT INTO case_clusters (case_id, cluster_id, cluster_version, cluster_update_time)
        SELECT id, cluster_id, 0, update_time FROM cases WHERE cluster_id IS NOT NULL;
    DROP INDEX cases_cluster;
    ALTER TABLE cases DROP COLUMN cluster_id;
"
    };
}

/// A case's cluster membership is a row of its own (`case_clusters`, written only by
/// clustering): the clusterer then never rewrites nor locks the case rows that intake's
/// follower of routing's feed changes, and a membership change writes a narrow row with one
/// index entry instead of the case's wide row and its ten. The row exists once the case has
/// been in a cluster; `cluster_version` counts its changes, and a case's etag is its own
/// version plus that count, so it still changes whenever either does. Every write adds one
/// to the version it read, which is how a write checks it is still at that version. The
/// members of a cluster are found by a partial index.
const POSTGRES_MEMBERSHIP_MIGRATION: &str = concat!(
    membership_table!(),
    "    CREATE INDEX case_clusters_cluster ON case_clusters (cluster_id) WHERE cluster_id IS NOT NULL;
"
);

/// [`POSTGRES_MEMBERSHIP_MIGRATION`], with a whole index (see [`SQLITE_FULL_INDEXES_MIGRATION`]).
const SQLITE_MEMBERSHIP_MIGRATION: &str = concat!(
    membership_table!(),
    "    CREATE INDEX case_clusters_cluster ON case_clusters (cluster_id);
"
);

/// A case's columns, read `FROM` [`CASES`]: its membership's at the end (none: no cluster,
/// version 0).
const COLUMNS: &str = "id, request_id, recorded_by, state, disposition, handling_unit, due_time, \
    cluster_id, supplement_count, withdraw_reason, create_time, update_time, version, submission, \
    COALESCE(cluster_version, 0), COALESCE(cluster_update_time, 0)";

/// The cases with their cluster membership.
const CASES: &str = "cases LEFT JOIN case_clusters ON case_clusters.case_id = cases.id";

/// Degrees as integer micro-degrees (about 0.1 m). Coordinates are stored this way because
/// sqlx 0.9's `Any` driver sends a NULL `f64` to PostgreSQL as a float4 parameter, which
/// poisons the cached statement for every later non-NULL value: nullable float columns are
/// not used anywhere.
pub fn e6(degrees: f64) -> i64 {
    (degrees * 1e6).round() as i64
}

fn decode_error(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Other(sqlx::Error::Decode(format!("{what}: {err}").into()))
}

fn case_from_row(row: &AnyRow) -> Result<Case, StoreError> {
    let state: i64 = row.try_get(3)?;
    let disposition: i64 = row.try_get(4)?;
    let submission: String = row.try_get(13)?;
    Ok(Case {
        id: row.try_get(0)?,
        request_id: row.try_get(1)?,
        recorded_by: row.try_get(2)?,
        state: CaseState::from_wire(state as i32)
            .ok_or_else(|| decode_error("case state", state))?,
        disposition: Disposition::from_wire(disposition as i32),
        handling_unit: row.try_get(5)?,
        due_time: row.try_get(6)?,
        cluster: row.try_get(7)?,
        supplement_count: row.try_get::<i64, _>(8)? as i32,
        withdraw_reason: row.try_get(9)?,
        create_time: row.try_get(10)?,
        update_time: row.try_get::<i64, _>(11)?.max(row.try_get(15)?),
        version: row.try_get(12)?,
        cluster_version: row.try_get(14)?,
        submission: serde_json::from_str::<Submission>(&submission)
            .map_err(|e| decode_error("case submission", e))?,
    })
}

/// What an idempotent insert found.
#[derive(Debug)]
pub enum Inserted {
    /// The case is new.
    New,
    /// The request id was used before: the earlier request's hash and case.
    Existing {
        /// Hash of the earlier request.
        request_hash: String,
        /// The case it created.
        case: Box<Case>,
    },
}

/// The columns a new case writes, in `bind_case` order.
const CASE_INSERT_COLUMNS: &str = "id, recorded_by, request_id, request_hash, channel, \
    category, urgency, district, street, community, grid, building, lat_e6, lng_e6, reporter_phone, \
    state, disposition, handling_unit, due_time, supplement_count, withdraw_reason, \
    create_time, update_time, version, submission, compare_text";

/// How many values `bind_case` binds.
const CASE_INSERT_VALUES: usize = 26;

const INSERT_CASE: &str = "INSERT INTO cases (id, recorded_by, request_id, request_hash, channel, \
    category, urgency, district, street, community, grid, building, lat_e6, lng_e6, reporter_phone, \
    state, disposition, handling_unit, due_time, supplement_count, withdraw_reason, \
    create_time, update_time, version, submission, compare_text) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
    $19, $20, $21, $22, $23, $24, $25, $26) \
    ON CONFLICT (recorded_by, request_id) DO NOTHING";

/// Binds a new case's 26 values, in `INSERT_CASE` order.
fn bind_case<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    case: &Case,
    request_hash: &str,
) -> Result<sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>, StoreError> {
    let s = &case.submission;
    let submission = serde_json::to_string(s).map_err(|e| decode_error("case submission", e))?;
    let phone = s
        .reporter
        .contact
        .as_ref()
        .map(|c| c.phone.clone())
        .unwrap_or_default();
    Ok(query
        .bind(case.id.clone())
        .bind(case.recorded_by.clone())
        .bind(case.request_id.clone())
        .bind(request_hash.to_string())
        .bind(i64::from(s.channel.wire()))
        .bind(s.category.clone())
        .bind(i64::from(s.urgency.wire()))
        .bind(s.place.district.clone())
        .bind(s.place.street.clone())
        .bind(s.place.community.clone())
        .bind(s.place.grid.clone())
        .bind(s.place.building.clone())
        .bind(s.location.map(|l| e6(l.latitude)))
        .bind(s.location.map(|l| e6(l.longitude)))
        .bind(phone)
        .bind(i64::from(case.state.wire()))
        .bind(case.disposition.map_or(0, |d| i64::from(d.wire())))
        .bind(case.handling_unit.clone())
        .bind(case.due_time)
        .bind(i64::from(case.supplement_count))
        .bind(case.withdraw_reason.clone())
        .bind(case.create_time)
        .bind(case.update_time)
        .bind(case.version)
        .bind(submission)
        .bind(crate::cluster::comparable_text(s)))
}

/// Accepts a new case and its `CaseSubmitted` event together, unless `(recorded_by,
/// request_id)` was used before (then nothing is written and the earlier case is returned).
pub async fn submit_case(
    db: &Db,
    case: &Case,
    request_hash: &str,
    event: EventRow,
) -> Result<Inserted, StoreError> {
    let inserted = match db.backend() {
        Backend::Postgres => {
            let new = insert_with_events(db.pool(), &[(case, request_hash, &event)]).await?;
            if !new.is_empty() {
                db.events_committed();
            }
            !new.is_empty()
        }
        Backend::Sqlite => {
            let mut tx = db.begin().await?;
            let done = bind_case(sqlx::query(INSERT_CASE), case, request_hash)?
                .execute(tx.conn())
                .await?;
            if done.rows_affected() == 1 {
                feed::append_row(&mut tx, event).await?;
                tx.commit().await?;
                true
            } else {
                tx.rollback().await?;
                false
            }
        }
    };
    if inserted {
        return Ok(Inserted::New);
    }
    existing_case(db, &case.recorded_by, &case.request_id).await
}

/// A new case waiting to be written with its `CaseSubmitted` event.
#[derive(Debug)]
pub struct NewCase {
    /// The case.
    pub case: Case,
    /// Hash of the request that made it (for idempotent retries).
    pub request_hash: String,
    /// Its `CaseSubmitted` event.
    pub event: EventRow,
}

/// Cases per multi-row statement at most: 27 values each (36 with its event) stays far below
/// SQLite's 32,766 and PostgreSQL's 65,535 bind parameters.
const CASES_PER_STATEMENT: usize = 500;

/// A new case's approximate bytes on the wire, with its event: the text twice (in the
/// submission document and the comparable text), the attachments, the fixed columns, and the
/// event's payload.
fn approx_bytes(case: &Case, event: &EventRow) -> usize {
    let s = &case.submission;
    750 + 2 * (s.title.len() + s.description.len())
        + s.address.len()
        + s.attachments.len() * 200
        + event.payload.len()
}

/// Splits a batch into statements under [`CASES_PER_STATEMENT`] cases and, by
/// [`approx_bytes`], under the kit's `MAX_STATEMENT_BYTES`, each of a
/// [`statement_size`](minqing_kit::db::statement_size) so that its text is one the
/// connection has prepared already.
fn statement_chunks(batch: &[NewCase]) -> Vec<&[NewCase]> {
    let sizes: Vec<usize> = batch
        .iter()
        .map(|item| approx_bytes(&item.case, &item.event))
        .collect();
    minqing_kit::db::sized_chunks(batch, &sizes, CASES_PER_STATEMENT)
}

/// PostgreSQL: writes `cases` and the events of those that are new with one statement (a
/// data-modifying CTE: the cases' insert skips a used `(recorded_by, request_id)`, and the
/// events' insert takes only the events of the cases it returned). Run on the pool it is one
/// implicit transaction, one round trip and one durable commit for all of them; PostgreSQL's
/// fixed cost of a statement on `cases` (opening and locking the table and its ten indexes,
/// starting the executor) is paid once, not once a case. Returns the ids of the new cases.
async fn insert_with_events<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    cases: &[(&Case, &str, &EventRow)],
) -> Result<HashSet<String>, StoreError> {
    const EVENT_VALUES: usize = 9;
    let n = cases.len();
    let sql = format!(
        "WITH c AS (INSERT INTO cases ({CASE_INSERT_COLUMNS}) VALUES {} \
            ON CONFLICT (recorded_by, request_id) DO NOTHING RETURNING id), \
         e AS (INSERT INTO events ({events}) SELECT {events} FROM (VALUES {}) \
            AS v (case_id, {events}) WHERE v.case_id IN (SELECT id FROM c)) \
         SELECT id FROM c",
        minqing_kit::db::values_list(n, CASE_INSERT_VALUES),
        minqing_kit::db::values_list_after(n * CASE_INSERT_VALUES, n, EVENT_VALUES),
        events = EventRow::COLUMNS,
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (case, request_hash, _) in cases {
        query = bind_case(query, case, request_hash)?;
    }
    for (case, _, event) in cases {
        query = (*event).clone().bind(query.bind(case.id.clone()));
    }
    let mut inserted = HashSet::with_capacity(n);
    for row in query.fetch_all(executor).await? {
        inserted.insert(row.try_get::<String, _>(0)?);
    }
    Ok(inserted)
}

/// Accepts many new cases and their events durably, at once (group commit). A case whose
/// `(recorded_by, request_id)` was used before — by an earlier request or by an earlier case
/// of the same batch — writes nothing and gets the earlier case back, exactly as
/// [`submit_case`] would. The answers are in the order of `batch`.
///
/// On PostgreSQL each statement writes its cases and their events ([`insert_with_events`]);
/// a batch of one statement needs no transaction around it, a larger one commits its
/// statements together. On SQLite, one transaction: a multi-row insert of the cases, one of
/// the events of those that were new.
pub async fn submit_cases(db: &Db, batch: &[NewCase]) -> Result<Vec<Inserted>, StoreError> {
    let chunks = statement_chunks(batch);
    let mut inserted: HashSet<String> = HashSet::with_capacity(batch.len());
    match db.backend() {
        Backend::Postgres => {
            fn items(chunk: &[NewCase]) -> Vec<(&Case, &str, &EventRow)> {
                chunk
                    .iter()
                    .map(|i| (&i.case, i.request_hash.as_str(), &i.event))
                    .collect()
            }
            if let [chunk] = chunks.as_slice() {
                inserted = insert_with_events(db.pool(), &items(chunk)).await?;
            } else {
                let mut tx = db.begin().await?;
                for chunk in chunks {
                    inserted.extend(insert_with_events(tx.conn(), &items(chunk)).await?);
                }
                tx.commit().await?;
            }
            if !inserted.is_empty() {
                db.events_committed();
            }
        }
        Backend::Sqlite => {
            let mut tx = db.begin().await?;
            for chunk in chunks {
                let values =
                    minqing_kit::db::values_list_for(db.backend(), chunk.len(), CASE_INSERT_VALUES);
                let sql = format!(
                    "INSERT INTO cases ({CASE_INSERT_COLUMNS}) VALUES {values} \
                     ON CONFLICT (recorded_by, request_id) DO NOTHING RETURNING id"
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for item in chunk {
                    query = bind_case(query, &item.case, &item.request_hash)?;
                }
                for row in query.fetch_all(tx.conn()).await? {
                    inserted.insert(row.try_get::<String, _>(0)?);
                }
            }
            let events = batch
                .iter()
                .filter(|item| inserted.contains(&item.case.id))
                .map(|item| item.event.clone())
                .collect();
            feed::append_rows(&mut tx, events).await?;
            tx.commit().await?;
        }
    }
    let mut out = Vec::with_capacity(batch.len());
    for item in batch {
        out.push(if inserted.contains(&item.case.id) {
            Inserted::New
        } else {
            existing_case(db, &item.case.recorded_by, &item.case.request_id).await?
        });
    }
    Ok(out)
}

/// The case an earlier request with this id made, for an idempotent retry.
async fn existing_case(
    db: &Db,
    recorded_by: &str,
    request_id: &str,
) -> Result<Inserted, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, request_hash FROM {CASES} WHERE recorded_by = $1 AND request_id = $2"
    )))
    .bind(recorded_by)
    .bind(request_id)
    .fetch_one(db.pool())
    .await?;
    Ok(Inserted::Existing {
        request_hash: row.try_get(16)?,
        case: Box::new(case_from_row(&row)?),
    })
}

/// One case.
pub async fn get_case<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<Case>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM {CASES} WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(case_from_row).transpose()
}

/// Writes a case's mutable facts (not its cluster: [`set_membership`]) if it is still at
/// `expected_version`; false if it changed meanwhile (the caller retries).
pub async fn update_case(
    tx: &mut Tx,
    case: &Case,
    expected_version: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE cases SET state = $2, disposition = $3, handling_unit = $4, due_time = $5, \
            supplement_count = $6, withdraw_reason = $7, update_time = $8, version = $9 \
         WHERE id = $1 AND version = $10",
    )
    .bind(&case.id)
    .bind(i64::from(case.state.wire()))
    .bind(case.disposition.map_or(0, |d| i64::from(d.wire())))
    .bind(&case.handling_unit)
    .bind(case.due_time)
    .bind(i64::from(case.supplement_count))
    .bind(&case.withdraw_reason)
    .bind(case.update_time)
    .bind(case.version)
    .bind(expected_version)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The cases among `ids` that exist, by id, read with one statement per few hundred ids.
/// With `lock` (PostgreSQL; SQLite has one writer at a time anyway) the rows are locked until
/// `tx` ends, in id order, so that consumers applying batches to the same cases wait for each
/// other instead of failing each other's version checks, and never deadlock.
pub async fn get_cases(
    tx: &mut Tx,
    ids: &[String],
    lock: bool,
) -> Result<std::collections::HashMap<String, Case>, StoreError> {
    let (ids, lock) = ordered_ids(tx, ids, lock);
    let mut out = std::collections::HashMap::new();
    for chunk in padded_chunks(&ids) {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM {CASES} WHERE id IN ({}) ORDER BY id{lock}",
            minqing_kit::db::placeholders(chunk.len())
        )));
        for id in chunk {
            query = query.bind(id.clone());
        }
        for row in query.fetch_all(tx.conn()).await? {
            let case = case_from_row(&row)?;
            out.insert(case.id.clone(), case);
        }
    }
    Ok(out)
}

/// What duplicate clustering reads of a case and changes: its state, and its membership (its
/// row in `case_clusters`, which only clustering writes), not its submission (which it has
/// from the event) nor its handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Id.
    pub id: String,
    /// State.
    pub state: CaseState,
    /// Cluster id.
    pub cluster: Option<String>,
    /// Accepted.
    pub create_time: Micros,
    /// Membership last changed (0: never in a cluster).
    pub update_time: Micros,
    /// Incremented by every change of the membership (0: never in a cluster).
    pub version: i64,
}

/// `ids` sorted without repeats, and the clause that locks the rows read (with `lock`, on
/// PostgreSQL; SQLite has one writer at a time anyway).
fn ordered_ids(tx: &Tx, ids: &[String], lock: bool) -> (Vec<String>, &'static str) {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    let lock = if lock && tx.backend() == Backend::Postgres {
        " FOR UPDATE OF cases"
    } else {
        ""
    };
    (ids, lock)
}

/// Ids a statement looks up at most; lists are padded up to the next of these sizes (repeating
/// an id), so each connection prepares a handful of statements once instead of one per length.
const LOOKUP_SIZES: [usize; 5] = [1, 4, 16, 64, 256];

/// `ids` in statements of [`LOOKUP_SIZES`], each padded with its first id.
fn padded_chunks(ids: &[String]) -> impl Iterator<Item = Vec<&String>> {
    let max = LOOKUP_SIZES[LOOKUP_SIZES.len() - 1];
    ids.chunks(max).map(move |chunk| {
        let size = LOOKUP_SIZES
            .iter()
            .copied()
            .find(|s| *s >= chunk.len())
            .unwrap_or(max);
        let mut out: Vec<&String> = chunk.iter().collect();
        out.resize(size, &chunk[0]);
        out
    })
}

/// The memberships of the cases among `ids` that exist, by id. Nothing is locked: only
/// clustering changes memberships, and it writes them at the versions read
/// ([`set_memberships`]), so a change made meanwhile fails the write instead. A case's state
/// read here may be changed meanwhile by intake's follower of routing's feed: a report
/// closed while the clusterer's batch runs can still be linked, as it would have been had
/// the batch run a moment earlier, and the two consumers never wait for each other.
pub async fn get_memberships(
    tx: &mut Tx,
    ids: &[String],
) -> Result<std::collections::HashMap<String, Membership>, StoreError> {
    let (ids, _) = ordered_ids(tx, ids, false);
    let mut out = std::collections::HashMap::new();
    for chunk in padded_chunks(&ids) {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, state, cluster_id, create_time, COALESCE(cluster_update_time, 0), \
                COALESCE(cluster_version, 0) FROM {CASES} WHERE id IN ({})",
            minqing_kit::db::placeholders(chunk.len())
        )));
        for id in chunk {
            query = query.bind(id.clone());
        }
        for row in query.fetch_all(tx.conn()).await? {
            let state: i64 = row.try_get(1)?;
            let m = Membership {
                id: row.try_get(0)?,
                state: CaseState::from_wire(state as i32)
                    .ok_or_else(|| decode_error("case state", state))?,
                cluster: row.try_get(2)?,
                create_time: row.try_get(3)?,
                update_time: row.try_get(4)?,
                version: row.try_get(5)?,
            };
            out.insert(m.id.clone(), m);
        }
    }
    Ok(out)
}

/// Writes each membership (its cluster, update time and version, one more than the version
/// read) if it is still at the version read, with multi-row statements: a case never in a
/// cluster (version 0) gets its row, which a row made meanwhile refuses. Returns how many
/// were written; fewer than given means some changed meanwhile (the caller retries).
pub async fn set_memberships(tx: &mut Tx, cases: &[&Membership]) -> Result<u64, StoreError> {
    let mut cases = cases.to_vec();
    cases.sort_by(|a, b| a.id.cmp(&b.id));
    minqing_kit::db::execute_rows(
        tx.conn(),
        4,
        cases,
        |m| 80 + m.id.len() + m.cluster.as_ref().map_or(0, String::len),
        |values| {
            format!(
                "INSERT INTO case_clusters (case_id, cluster_id, cluster_version, cluster_update_time) \
                 VALUES {values} \
                 ON CONFLICT (case_id) DO UPDATE SET cluster_id = excluded.cluster_id, \
                    cluster_version = excluded.cluster_version, \
                    cluster_update_time = excluded.cluster_update_time \
                 WHERE case_clusters.cluster_version = excluded.cluster_version - 1"
            )
        },
        |q, m| {
            q.bind(m.id.clone())
                .bind(m.cluster.clone())
                .bind(m.version)
                .bind(m.update_time)
        },
    )
    .await
}

/// [`set_memberships`] for one case: puts it into `cluster` (or none) at `now` if its
/// membership is still at `case.cluster_version`, and updates `case` to match. False if it
/// changed meanwhile (the caller retries).
pub async fn set_membership(
    tx: &mut Tx,
    case: &mut Case,
    cluster: Option<&str>,
    now: Micros,
) -> Result<bool, StoreError> {
    let m = Membership {
        id: case.id.clone(),
        state: case.state,
        cluster: cluster.map(str::to_owned),
        create_time: case.create_time,
        update_time: now,
        version: case.cluster_version + 1,
    };
    if set_memberships(tx, &[&m]).await? != 1 {
        return Ok(false);
    }
    case.cluster = m.cluster;
    case.cluster_version = m.version;
    case.update_time = case.update_time.max(now);
    Ok(true)
}

/// [`update_case`] for many cases with multi-row statements: each `(case, expected_version)`
/// is written if the case is still at that version. Returns how many were written; fewer
/// than given means some changed meanwhile (the caller retries). Planned at each run on
/// PostgreSQL: the plan it keeps from a small table joins by scanning it.
pub async fn update_cases(tx: &mut Tx, cases: &[(&Case, i64)]) -> Result<u64, StoreError> {
    // In id order, as rows are locked everywhere, so concurrent batches never deadlock.
    let mut cases = cases.to_vec();
    cases.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    minqing_kit::db::execute_rows_planned(
        tx.conn(),
        Planning::EachRun,
        10,
        cases,
        |(case, _)| 200 + case.handling_unit.len() + case.withdraw_reason.len(),
        |values| {
            format!(
                "WITH v (id, state, disposition, handling_unit, due_time, supplement_count, \
                    withdraw_reason, update_time, version, expected) AS (VALUES {values}) \
                 UPDATE cases SET state = v.state, disposition = v.disposition, \
                    handling_unit = v.handling_unit, due_time = v.due_time, \
                    supplement_count = v.supplement_count, withdraw_reason = v.withdraw_reason, \
                    update_time = v.update_time, version = v.version \
                 FROM v WHERE cases.id = v.id AND cases.version = v.expected"
            )
        },
        |q, (case, expected)| {
            q.bind(case.id.clone())
                .bind(i64::from(case.state.wire()))
                .bind(case.disposition.map_or(0, |d| i64::from(d.wire())))
                .bind(case.handling_unit.clone())
                .bind(case.due_time)
                .bind(i64::from(case.supplement_count))
                .bind(case.withdraw_reason.clone())
                .bind(case.update_time)
                .bind(case.version)
                .bind(expected)
        },
    )
    .await
}

/// A list filter, already checked.
#[derive(Debug, Default, Clone)]
pub struct CaseFilter {
    /// States (any of).
    pub states: Vec<CaseState>,
    /// Channels (any of), as wire numbers.
    pub channels: Vec<i32>,
    /// Category.
    pub category: Option<String>,
    /// Place: (column, code).
    pub place: Option<(&'static str, String)>,
    /// Place scope of the caller: (column, code).
    pub scope: Option<(&'static str, String)>,
    /// Accepted at or after.
    pub after: Option<Micros>,
    /// Accepted before.
    pub before: Option<Micros>,
    /// Reporter phone.
    pub phone: Option<String>,
    /// Cluster id.
    pub cluster: Option<String>,
    /// Keyset: ids below this one.
    pub below_id: Option<String>,
}

/// Cases matching `filter`, newest first (by id, which is time-ordered), up to `limit`.
pub async fn list_cases<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    filter: &CaseFilter,
    limit: i64,
) -> Result<Vec<Case>, StoreError> {
    // Placeholders are numbered as values are pushed; every value is bound, never inlined.
    let mut clauses: Vec<String> = Vec::new();
    let mut texts: Vec<(usize, String)> = Vec::new();
    let mut ints: Vec<(usize, i64)> = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if !filter.states.is_empty() {
        let list: Vec<String> = filter
            .states
            .iter()
            .map(|s| {
                let i = next();
                ints.push((i, i64::from(s.wire())));
                format!("${i}")
            })
            .collect();
        clauses.push(format!("state IN ({})", list.join(", ")));
    }
    if !filter.channels.is_empty() {
        let list: Vec<String> = filter
            .channels
            .iter()
            .map(|c| {
                let i = next();
                ints.push((i, i64::from(*c)));
                format!("${i}")
            })
            .collect();
        clauses.push(format!("channel IN ({})", list.join(", ")));
    }
    for (column, code) in [&filter.place, &filter.scope].into_iter().flatten() {
        let i = next();
        texts.push((i, code.clone()));
        clauses.push(format!("{column} = ${i}"));
    }
    for (column, value) in [
        ("category", &filter.category),
        ("reporter_phone", &filter.phone),
        ("cluster_id", &filter.cluster),
    ] {
        if let Some(value) = value {
            let i = next();
            texts.push((i, value.clone()));
            clauses.push(format!("{column} = ${i}"));
        }
    }
    if let Some(after) = filter.after {
        let i = next();
        ints.push((i, after));
        clauses.push(format!("create_time >= ${i}"));
    }
    if let Some(before) = filter.before {
        let i = next();
        ints.push((i, before));
        clauses.push(format!("create_time < ${i}"));
    }
    if let Some(below) = &filter.below_id {
        let i = next();
        texts.push((i, below.clone()));
        clauses.push(format!("id < ${i}"));
    }
    let limit_at = next();
    let where_clause = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let sql =
        format!("SELECT {COLUMNS} FROM {CASES} {where_clause} ORDER BY id DESC LIMIT ${limit_at}");
    // Bind in placeholder order.
    enum Value {
        Text(String),
        Int(i64),
    }
    let mut values: Vec<(usize, Value)> = texts
        .into_iter()
        .map(|(i, t)| (i, Value::Text(t)))
        .chain(ints.into_iter().map(|(i, v)| (i, Value::Int(v))))
        .collect();
    values.sort_by_key(|(i, _)| *i);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (_, value) in values {
        query = match value {
            Value::Text(t) => query.bind(t),
            Value::Int(v) => query.bind(v),
        };
    }
    let rows = query.bind(limit).fetch_all(executor).await?;
    rows.iter().map(case_from_row).collect()
}

/// Records a supplement's request id; the earlier request's hash if it was used before.
pub async fn insert_supplement(
    tx: &mut Tx,
    case_id: &str,
    request_id: &str,
    request_hash: &str,
    now: Micros,
) -> Result<Option<String>, StoreError> {
    let done = sqlx::query(
        "INSERT INTO supplements (case_id, request_id, request_hash, create_time) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (case_id, request_id) DO NOTHING",
    )
    .bind(case_id)
    .bind(request_id)
    .bind(request_hash)
    .bind(now)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        return Ok(None);
    }
    let hash: String = sqlx::query_scalar(
        "SELECT request_hash FROM supplements WHERE case_id = $1 AND request_id = $2",
    )
    .bind(case_id)
    .bind(request_id)
    .fetch_one(tx.conn())
    .await?;
    Ok(Some(hash))
}

/// A candidate for the same issue: a recent case of the same category nearby.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Case id.
    pub id: String,
    /// Its building.
    pub building: String,
    /// Its coordinates.
    pub location: Option<LatLng>,
    /// The words compared.
    pub text: String,
    /// When it was accepted.
    pub create_time: Micros,
}

/// How many of the most recent candidates one report is compared with, at its building and
/// nearby each.
pub const CANDIDATES: i64 = 20;

/// The candidate columns, followed (by the caller) by the lookup's tag and `FROM`.
const CANDIDATE_SELECT_TAGGED: &str =
    "SELECT id, building, lat_e6, lng_e6, compare_text, create_time,";

fn open_states() -> String {
    [
        CaseState::Submitted,
        CaseState::Routed,
        CaseState::InProgress,
        CaseState::AwaitingPapers,
        CaseState::Escalated,
    ]
    .map(|s| s.wire().to_string())
    .join(", ")
}

fn candidate_from_row(row: &AnyRow) -> Result<Candidate, StoreError> {
    let lat: Option<i64> = row.try_get(2)?;
    let lng: Option<i64> = row.try_get(3)?;
    Ok(Candidate {
        id: row.try_get(0)?,
        building: row.try_get(1)?,
        location: lat.zip(lng).map(|(lat, lng)| LatLng {
            latitude: lat as f64 / 1e6,
            longitude: lng as f64 / 1e6,
        }),
        text: row.try_get(4)?,
        create_time: row.try_get(5)?,
    })
}

/// Where one report's candidates are looked for.
#[derive(Debug, Clone, Copy)]
pub enum Probe<'a> {
    /// The `limit` most recent open cases of `category` at `building`.
    Building {
        /// Category.
        category: &'a str,
        /// Building code.
        building: &'a str,
        /// How many at most.
        limit: i64,
    },
    /// The [`CANDIDATES`] most recent open cases of `category` within a bounding box a little
    /// larger than `meters` around `at` (the exact distance is the caller's).
    Nearby {
        /// Category.
        category: &'a str,
        /// Centre.
        at: LatLng,
        /// Radius.
        meters: f64,
    },
}

/// A probe over the open cases accepted in `[since, before)` — strictly earlier than the report
/// `(before, before_id)`, so each report is judged against earlier ones only and the outcome
/// does not depend on how far the consumer lags. Each is one indexed lookup
/// (`cases_same_building`, `cases_nearby`) of the most recent.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    /// Where.
    pub probe: Probe<'a>,
    /// Accepted at or after.
    pub since: Micros,
    /// Accepted before `(create_time, id)`.
    pub before: (Micros, &'a str),
}

impl Lookup<'_> {
    /// The most candidates it finds.
    fn limit(&self) -> i64 {
        match self.probe {
            Probe::Building { limit, .. } => limit,
            Probe::Nearby { .. } => CANDIDATES,
        }
    }
}

/// Lookups one statement carries at most (each is a sub-select of ~400 bytes with its values).
const LOOKUPS_PER_STATEMENT: usize = 16;
/// On SQLite a statement carries 4 or 16 lookups, padded with lookups that find nothing, so
/// only a few statement texts exist: each is prepared once per connection and then reused from
/// the statement cache (preparing a 16-part statement costs SQLite more than running it, and
/// every statement is a round trip to the connection's worker thread). PostgreSQL plans a
/// many-part statement at nearly every run, which costs its CPU more than the round trips of
/// one prepared single lookup each: one lookup a statement there.
const SQLITE_LOOKUP_STATEMENT_SIZES: &[usize] = &[4, LOOKUPS_PER_STATEMENT];
const POSTGRES_LOOKUP_STATEMENT_SIZES: &[usize] = &[1];
const _: () = assert!(LOOKUPS_PER_STATEMENT * 512 <= MAX_STATEMENT_BYTES);

/// Lookups that find nothing (no case has an empty category), to pad a statement.
const NO_LOOKUPS: [Lookup<'static>; 2] = [
    Lookup {
        probe: Probe::Building {
            category: "",
            building: "",
            limit: 0,
        },
        since: 0,
        before: (0, ""),
    },
    Lookup {
        probe: Probe::Nearby {
            category: "",
            at: LatLng {
                latitude: 0.0,
                longitude: 0.0,
            },
            meters: 0.0,
        },
        since: 0,
        before: (0, ""),
    },
];

/// Each lookup's candidates, newest first: a statement for many lookups (a `UNION ALL` of
/// one indexed, limited sub-select each, tagged with the lookup's position), so a batch of
/// reports costs a round trip or two rather than one per report.
pub async fn candidates(
    conn: &mut AnyConnection,
    lookups: &[Lookup<'_>],
) -> Result<Vec<Vec<Candidate>>, StoreError> {
    let mut out: Vec<Vec<Candidate>> = vec![Vec::new(); lookups.len()];
    let states = open_states();
    let sizes = if conn.backend_name() == "PostgreSQL" {
        POSTGRES_LOOKUP_STATEMENT_SIZES
    } else {
        SQLITE_LOOKUP_STATEMENT_SIZES
    };
    let per_statement = sizes.iter().copied().max().unwrap_or(1);
    // Lookups of one kind per statement (so its text depends on its size only), each with
    // its place in `lookups`.
    let (at_building, nearby): (Vec<_>, Vec<_>) = lookups
        .iter()
        .enumerate()
        .partition(|(_, l)| matches!(l.probe, Probe::Building { .. }));
    let chunks = at_building
        .chunks(per_statement)
        .map(|c| (c, NO_LOOKUPS[0]))
        .chain(nearby.chunks(per_statement).map(|c| (c, NO_LOOKUPS[1])));
    for (chunk, pad) in chunks {
        let size = sizes
            .iter()
            .copied()
            .find(|s| *s >= chunk.len())
            .unwrap_or(per_statement);
        let places: Vec<usize> = chunk.iter().map(|(at, _)| *at).collect();
        let limits: Vec<i64> = chunk.iter().map(|(_, l)| l.limit()).collect();
        // The statement's one LIMIT, written as a number: SQLite plans a statement whose
        // LIMIT is a bound value again at every run (it plans with the value). A few sizes
        // only, so only a few statement texts exist; each lookup's own limit is applied to
        // its rows below.
        let most = limits.iter().copied().max().unwrap_or(CANDIDATES).max(1);
        // (PostgreSQL's statements carry one lookup: its own limit, no rows to spare.)
        let cap = if sizes == POSTGRES_LOOKUP_STATEMENT_SIZES {
            most.unsigned_abs()
        } else {
            most.max(16).unsigned_abs().next_power_of_two()
        };
        let chunk: Vec<Lookup<'_>> = chunk
            .iter()
            .map(|(_, l)| **l)
            .chain(std::iter::repeat(pad))
            .take(size)
            .collect();
        let mut parts = Vec::with_capacity(chunk.len());
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        for (i, l) in chunk.iter().enumerate() {
            // The tag is the lookup's place in the statement, so the text is the same for
            // every statement of this size.
            let k = i;
            let place = match l.probe {
                Probe::Building { .. } => format!("building = {}", next()),
                Probe::Nearby { .. } => format!(
                    "lat_e6 BETWEEN {} AND {} AND lng_e6 BETWEEN {} AND {}",
                    next(),
                    next(),
                    next(),
                    next()
                ),
            };
            let (category, since, before, before_id) = (next(), next(), next(), next());
            parts.push(format!(
                "SELECT * FROM ({CANDIDATE_SELECT_TAGGED} CAST({k} AS BIGINT) AS k FROM cases \
                 WHERE category = {category} AND {place} AND create_time >= {since} \
                 AND (create_time < {before} OR (create_time = {before} AND id < {before_id})) \
                 AND state IN ({states}) ORDER BY create_time DESC, id DESC LIMIT {cap}) AS t{k}"
            ));
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(parts.join(" UNION ALL ")));
        for l in &chunk {
            let category = match l.probe {
                Probe::Building {
                    category, building, ..
                } => {
                    query = query.bind(building.to_string());
                    category
                }
                Probe::Nearby {
                    category,
                    at,
                    meters,
                } => {
                    let dlat = meters / 111_000.0 * 1.1;
                    let dlng = dlat / at.latitude.to_radians().cos().max(0.01);
                    query = query
                        .bind(e6(at.latitude - dlat))
                        .bind(e6(at.latitude + dlat))
                        .bind(e6(at.longitude - dlng))
                        .bind(e6(at.longitude + dlng));
                    category
                }
            };
            query = query
                .bind(category.to_string())
                .bind(l.since)
                .bind(l.before.0)
                .bind(l.before.1.to_string());
        }
        for row in query.fetch_all(&mut *conn).await? {
            let k: i64 = row.try_get(6)?;
            let at = usize::try_from(k).ok().and_then(|k| places.get(k));
            if let Some(list) = at.and_then(|k| out.get_mut(*k)) {
                list.push(candidate_from_row(&row)?);
            }
        }
        // Newest first within each lookup (a UNION ALL keeps no order across its parts), and
        // at most the lookup's own limit.
        for (at, limit) in places.iter().zip(limits) {
            let list = &mut out[*at];
            list.sort_by(|a, b| (b.create_time, &b.id).cmp(&(a.create_time, &a.id)));
            list.truncate(usize::try_from(limit).unwrap_or(0));
        }
    }
    Ok(out)
}

/// Creates clusters, a multi-row statement for many.
pub async fn create_clusters(tx: &mut Tx, clusters: &[Cluster]) -> Result<(), StoreError> {
    minqing_kit::db::execute_rows(
        tx.conn(),
        4,
        clusters,
        |c| 80 + c.id.len() + c.category.len() + c.reason.len(),
        |values| {
            format!("INSERT INTO clusters (id, category, reason, create_time) VALUES {values}")
        },
        |q, c| {
            q.bind(c.id.clone())
                .bind(c.category.clone())
                .bind(c.reason.clone())
                .bind(c.create_time)
        },
    )
    .await?;
    Ok(())
}

/// Creates a cluster.
pub async fn create_cluster(tx: &mut Tx, cluster: &Cluster) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO clusters (id, category, reason, create_time) VALUES ($1, $2, $3, $4)")
        .bind(&cluster.id)
        .bind(&cluster.category)
        .bind(&cluster.reason)
        .bind(cluster.create_time)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Deletes an emptied cluster.
pub async fn delete_cluster(tx: &mut Tx, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM clusters WHERE id = $1")
        .bind(id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// One cluster with its members, oldest first (on a pooled connection or a transaction's).
pub async fn get_cluster(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<Cluster>, StoreError> {
    Ok(get_cluster_with_times(conn, id)
        .await?
        .map(|(mut cluster, members)| {
            cluster.cases = members.into_iter().map(|(_, id)| id).collect();
            cluster
        }))
}

/// [`get_cluster`] with each member's acceptance time beside it: `(create_time, id)`, oldest
/// first (the cluster's `cases` are left empty).
pub async fn get_cluster_with_times(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<(Cluster, Vec<(Micros, String)>)>, StoreError> {
    Ok(get_clusters_with_times(conn, &[id.to_string()])
        .await?
        .remove(id))
}

/// [`get_cluster_with_times`] for many clusters, two statements for all of them; clusters
/// not found are left out.
pub async fn get_clusters_with_times(
    conn: &mut AnyConnection,
    ids: &[String],
) -> Result<std::collections::HashMap<String, (Cluster, Vec<(Micros, String)>)>, StoreError> {
    let mut out = std::collections::HashMap::new();
    for chunk in minqing_kit::db::statement_chunks(ids, 256) {
        for cluster in cluster_rows(conn, chunk).await? {
            out.insert(cluster.id.clone(), (cluster, Vec::new()));
        }
        let list = minqing_kit::db::placeholders(chunk.len());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT cluster_id, create_time, id FROM case_clusters \
             JOIN cases ON cases.id = case_clusters.case_id WHERE cluster_id IN ({list}) \
             ORDER BY cluster_id, create_time, id"
        )));
        for id in chunk {
            query = query.bind(id.clone());
        }
        for row in query.fetch_all(&mut *conn).await? {
            let cluster: String = row.try_get(0)?;
            if let Some((_, members)) = out.get_mut(&cluster) {
                members.push((row.try_get(1)?, row.try_get(2)?));
            }
        }
    }
    Ok(out)
}

/// Clusters (their `cases` left empty) with how many cases each holds, two statements for
/// all of them, without reading the members; clusters not found are left out.
pub async fn get_cluster_sizes(
    conn: &mut AnyConnection,
    ids: &[String],
) -> Result<std::collections::HashMap<String, (Cluster, i64)>, StoreError> {
    let mut out = std::collections::HashMap::new();
    for chunk in minqing_kit::db::statement_chunks(ids, 256) {
        for cluster in cluster_rows(conn, chunk).await? {
            out.insert(cluster.id.clone(), (cluster, 0));
        }
        let list = minqing_kit::db::placeholders(chunk.len());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT cluster_id, COUNT(*) FROM case_clusters WHERE cluster_id IN ({list}) \
             GROUP BY cluster_id"
        )));
        for id in chunk {
            query = query.bind(id.clone());
        }
        for row in query.fetch_all(&mut *conn).await? {
            let cluster: String = row.try_get(0)?;
            if let Some((_, size)) = out.get_mut(&cluster) {
                *size = row.try_get(1)?;
            }
        }
    }
    Ok(out)
}

/// The clusters' own rows, their `cases` left empty.
async fn cluster_rows(
    conn: &mut AnyConnection,
    ids: &[String],
) -> Result<Vec<Cluster>, StoreError> {
    let list = minqing_kit::db::placeholders(ids.len());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, category, reason, create_time FROM clusters WHERE id IN ({list})"
    )));
    for id in ids {
        query = query.bind(id.clone());
    }
    query
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            Ok(Cluster {
                id: row.try_get(0)?,
                category: row.try_get(1)?,
                reason: row.try_get(2)?,
                create_time: row.try_get(3)?,
                cases: Vec::new(),
            })
        })
        .collect()
}

/// A case's events (its timeline), oldest first: `(kind, create_time, actor, payload)`.
pub async fn case_events<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    subject: &str,
) -> Result<Vec<(String, Micros, String, Vec<u8>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT kind, create_time, actor, payload FROM events WHERE subject = $1 ORDER BY create_time, seq",
    )
    .bind(subject)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    /// The partial indexes' condition is the candidate lookups' own (`state IN (…)` written
    /// from `open_states`), or PostgreSQL could not use them for the lookups.
    #[test]
    fn the_open_candidate_indexes_hold_the_states_the_lookups_ask_for() {
        let condition = format!("state IN ({})", super::open_states());
        assert_eq!(
            super::POSTGRES_OPEN_CANDIDATES_MIGRATION
                .matches(&condition)
                .count(),
            2,
            "{condition}"
        );
    }
}

#[cfg(test)]
mod submit_tests {
    //! Group commit's store side: a batch that takes several statements writes each new case
    //! and its event once, and answers a used request id with the earlier case.

    use minqing_kit::{
        backend_tests,
        db::Backend,
        feed::{EventMeta, EventRow},
        testing::TestDatabase,
    };

    use super::{Inserted, NewCase};
    use crate::{cluster::testing, domain::Case, store};

    fn new_case(case: Case) -> NewCase {
        let event = EventRow::encoded(
            &EventMeta::current("window_staff:window-07"),
            &case.name(),
            "minqing.intake.v1.CaseSubmitted",
            vec![7; 1500],
            case.create_time,
        );
        NewCase {
            request_hash: format!("hash-{}", case.request_id),
            case,
            event,
        }
    }

    async fn a_batch_of_many_statements_writes_each_case_once(backend: Backend) {
        let Some(test_db) = TestDatabase::new(backend).await else {
            return;
        };
        let db = test_db.db("intake", &store::MIGRATIONS).await;
        // Each case about a third of a statement's bytes.
        let phrase = "water leaking from the pipe on the third floor ";
        let words = phrase.repeat(super::MAX_STATEMENT_BYTES / 6 / phrase.len());
        let case = |i: usize| {
            testing::case(
                &format!("b{i:02}"),
                "onsite-environment-11",
                "b-1",
                None,
                ("leak", &words),
                1_000 + i as i64,
            )
        };
        // An earlier request, written alone.
        let earlier = new_case(case(0));
        let answer = store::submit_case(&db, &earlier.case, "hash-req-b00", earlier.event)
            .await
            .unwrap();
        assert!(matches!(answer, Inserted::New));

        // Twelve new cases, a retry of the earlier request, and a request id used twice
        // within the batch.
        let mut batch: Vec<NewCase> = (1..=12).map(|i| new_case(case(i))).collect();
        let mut retry = case(13);
        retry.request_id = "req-b00".into();
        batch.push(new_case(retry));
        let mut twice = case(14);
        twice.request_id = "req-b05".into();
        batch.push(new_case(twice));
        assert!(
            super::statement_chunks(&batch).len() > 2,
            "the batch takes several statements"
        );

        let answers = store::submit_cases(&db, &batch).await.unwrap();
        assert_eq!(answers.len(), batch.len());
        for (item, answer) in batch.iter().zip(&answers) {
            match (item.case.id.as_str(), answer) {
                ("b13", Inserted::Existing { request_hash, case }) => {
                    assert_eq!(
                        (request_hash.as_str(), case.id.as_str()),
                        ("hash-req-b00", "b00")
                    );
                }
                ("b14", Inserted::Existing { request_hash, case }) => {
                    assert_eq!(
                        (request_hash.as_str(), case.id.as_str()),
                        ("hash-req-b05", "b05")
                    );
                }
                (id, Inserted::New) if !matches!(id, "b13" | "b14") => {}
                (id, other) => panic!("{id}: {other:?}"),
            }
        }
        let stored = store::get_case(db.pool(), "b12").await.unwrap().unwrap();
        assert_eq!(stored.submission.description, words);
        let mut subjects: Vec<String> = minqing_kit::testing::whole_feed(&db)
            .await
            .into_iter()
            .map(|e| e.subject)
            .collect();
        subjects.sort();
        let expected: Vec<String> = (0..=12).map(|i| format!("cases/b{i:02}")).collect();
        assert_eq!(
            subjects, expected,
            "one event for each new case, none for the others"
        );
        for id in ["b13", "b14"] {
            assert!(store::get_case(db.pool(), id).await.unwrap().is_none());
        }
        db.close().await;
    }

    backend_tests!(a_batch_of_many_statements_writes_each_case_once);
}

#[cfg(test)]
mod grown_table_tests {
    //! Intake's multi-row update of cases (routing's state) reads the table by key once it
    //! has grown, however small it was when the statement first ran on the connection:
    //! PostgreSQL keeps the plan it settles on after a few runs.

    use minqing_kit::{
        db::{Backend, Tx},
        testing::{TestDatabase, seq_scans},
    };

    use super::update_cases;
    use crate::{cluster::testing, domain::CaseState, store};

    /// Cases `c{from}` to `c{to - 1}`, written directly: every column set, the submission
    /// left empty. Which plan PostgreSQL settles on depends on the rows' width; on narrow rows
    /// the kept statements joined by a scan.
    async fn insert(tx: &mut Tx, from: i64, to: i64) {
        sqlx::query(
            "INSERT INTO cases (id, recorded_by, request_id, request_hash, channel, category, \
                urgency, district, street, community, grid, building, reporter_phone, state, \
                disposition, handling_unit, supplement_count, withdraw_reason, create_time, \
                update_time, version, submission) \
             SELECT 'c' || lpad(g::text, 6, '0'), 'window_staff:w', 'req-' || g, 'h', 1, \
                'onsite-environment-11', 1, '620102', '620102001', '620102001001', \
                '620102001001-g01', '620102001001-g01-b01', '', 1, 0, '', 0, '', g, g, 1, '' \
             FROM generate_series($1::bigint, $2::bigint - 1) g",
        )
        .bind(from)
        .bind(to)
        .execute(tx.conn())
        .await
        .expect("cases written");
    }

    fn case(i: usize) -> crate::domain::Case {
        let mut c = testing::case(
            &format!("c{i:06}"),
            "onsite-environment-11",
            "",
            None,
            ("停水", "楼里停水了"),
            1,
        );
        c.state = CaseState::Routed;
        c.handling_unit = "临潢社区第一网格".into();
        c
    }

    #[tokio::test]
    async fn the_case_updates_read_a_grown_table_by_key_on_postgres() {
        let Some(t) = TestDatabase::new(Backend::Postgres).await else {
            return;
        };
        let db = t.db("intake", &store::MIGRATIONS).await;
        let mut tx = db.begin().await.unwrap();
        insert(&mut tx, 0, 100).await;
        let cases: Vec<_> = (0..64).map(case).collect();
        let cases: Vec<_> = cases.iter().map(|c| (c, 1)).collect();
        for _ in 0..8 {
            assert_eq!(update_cases(&mut tx, &cases).await.unwrap(), 64);
        }
        insert(&mut tx, 100, 40_000).await;

        let cases: Vec<_> = (20_000..20_064).map(case).collect();
        let before = seq_scans(&mut tx, "cases").await;
        let cases: Vec<_> = cases.iter().map(|c| (c, 1)).collect();
        assert_eq!(update_cases(&mut tx, &cases).await.unwrap(), 64);
        assert_eq!(
            seq_scans(&mut tx, "cases").await,
            before,
            "routing's state update scanned the table"
        );
        tx.rollback().await.unwrap();
        db.close().await;
    }
}

#[cfg(test)]
mod membership_tests {
    //! Cluster membership kept apart from the case row: written only at the version read,
    //! shown with the case (its etag changing with either), and carried over from a database
    //! that kept it on the case row.

    use minqing_kit::{
        backend_tests,
        db::{Backend, Migrations, Tx},
        testing::TestDatabase,
    };

    use super::{CaseFilter, Membership, get_case, get_cluster, list_cases, set_memberships};
    use crate::{cluster::testing, domain::CaseState, store};

    fn membership(id: &str, cluster: Option<&str>, version: i64, at: i64) -> Membership {
        Membership {
            id: id.into(),
            state: CaseState::Submitted,
            cluster: cluster.map(str::to_owned),
            create_time: 1,
            update_time: at,
            version,
        }
    }

    async fn create_cluster(tx: &mut Tx, id: &str) {
        sqlx::query(
            "INSERT INTO clusters (id, category, reason, create_time) VALUES ($1, 'c', 'same building', 1)",
        )
        .bind(id)
        .execute(tx.conn())
        .await
        .unwrap();
    }

    async fn memberships_are_written_at_the_versions_read(backend: Backend) {
        let Some(t) = TestDatabase::new(backend).await else {
            return;
        };
        let db = t.db("intake", &store::MIGRATIONS).await;
        let cases: Vec<_> = ["m1", "m2"]
            .iter()
            .map(|id| {
                testing::case(
                    id,
                    "onsite-environment-11",
                    "b1",
                    None,
                    ("停水", "停水"),
                    10,
                )
            })
            .collect();
        testing::submit(&db, &cases).await;
        let mut tx = db.begin().await.unwrap();
        create_cluster(&mut tx, "k1").await;
        // Never in a cluster: version 0, so the first write is version 1.
        let m1 = membership("m1", Some("k1"), 1, 20);
        let m2 = membership("m2", Some("k1"), 1, 20);
        assert_eq!(set_memberships(&mut tx, &[&m1, &m2]).await.unwrap(), 2);
        // A second writer that read version 0 too is refused, row by row.
        let late = membership("m1", None, 1, 21);
        assert_eq!(set_memberships(&mut tx, &[&late]).await.unwrap(), 0);
        // One that read version 1 is not; a stale one beside it is refused alone.
        let left = membership("m1", None, 2, 30);
        let stale = membership("m2", None, 1, 30);
        assert_eq!(set_memberships(&mut tx, &[&left, &stale]).await.unwrap(), 1);
        tx.commit().await.unwrap();

        let one = get_case(db.pool(), "m1").await.unwrap().unwrap();
        let two = get_case(db.pool(), "m2").await.unwrap().unwrap();
        assert_eq!(
            (
                one.cluster.as_deref(),
                one.cluster_version,
                one.version,
                one.etag().as_str(),
                one.update_time
            ),
            (None, 2, 1, "3", 30)
        );
        assert_eq!(
            (
                two.cluster.as_deref(),
                two.cluster_version,
                two.etag().as_str(),
                two.update_time
            ),
            (Some("k1"), 1, "2", 20)
        );
        // A change of the case's handling leaves its membership alone, and both count.
        let mut changed = two.clone();
        changed.state = CaseState::Routed;
        changed.version += 1;
        changed.update_time = 40;
        let mut tx = db.begin().await.unwrap();
        assert!(store::update_case(&mut tx, &changed, 1).await.unwrap());
        tx.commit().await.unwrap();
        let two = get_case(db.pool(), "m2").await.unwrap().unwrap();
        assert_eq!(
            (
                two.cluster.as_deref(),
                two.state,
                two.etag().as_str(),
                two.update_time
            ),
            (Some("k1"), CaseState::Routed, "3", 40)
        );
        let filter = CaseFilter {
            cluster: Some("k1".into()),
            ..Default::default()
        };
        let listed: Vec<String> = list_cases(db.pool(), &filter, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(listed, ["m2"]);
        let mut conn = db.pool().acquire().await.unwrap();
        let cluster = get_cluster(&mut conn, "k1").await.unwrap().unwrap();
        assert_eq!(cluster.cases, ["m2"]);
        drop(conn);
        db.close().await;
    }

    async fn an_older_database_keeps_its_clusters(backend: Backend) {
        let Some(t) = TestDatabase::new(backend).await else {
            return;
        };
        // Intake's tables as they were before memberships had a table of their own.
        let before = Migrations {
            sqlite: &store::MIGRATIONS.sqlite[..3],
            postgres: &store::MIGRATIONS.postgres[..3],
        };
        let db = t.db("intake", &before).await;
        for (id, at) in [("o1", 10), ("o2", 11), ("o3", 12)] {
            sqlx::query(
                "INSERT INTO cases (id, recorded_by, request_id, request_hash, channel, category, \
                    urgency, district, street, community, grid, building, reporter_phone, state, \
                    disposition, handling_unit, supplement_count, withdraw_reason, create_time, \
                    update_time, version, submission) \
                 VALUES ($1, 'window_staff:w', $1, 'h', 1, 'onsite-environment-11', 1, '620102', \
                    '620102001', '620102001001', '620102001001-g01', 'b1', '', 1, 0, '', 0, '', $2, \
                    $2, 1, $3)",
            )
            .bind(id)
            .bind(at)
            .bind(serde_json::to_string(&testing::case(id, "c", "b1", None, ("停水", "停水"), at).submission).unwrap())
            .execute(db.pool())
            .await
            .unwrap();
        }
        let mut tx = db.begin().await.unwrap();
        create_cluster(&mut tx, "k1").await;
        tx.commit().await.unwrap();
        sqlx::query(
            "UPDATE cases SET cluster_id = 'k1', version = 3, update_time = 50 WHERE id IN ('o1', 'o3')",
        )
        .execute(db.pool())
        .await
        .unwrap();
        db.migrate(&store::MIGRATIONS).await.expect("migrated");

        let etags: Vec<(String, Option<String>, String, i64)> =
            list_cases(db.pool(), &CaseFilter::default(), 10)
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.id.clone(), c.cluster.clone(), c.etag(), c.update_time))
                .collect();
        assert_eq!(
            etags,
            [
                (
                    "o3".to_string(),
                    Some("k1".to_string()),
                    "3".to_string(),
                    50
                ),
                ("o2".to_string(), None, "1".to_string(), 11),
                (
                    "o1".to_string(),
                    Some("k1".to_string()),
                    "3".to_string(),
                    50
                ),
            ],
            "clusters, etags and update times as they were"
        );
        let mut conn = db.pool().acquire().await.unwrap();
        let cluster = get_cluster(&mut conn, "k1").await.unwrap().unwrap();
        assert_eq!(cluster.cases, ["o1", "o3"]);
        drop(conn);
        // The next change of a carried-over membership is at the version after 0.
        let mut tx = db.begin().await.unwrap();
        let mut o1 = get_case(tx.conn(), "o1").await.unwrap().unwrap();
        assert!(
            store::set_membership(&mut tx, &mut o1, None, 60)
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        let o1 = get_case(db.pool(), "o1").await.unwrap().unwrap();
        assert_eq!(
            (o1.cluster.as_deref(), o1.etag().as_str(), o1.update_time),
            (None, "4", 60)
        );
        db.close().await;
    }

    backend_tests!(
        memberships_are_written_at_the_versions_read,
        an_older_database_keeps_its_clusters
    );
}
