//! Reporters' contacts, cluster membership, replies, deliveries and appointed visits.

use std::collections::{HashMap, HashSet};

use sqlx::{Any, Executor, Row};

use super::{from_doc, to_doc};
use crate::replies::{Appointment, Contact, Delivery, DeliveryState, Reply};
use minqing_kit::{db::Tx, error::StoreError, time::Micros};

const CONTACT_COLUMNS: &str = "case_id, anonymous, method, needs_visit, name, phone, \
    postal_address, online_address, visit_note, recorded_by, district, street, community, grid";

fn contact_row(r: &sqlx::any::AnyRow) -> Result<Contact, StoreError> {
    let int = |c: &str| -> Result<i64, StoreError> { Ok(r.try_get::<i64, _>(c)?) };
    let text = |c: &str| -> Result<String, StoreError> { Ok(r.try_get::<String, _>(c)?) };
    Ok(Contact {
        case_id: text("case_id")?,
        anonymous: int("anonymous")? != 0,
        method: i32::try_from(int("method")?).unwrap_or(0),
        needs_visit: int("needs_visit")? != 0,
        name: text("name")?,
        phone: text("phone")?,
        postal_address: text("postal_address")?,
        online_address: text("online_address")?,
        visit_note: text("visit_note")?,
        recorded_by: text("recorded_by")?,
        place: crate::clock::Place {
            district: text("district")?,
            street: text("street")?,
            community: text("community")?,
            grid: text("grid")?,
            building: String::new(),
        },
    })
}

/// A reporter's contact.
pub async fn contact<'c, E: Executor<'c, Database = Any>>(
    db: E,
    case_id: &str,
) -> Result<Option<Contact>, StoreError> {
    let sql = format!("SELECT {CONTACT_COLUMNS} FROM case_contacts WHERE case_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(case_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(contact_row).transpose()
}

/// The contacts of `case_ids` that are kept, by case: a statement per few hundred cases.
pub async fn contacts(
    db: &sqlx::AnyPool,
    case_ids: &[String],
) -> Result<HashMap<String, Contact>, StoreError> {
    let mut conn = db.acquire().await?;
    let rows = super::rows_in(&mut conn, case_ids, |ids| {
        format!("SELECT {CONTACT_COLUMNS} FROM case_contacts WHERE case_id IN ({ids})")
    })
    .await?;
    rows.iter()
        .map(|row| contact_row(row).map(|c| (c.case_id.clone(), c)))
        .collect()
}

/// The cluster of a case ("" when none).
pub async fn cluster_of(tx: &mut Tx, case_id: &str) -> Result<String, StoreError> {
    let row = sqlx::query("SELECT cluster FROM cluster_members WHERE case_id = $1")
        .bind(case_id)
        .fetch_optional(tx.conn())
        .await?;
    Ok(match row {
        Some(r) => r.try_get("cluster")?,
        None => String::new(),
    })
}

/// The cases of a cluster.
pub async fn members(tx: &mut Tx, cluster: &str) -> Result<Vec<String>, StoreError> {
    let rows =
        sqlx::query("SELECT case_id FROM cluster_members WHERE cluster = $1 ORDER BY case_id")
            .bind(cluster)
            .fetch_all(tx.conn())
            .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>("case_id")?))
        .collect()
}

