//! Rebuilding the indicators from the events: the three feeds are read again from their first
//! events, every case's facts folded in memory with the same code the consumers use, and the
//! facts and rollups replaced in one transaction together with the consumers' cursors. The
//! consumers' leases are taken in that transaction first, so a consumer holding a batch
//! cannot commit it afterwards (its fence fails); it resubscribes from the new cursors.

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use sqlx::Row;
use tonic::transport::Channel;

use super::{
    Source,
    facts::{self, Facts},
    rollup::{self, Counts, Key},
};
use minqing_kit::{
    db::{Db, Tx},
    error::StoreError,
    feed::{BearerToken, Cursor, read_after, to_proto},
};
use minqing_proto::minqing::events::v1::{
    Event, SubscribeRequest, event_feed_client::EventFeedClient,
};

/// How long a remote feed may stay silent before it counts as read to its end (only when
/// its last batch was exactly full, or it is empty).
const IDLE: Duration = Duration::from_secs(2);
const BATCH: i32 = 1000;

/// Where the feeds are.
#[derive(Debug, Clone)]
pub struct Feeds {
    /// Intake's.
    pub intake: Channel,
    /// Routing's.
    pub routing: Channel,
    /// A token with the service role.
    pub token: String,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Events read.
    pub events: i64,
    /// Cases.
    pub cases: i64,
    /// Rollup rows written.
    pub rows: i64,
    /// Rows that differed from the incremental ones.
    pub differing: i64,
}

/// Rebuilds the facts and rollups of `db` from the feeds.
pub async fn rebuild(db: &Db, feeds: &Feeds) -> anyhow::Result<Outcome> {
    let mut cursors = Vec::new();
    let mut cases: HashMap<String, Facts> = HashMap::new();
    let mut events = 0i64;
    for source in Source::ALL {
        let (read, cursor) = match source {
            Source::Intake => read_remote(&feeds.intake, &feeds.token, source).await?,
            Source::Routing => read_remote(&feeds.routing, &feeds.token, source).await?,
            Source::Supervision => read_local(db, source).await?,
        };
        events += read.len() as i64;
        for event in &read {
            let Ok(Some(id)) = facts::event_case(event) else {
                continue;
            };
            let f = cases.entry(id.clone()).or_insert_with(|| Facts {
                case_id: id,
                ..Facts::default()
            });
            if let Err(err) = facts::apply(f, event) {
                tracing::warn!(kind = %event.kind, error = %err, "rebuild skips an unreadable event");
            }
        }
        cursors.push((source.consumer(), cursor));
    }
    let mut sums: HashMap<Key, Counts> = HashMap::new();
    for f in cases.values() {
        for (k, c) in rollup::contribution(f) {
            sums.entry(k).or_default().add(&c, 1);
        }
    }
    let mut rows: Vec<(Key, Counts)> = sums.into_iter().filter(|(_, c)| !c.is_zero()).collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));

    let mut tx = db.begin().await?;
    super::serialize(&mut tx).await?;
    take_leases(&mut tx).await?;
    let differing = compare(&mut tx, &rows).await?;
    sqlx::query("DELETE FROM ind_rollup")
        .execute(tx.conn())
        .await
        .map_err(StoreError::from)?;
    sqlx::query("DELETE FROM ind_cases")
        .execute(tx.conn())
        .await
        .map_err(StoreError::from)?;
    let mut ordered: Vec<&Facts> = cases.values().collect();
    ordered.sort_by(|a, b| a.case_id.cmp(&b.case_id));
    facts::save_many(&mut tx, ordered).await?;
    rollup::insert_many(&mut tx, &rows).await?;
    for (name, cursor) in &cursors {
        sqlx::query(
            "INSERT INTO consumer_cursors (name, cursor, update_time) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, update_time = excluded.update_time",
        )
        .bind(*name)
        .bind(cursor)
        .bind(minqing_kit::time::Clock::System.now_micros())
        .execute(tx.conn())
        .await
        .map_err(StoreError::from)?;
    }
    tx.commit().await?;
    Ok(Outcome {
        events,
        cases: cases.len() as i64,
        rows: rows.len() as i64,
        differing,
    })
}

/// Takes the consumers' leases (expired at once, so they take them back right away and
/// resubscribe from the cursors written here).
async fn take_leases(tx: &mut Tx) -> Result<(), StoreError> {
    for source in Source::ALL {
        sqlx::query("UPDATE consumer_leases SET holder = $2, expire_time = 0 WHERE name = $1")
            .bind(source.consumer())
            .bind("rebuild")
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}

/// How many rows differ between what is stored and `rows`.
async fn compare(tx: &mut Tx, rows: &[(Key, Counts)]) -> Result<i64, StoreError> {
    let sql = format!(
        "SELECT grain, period, place, dim, value, {} FROM ind_rollup",
        rollup::count_columns().join(", ")
    );
    let stored = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(tx.conn())
        .await?;
    let mut old: HashMap<(String, i64, String, String, String), Counts> = HashMap::new();
    for row in &stored {
        let c = rollup::counts_from_row(row, 5)?;
        if c.is_zero() {
            continue;
        }
        old.insert(
            (
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
                row.try_get(4)?,
            ),
            c,
        );
    }
    let mut differing = 0;
    for (k, c) in rows {
        let key = (
            k.grain.to_string(),
            k.period,
            k.place.clone(),
            k.dim.to_string(),
            k.value.clone(),
        );
        match old.remove(&key) {
            Some(o) if o == *c => {}
            _ => differing += 1,
        }
    }
    Ok(differing + old.len() as i64)
}

/// Reads a service's own feed to its end.
async fn read_local(db: &Db, source: Source) -> anyhow::Result<(Vec<Event>, String)> {
    let kinds = source.kinds();
    let mut cursor = Cursor::default();
    let mut out = Vec::new();
    loop {
        let batch = read_after(db, cursor, i64::from(BATCH)).await?;
        let Some(last) = batch.events.last() else {
            if batch.held_back {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            break;
        };
        cursor = last.cursor;
        out.extend(
            batch
                .events
                .into_iter()
                .filter(|e| kinds.contains(&e.kind))
                .map(|e| to_proto(e, db.name())),
        );
    }
    Ok((out, cursor.to_string()))
}

/// Reads another service's feed to its end: until a batch is not full (or the feed stays
/// silent for [`IDLE`]).
async fn read_remote(
    channel: &Channel,
    token: &str,
    source: Source,
) -> anyhow::Result<(Vec<Event>, String)> {
    let kinds = source.kinds();
    let mut client = EventFeedClient::with_interceptor(channel.clone(), BearerToken::new(token))
        .max_decoding_message_size(64 << 20);
    // Every kind is asked for, so that a batch's size tells whether the feed was caught up.
    let mut stream = client
        .subscribe(SubscribeRequest {
            after: String::new(),
            kinds: Vec::new(),
            max_batch: BATCH,
        })
        .await?
        .into_inner();
    let mut cursor = String::new();
    let mut out = Vec::new();
    loop {
        let Ok(next) = tokio::time::timeout(IDLE, stream.next()).await else {
            break;
        };
        let Some(batch) = next else { break };
        let batch = batch?;
        let full = batch.events.len() as i32 >= BATCH;
        cursor = batch.cursor;
        out.extend(batch.events.into_iter().filter(|e| kinds.contains(&e.kind)));
        if !full {
            break;
        }
    }
    Ok((out, cursor))
}