/// A reply by id.
pub async fn reply<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
) -> Result<Option<Reply>, StoreError> {
    let row = sqlx::query("SELECT doc FROM replies WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.map(|r| from_doc(&r.try_get::<String, _>("doc")?))
        .transpose()
}

/// The replies of `ids` that exist, by id: a statement per few hundred.
pub async fn replies_by_id(
    db: &sqlx::AnyPool,
    ids: &[String],
) -> Result<HashMap<String, Reply>, StoreError> {
    let mut conn = db.acquire().await?;
    let rows = super::rows_in(&mut conn, ids, |ids| {
        format!("SELECT doc FROM replies WHERE id IN ({ids})")
    })
    .await?;
    rows.iter()
        .map(|row| {
            let reply: Reply = from_doc(&row.try_get::<String, _>("doc")?)?;
            Ok((reply.id.clone(), reply))
        })
        .collect()
}

/// The replies that answer a case or reach its reporter, oldest first.
pub async fn replies_for<'c, E: Executor<'c, Database = Any>>(
    db: E,
    case_id: &str,
) -> Result<Vec<Reply>, StoreError> {
    let rows = sqlx::query(
        "SELECT doc FROM replies WHERE case_id = $1 \
            OR id IN (SELECT reply_id FROM deliveries WHERE case_id = $2) \
         ORDER BY create_time, id",
    )
    .bind(case_id)
    .bind(case_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| from_doc(&r.try_get::<String, _>("doc")?))
        .collect()
}

const DELIVERY_COLUMNS: &str = "id, reply_id, case_id, method, state, attempts, \
    next_attempt_time, last_error, delivered_time, appointment, update_time, version";

fn delivery(r: &sqlx::any::AnyRow) -> Result<Delivery, StoreError> {
    let state: i64 = r.try_get("state")?;
    Ok(Delivery {
        id: r.try_get("id")?,
        reply_id: r.try_get("reply_id")?,
        case_id: r.try_get("case_id")?,
        method: i32::try_from(r.try_get::<i64, _>("method")?).unwrap_or(0),
        state: DeliveryState::from_wire(state).unwrap_or(DeliveryState::Queued),
        attempts: i32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
        next_attempt_time: r.try_get("next_attempt_time")?,
        last_error: r.try_get("last_error")?,
        delivered_time: r.try_get("delivered_time")?,
        appointment: r.try_get("appointment")?,
        update_time: r.try_get("update_time")?,
        version: r.try_get("version")?,
    })
}

/// Writes a delivery if still at its version; false when it changed underneath.
pub async fn update_delivery(tx: &mut Tx, d: &Delivery) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE deliveries SET method = $1, state = $2, attempts = $3, next_attempt_time = $4, \
            last_error = $5, delivered_time = $6, appointment = $7, update_time = $8, \
            version = version + 1 \
         WHERE id = $9 AND version = $10",
    )
    .bind(i64::from(d.method))
    .bind(i64::from(d.state.wire()))
    .bind(i64::from(d.attempts))
    .bind(d.next_attempt_time)
    .bind(&d.last_error)
    .bind(d.delivered_time)
    .bind(&d.appointment)
    .bind(d.update_time)
    .bind(&d.id)
    .bind(d.version)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The statement [`update_deliveries`] writes `rows` deliveries with (ten placeholders a row,
/// the id first). The ids are listed again in an `IN`, so that a table of more than a few
/// thousand deliveries is read by its key, not scanned and hashed whole
/// ([`column_placeholders`](minqing_kit::db::column_placeholders)).
fn update_deliveries_sql(rows: usize) -> String {
    const COLUMNS: usize = 10;
    let values = minqing_kit::db::values_list(rows, COLUMNS);
    let ids = minqing_kit::db::column_placeholders(rows, COLUMNS, 0);
    format!(
        "WITH v (id, version, method, state, attempts, next_attempt_time, last_error, \
            delivered_time, appointment, update_time) AS (VALUES {values}) \
         UPDATE deliveries SET method = v.method, state = v.state, attempts = v.attempts, \
            next_attempt_time = v.next_attempt_time, last_error = v.last_error, \
            delivered_time = v.delivered_time, appointment = v.appointment, \
            update_time = v.update_time, version = deliveries.version + 1 \
         FROM v WHERE deliveries.id IN ({ids}) AND deliveries.id = v.id \
            AND deliveries.version = v.version \
         RETURNING deliveries.id"
    )
}

/// `sql` with `chunk`'s rows bound, in [`update_deliveries_sql`]'s order.
fn bind_deliveries(sql: String, chunk: &[Delivery]) -> minqing_kit::db::AnyQuery {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for d in chunk {
        q = bind_delivery_state(q.bind(d.id.clone()).bind(d.version), d);
    }
    q
}

/// A delivery's state, from its method to its update time, as both the insert and the update
/// list them.
fn bind_delivery_state(q: minqing_kit::db::AnyQuery, d: &Delivery) -> minqing_kit::db::AnyQuery {
    q.bind(i64::from(d.method))
        .bind(i64::from(d.state.wire()))
        .bind(i64::from(d.attempts))
        .bind(d.next_attempt_time)
        .bind(d.last_error.clone())
        .bind(d.delivered_time)
        .bind(d.appointment.clone())
        .bind(d.update_time)
}

/// Writes deliveries, each only if still at its version, in a few multi-row statements;
/// returns the ids of those written (one changed underneath is left as it is).
pub async fn update_deliveries(
    tx: &mut Tx,
    deliveries: &[Delivery],
) -> Result<HashSet<String>, StoreError> {
    // Each row's text is bounded by its error, which is short; 64 rows a statement keeps a
    // sweep (at most 64) to one.
    let mut written = HashSet::new();
    for chunk in deliveries.chunks(64) {
        // Planned at each sweep ([`Planning::EachRun`](minqing_kit::db::Planning)): the table
        // grows by a delivery for every reply. Planning it costs a fraction of a millisecond.
        let keep = minqing_kit::db::Planning::EachRun.keeps(tx.backend());
        let q = bind_deliveries(update_deliveries_sql(chunk.len()), chunk).persistent(keep);
        for row in q.fetch_all(tx.conn()).await? {
            written.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(written)
}

/// Deliveries of some replies, by reply then case.
pub async fn deliveries_of<'c, E: Executor<'c, Database = Any>>(
    db: E,
    reply_id: &str,
) -> Result<Vec<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE reply_id = $1 ORDER BY case_id, id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(reply_id)
        .fetch_all(db)
        .await?;
    rows.iter().map(delivery).collect()
}

/// A delivery by id.
pub async fn delivery_by_id<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
) -> Result<Option<Delivery>, StoreError> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(delivery).transpose()
}

/// Queued deliveries due at `now`, soonest first.
pub async fn due_deliveries<'c, E: Executor<'c, Database = Any>>(
    db: E,
    now: Micros,
    limit: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE state = $1 AND next_attempt_time <= $2 \
         ORDER BY next_attempt_time LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(i64::from(DeliveryState::Queued.wire()))
        .bind(now)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(delivery).collect()
}

const APPOINTMENT_COLUMNS: &str = "id, delivery_id, case_id, grid, community, state, \
    create_time, visit_time, visited_by, outcome";

fn appointment(r: &sqlx::any::AnyRow) -> Result<Appointment, StoreError> {
    Ok(Appointment {
        id: r.try_get("id")?,
        delivery_id: r.try_get("delivery_id")?,
        case_id: r.try_get("case_id")?,
        grid: r.try_get("grid")?,
        community: r.try_get("community")?,
        done: r.try_get::<i64, _>("state")? == 2,
        create_time: r.try_get("create_time")?,
        visit_time: r.try_get("visit_time")?,
        visited_by: r.try_get("visited_by")?,
        outcome: r.try_get("outcome")?,
    })
}

/// Inserts an appointment.
pub async fn insert_appointment(tx: &mut Tx, a: &Appointment) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO appointments ({APPOINTMENT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (delivery_id) DO NOTHING"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&a.id)
        .bind(&a.delivery_id)
        .bind(&a.case_id)
        .bind(&a.grid)
        .bind(&a.community)
        .bind(if a.done { 2_i64 } else { 1 })
        .bind(a.create_time)
        .bind(a.visit_time)
        .bind(&a.visited_by)
        .bind(&a.outcome)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// An appointment by id.
pub async fn appointment_by_id<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
) -> Result<Option<Appointment>, StoreError> {
    let sql = format!("SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(appointment).transpose()
}

/// Marks an appointment done if it was open; false when it was not.
pub async fn complete_appointment(tx: &mut Tx, a: &Appointment) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE appointments SET state = 2, visit_time = $1, visited_by = $2, outcome = $3 \
         WHERE id = $4 AND state = 1",
    )
    .bind(a.visit_time)
    .bind(&a.visited_by)
    .bind(&a.outcome)
    .bind(&a.id)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Appointments in a place (`column = code`), open first.
pub async fn appointments<'c, E: Executor<'c, Database = Any>>(
    db: E,
    place: Option<(&'static str, String)>,
    include_done: bool,
    limit: i64,
) -> Result<Vec<Appointment>, StoreError> {
    let mut clauses = Vec::new();
    let mut n = 0;
    if let Some((column, _)) = &place {
        n += 1;
        clauses.push(format!("{column} = ${n}"));
    }
    if !include_done {
        clauses.push("state = 1".into());
    }
    let where_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let sql = format!(
        "SELECT {APPOINTMENT_COLUMNS} FROM appointments{where_sql} \
         ORDER BY state, create_time, id LIMIT ${}",
        n + 1
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some((_, code)) = place {
        q = q.bind(code);
    }
    let rows = q.bind(limit).fetch_all(db).await?;
    rows.iter().map(appointment).collect()
}

/// The cluster of each of `case_ids` that is in one, `(case_id, cluster)`.
pub async fn clusters_of(
    tx: &mut Tx,
    case_ids: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    pairs_in(tx, case_ids, ("case_id", "cluster"), |ids| {
        format!("SELECT case_id, cluster FROM cluster_members WHERE case_id IN ({ids}) AND cluster <> ''")
    })
    .await
}

/// The two text columns `(a, b)` of the rows `sql` (given an `IN` list) finds for `ids`, a
/// statement per few hundred ids.
async fn pairs_in<C: FromIterator<(String, String)>>(
    tx: &mut Tx,
    ids: &[String],
    (a, b): (&str, &str),
    sql: impl Fn(&str) -> String,
) -> Result<C, StoreError> {
    let rows = super::rows_in(tx.conn(), ids, sql).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(a)?, row.try_get(b)?)))
        .collect()
}

/// The members of `clusters`, `(case_id, cluster)`.
pub async fn members_of(
    tx: &mut Tx,
    clusters: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    pairs_in(tx, clusters, ("case_id", "cluster"), |ids| {
        format!("SELECT case_id, cluster FROM cluster_members WHERE cluster IN ({ids})")
    })
    .await
}

/// The members of `cluster` that reply `reply_id` has no delivery to, in case order: whom a
/// collective reply made before still has to reach, read without reading those it reached.
pub async fn unreached(
    tx: &mut Tx,
    cluster: &str,
    reply_id: &str,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "SELECT m.case_id FROM cluster_members m WHERE m.cluster = $1 AND NOT EXISTS \
            (SELECT 1 FROM deliveries d WHERE d.reply_id = $2 AND d.case_id = m.case_id) \
         ORDER BY m.case_id",
    )
    .bind(cluster)
    .bind(reply_id)
    .fetch_all(tx.conn())
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>("case_id")?))
        .collect()
}

/// Those of `case_ids` that reply `reply_id` has a delivery to.
pub async fn reached_among(
    tx: &mut Tx,
    reply_id: &str,
    case_ids: &[String],
) -> Result<HashSet<String>, StoreError> {
    let mut out = HashSet::new();
    for chunk in super::id_chunks(case_ids, 1) {
        let sql = format!(
            "SELECT case_id FROM deliveries WHERE case_id IN ({}) AND reply_id = ${}",
            minqing_kit::db::placeholders(chunk.len()),
            chunk.len() + 1
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.clone());
        }
        q = q.bind(reply_id.to_string());
        for row in q.fetch_all(tx.conn()).await? {
            out.insert(row.try_get::<String, _>("case_id")?);
        }
    }
    Ok(out)
}

/// The contact methods kept for `case_ids` (a case not listed has no contact).
pub async fn contact_methods(
    tx: &mut Tx,
    case_ids: &[String],
) -> Result<HashMap<String, i32>, StoreError> {
    let rows = super::rows_in(tx.conn(), case_ids, |ids| {
        format!("SELECT case_id, method FROM case_contacts WHERE case_id IN ({ids})")
    })
    .await?;
    rows.iter()
        .map(|row| {
            let method = i32::try_from(row.try_get::<i64, _>("method")?).unwrap_or(0);
            Ok((row.try_get::<String, _>("case_id")?, method))
        })
        .collect()
}

/// Keeps reporters' contacts (each only the first time its case is seen), each case once,
/// in a few multi-row statements.
pub async fn put_contacts(tx: &mut Tx, contacts: &[(Contact, Micros)]) -> Result<(), StoreError> {
    minqing_kit::db::execute_rows(
        tx.conn(),
        15,
        contacts,
        |(c, _)| {
            c.case_id.len()
                + c.name.len()
                + c.phone.len()
                + c.postal_address.len()
                + c.online_address.len()
                + c.visit_note.len()
                + c.recorded_by.len()
                + c.place.district.len()
                + c.place.street.len()
                + c.place.community.len()
                + c.place.grid.len()
                + 48
        },
        |values| {
            format!(
                "INSERT INTO case_contacts (case_id, anonymous, method, needs_visit, name, \
                    phone, postal_address, online_address, visit_note, recorded_by, district, \
                    street, community, grid, create_time) VALUES {values} \
                 ON CONFLICT (case_id) DO NOTHING"
            )
        },
        |q, (c, now)| {
            q.bind(c.case_id.clone())
                .bind(i64::from(c.anonymous))
                .bind(i64::from(c.method))
                .bind(i64::from(c.needs_visit))
                .bind(c.name.clone())
                .bind(c.phone.clone())
                .bind(c.postal_address.clone())
                .bind(c.online_address.clone())
                .bind(c.visit_note.clone())
                .bind(c.recorded_by.clone())
                .bind(c.place.district.clone())
                .bind(c.place.street.clone())
                .bind(c.place.community.clone())
                .bind(c.place.grid.clone())
                .bind(*now)
        },
    )
    .await?;
    Ok(())
}

/// Puts each case (an id, without "cases/") in its cluster ("" takes it out), each case
/// once, in a few multi-row statements. A member already in its cluster is not written
/// again (older `CaseClustered` events named the whole cluster).
pub async fn set_clusters(tx: &mut Tx, members: &[(String, String)]) -> Result<(), StoreError> {
    minqing_kit::db::execute_rows(
        tx.conn(),
        2,
        members,
        |(id, cluster)| id.len() + cluster.len() + 8,
        |values| {
            format!(
                "INSERT INTO cluster_members (case_id, cluster) VALUES {values} \
                 ON CONFLICT (case_id) DO UPDATE SET cluster = excluded.cluster \
                 WHERE cluster_members.cluster <> excluded.cluster"
            )
        },
        |q, (id, cluster)| q.bind(id.clone()).bind(cluster.clone()),
    )
    .await?;
    Ok(())
}

/// Which of the `dedupe` keys replies already took, with the reply that took each.
pub async fn used_dedupes(
    tx: &mut Tx,
    keys: &[String],
) -> Result<HashMap<String, String>, StoreError> {
    pairs_in(tx, keys, ("dedupe", "id"), |keys| {
        format!("SELECT dedupe, id FROM replies WHERE dedupe IN ({keys})")
    })
    .await
}

/// The reports each of `reply_ids` has a delivery to, `(reply_id, case_id)`.
pub async fn reached(
    tx: &mut Tx,
    reply_ids: &[String],
) -> Result<HashSet<(String, String)>, StoreError> {
    pairs_in(tx, reply_ids, ("reply_id", "case_id"), |ids| {
        format!("SELECT reply_id, case_id FROM deliveries WHERE reply_id IN ({ids})")
    })
    .await
}

/// Inserts replies, `(reply, dedupe)`, in a few multi-row statements, each unless its
/// `dedupe` key was used; returns how many were inserted.
pub async fn insert_replies(tx: &mut Tx, replies: &[(&Reply, &str)]) -> Result<u64, StoreError> {
    let rows = replies
        .iter()
        .map(|(r, dedupe)| Ok((*r, *dedupe, to_doc(*r)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    minqing_kit::db::execute_rows(
        tx.conn(),
        6,
        rows,
        |(r, dedupe, doc)| {
            r.id.len() + r.case_id.len() + r.cluster.len() + dedupe.len() + doc.len() + 16
        },
        |values| {
            format!(
                "INSERT INTO replies (id, case_id, cluster, dedupe, create_time, doc) \
                 VALUES {values} ON CONFLICT (dedupe) DO NOTHING"
            )
        },
        |q, (r, dedupe, doc)| {
            q.bind(r.id.clone())
                .bind(r.case_id.clone())
                .bind(r.cluster.clone())
                .bind(dedupe.to_string())
                .bind(r.create_time)
                .bind(doc)
        },
    )
    .await
}

/// Inserts deliveries in a few multi-row statements.
pub async fn insert_deliveries(tx: &mut Tx, deliveries: &[Delivery]) -> Result<(), StoreError> {
    minqing_kit::db::execute_rows(
        tx.conn(),
        12,
        deliveries,
        |d| {
            d.id.len()
                + d.reply_id.len()
                + d.case_id.len()
                + d.last_error.len()
                + d.appointment.len()
                + 64
        },
        |values| format!("INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES {values}"),
        |q, d| {
            let q = q
                .bind(d.id.clone())
                .bind(d.reply_id.clone())
                .bind(d.case_id.clone());
            bind_delivery_state(q, d).bind(d.version)
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{contacts, insert_deliveries, insert_replies, put_contacts, replies_by_id};
    use crate::replies::{Contact, Delivery, DeliveryState, Reply, Trigger};
    use minqing_kit::{backend_tests, db::Backend, testing::TestDatabase};

    fn delivery(id: &str, reply: &str, case: &str) -> Delivery {
        Delivery {
            id: id.into(),
            reply_id: reply.into(),
            case_id: case.into(),
            method: 1,
            state: DeliveryState::Queued,
            attempts: 0,
            next_attempt_time: 10,
            last_error: String::new(),
            delivered_time: 0,
            appointment: String::new(),
            update_time: 10,
            version: 1,
        }
    }

    /// What a delivery sweep reads and writes for many deliveries at once: the contacts and
    /// replies kept (none made up for the others), and only the deliveries still at the
    /// version the sweep read written (the rest left as they are).
    async fn a_sweep_reads_and_writes_many_deliveries_at_once(backend: Backend) {
        let Some(test) = TestDatabase::new(backend).await else {
            return;
        };
        let db = test.db("supervision", &super::super::MIGRATIONS).await;
        let reply = |id: &str, case: &str, text: &str| Reply {
            id: id.into(),
            case_id: case.into(),
            cluster: String::new(),
            trigger: Trigger::Referred,
            text: text.into(),
            create_time: 5,
        };
        let (r1, r2) = (reply("r1", "c1", "first"), reply("r2", "c2", "second"));
        let contact = |case: &str, phone: &str| Contact {
            case_id: case.into(),
            anonymous: false,
            method: 1,
            needs_visit: false,
            name: format!("resident of {case}"),
            phone: phone.into(),
            postal_address: String::new(),
            online_address: String::new(),
            visit_note: String::new(),
            recorded_by: "users/clerk".into(),
            place: crate::clock::Place {
                district: "620102".into(),
                ..Default::default()
            },
        };
        let mut tx = db.begin().await.unwrap();
        insert_replies(
            &mut tx,
            &[(&r1, "cases/c1|referred"), (&r2, "cases/c2|referred")],
        )
        .await
        .unwrap();
        put_contacts(
            &mut tx,
            &[
                (contact("c1", "13900000001"), 5),
                (contact("c2", "13900000002"), 5),
            ],
        )
        .await
        .unwrap();
        let queued = [
            delivery("d1", "r1", "c1"),
            delivery("d2", "r2", "c2"),
            delivery("d3", "r2", "c3"),
        ];
        insert_deliveries(&mut tx, &queued).await.unwrap();
        tx.commit().await.unwrap();

        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let found = replies_by_id(db.pool(), &ids(&["r1", "r2", "r9"]))
            .await
            .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found["r1"].text, "first");
        assert_eq!(found["r2"].text, "second");
        let kept = contacts(db.pool(), &ids(&["c1", "c2", "c3"]))
            .await
            .unwrap();
        assert_eq!(kept.len(), 2, "c3 has no contact kept");
        assert_eq!(kept["c2"].phone, "13900000002");
        assert_eq!(kept["c1"].place.district, "620102");

        // d2 changed after the sweep read it: the sweep's copy is a version behind.
        sqlx::query("UPDATE deliveries SET version = version + 1 WHERE id = 'd2'")
            .execute(db.pool())
            .await
            .unwrap();
        let sent: Vec<Delivery> = queued
            .iter()
            .map(|d| Delivery {
                state: DeliveryState::Delivered,
                attempts: 1,
                delivered_time: 20,
                update_time: 20,
                ..d.clone()
            })
            .collect();
        let mut tx = db.begin().await.unwrap();
        let written = super::update_deliveries(&mut tx, &sent).await.unwrap();
        tx.commit().await.unwrap();
        let mut written: Vec<String> = written.into_iter().collect();
        written.sort();
        assert_eq!(written, ids(&["d1", "d3"]));
        for (id, state) in [
            ("d1", DeliveryState::Delivered),
            ("d2", DeliveryState::Queued),
            ("d3", DeliveryState::Delivered),
        ] {
            let d = super::delivery_by_id(db.pool(), id).await.unwrap().unwrap();
            assert_eq!((d.state, d.version), (state, 2), "{id}");
        }
        db.close().await;
    }

    backend_tests!(a_sweep_reads_and_writes_many_deliveries_at_once);

    /// A sweep's update reads deliveries by their key once the table has grown, however small
    /// it was when the statement first ran. Prepared once, PostgreSQL kept the plan it made
    /// for a small table (a sequential scan joined by a hash) and every later sweep read the
    /// whole table through.
    #[tokio::test]
    async fn a_sweep_update_reads_a_grown_table_by_key_on_postgres() {
        let Some(test) = TestDatabase::new(Backend::Postgres).await else {
            return;
        };
        let db = test.db("supervision", &super::super::MIGRATIONS).await;
        let made = |from: usize, to: usize| -> Vec<Delivery> {
            (from..to)
                .map(|i| {
                    let mut d = delivery(&format!("d{i:06}"), &format!("r{i}"), &format!("c{i}"));
                    d.last_error = "the outlet did not answer in time".into();
                    d
                })
                .collect()
        };
        // One connection throughout (a transaction), as a pooled connection keeps its
        // prepared statements.
        let mut tx = db.begin().await.unwrap();
        let first = made(0, 100);
        insert_deliveries(&mut tx, &first).await.unwrap();
        for _ in 0..8 {
            super::update_deliveries(&mut tx, &first[..64])
                .await
                .unwrap();
        }
        insert_deliveries(&mut tx, &made(100, 40_000))
            .await
            .unwrap();
        let before = minqing_kit::testing::seq_scans(&mut tx, "deliveries").await;
        let sweep = &made(20_000, 20_064);
        let written = super::update_deliveries(&mut tx, sweep).await.unwrap();
        assert_eq!(written.len(), 64);
        assert_eq!(
            minqing_kit::testing::seq_scans(&mut tx, "deliveries").await,
            before,
            "the sweep scanned the table"
        );
        tx.rollback().await.unwrap();
        db.close().await;
    }
}
