//! Case ratings, place scores, assessments and annotations. Each is stored as its wire
//! message (prost-encoded, hex in TEXT) beside the columns lists and indicators use: these
//! records have no domain behaviour beyond what the handler checks.

use prost::Message;
use sqlx::{Any, Executor, Row};

use super::decode_error;
use crate::clock::Place;
use minqing_kit::{db::Tx, error::StoreError, time::Micros};
use minqing_proto::minqing::supervision::v1 as pb;

fn encode<M: Message>(m: &M) -> String {
    hex::encode(m.encode_to_vec())
}

fn decode<M: Message + Default>(doc: &str) -> Result<M, StoreError> {
    let bytes = hex::decode(doc).map_err(|e| decode_error("record", e))?;
    M::decode(bytes.as_slice()).map_err(|e| decode_error("record", e))
}

/// Inserts a case's rating; false when the case was rated already.
pub async fn insert_rating(
    tx: &mut Tx,
    case_id: &str,
    place: &Place,
    r: &pb::CaseRating,
    now: Micros,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO case_ratings (case_id, unit, handling_score, staff_score, on_behalf, \
            district, street, community, create_time, doc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (case_id) DO NOTHING",
    )
    .bind(case_id)
    .bind(&r.unit)
    .bind(i64::from(r.handling_score))
    .bind(i64::from(r.staff_score))
    .bind(i64::from(r.on_behalf))
    .bind(&place.district)
    .bind(&place.street)
    .bind(&place.community)
    .bind(now)
    .bind(encode(r))
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A case's rating.
pub async fn rating<'c, E: Executor<'c, Database = Any>>(
    db: E,
    case_id: &str,
) -> Result<Option<pb::CaseRating>, StoreError> {
    let row = sqlx::query("SELECT doc FROM case_ratings WHERE case_id = $1")
        .bind(case_id)
        .fetch_optional(db)
        .await?;
    row.map(|r| decode(&r.try_get::<String, _>("doc")?))
        .transpose()
}

/// Puts a resident's score of a place for a month (replacing theirs).
pub async fn put_score(
    tx: &mut Tx,
    resident: &str,
    s: &pb::PlaceScore,
    now: Micros,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO place_scores (place, period, resident, score, comment, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (place, period, resident) DO UPDATE SET score = excluded.score, \
            comment = excluded.comment, create_time = excluded.create_time",
    )
    .bind(&s.place)
    .bind(&s.period)
    .bind(resident)
    .bind(i64::from(s.score))
    .bind(&s.comment)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// `(place, count, sum)` of the scores of `places` in a month.
pub async fn score_sums<'c, E: Executor<'c, Database = Any>>(
    db: E,
    period: &str,
    places: &[String],
) -> Result<Vec<(String, i64, i64)>, StoreError> {
    if places.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = (0..places.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT place, CAST(COUNT(*) AS BIGINT) AS n, CAST(SUM(score) AS BIGINT) AS total \
         FROM place_scores WHERE period = $1 AND place IN ({}) GROUP BY place ORDER BY place",
        list.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(period.to_string());
    for p in places {
        q = q.bind(p.clone());
    }
    let rows = q.fetch_all(db).await?;
    rows.iter()
        .map(|r| Ok((r.try_get("place")?, r.try_get("n")?, r.try_get("total")?)))
        .collect()
}

/// Inserts an assessment; false when that rater assessed that ratee in the period already.
pub async fn insert_assessment(
    tx: &mut Tx,
    a: &pb::Assessment,
    now: Micros,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO assessments (period, rater, ratee, direction, score, comment, recorded_by, \
            create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (period, rater, ratee) DO NOTHING",
    )
    .bind(&a.period)
    .bind(&a.rater)
    .bind(&a.ratee)
    .bind(i64::from(a.direction))
    .bind(i64::from(a.score))
    .bind(&a.comment)
    .bind(&a.recorded_by)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Assessments a place gave or received in a period.
pub async fn assessments<'c, E: Executor<'c, Database = Any>>(
    db: E,
    period: &str,
    place: &str,
) -> Result<Vec<pb::Assessment>, StoreError> {
    let rows = sqlx::query(
        "SELECT period, rater, ratee, direction, score, comment, recorded_by, create_time \
         FROM assessments WHERE period = $1 AND (rater = $2 OR ratee = $3) \
         ORDER BY rater, ratee",
    )
    .bind(period)
    .bind(place)
    .bind(place)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            let (period, rater, ratee): (String, String, String) = (
                r.try_get("period")?,
                r.try_get("rater")?,
                r.try_get("ratee")?,
            );
            Ok(pb::Assessment {
                name: format!("assessments/{period}/{rater}/{ratee}"),
                period,
                rater,
                ratee,
                direction: i32::try_from(r.try_get::<i64, _>("direction")?).unwrap_or(0),
                score: i32::try_from(r.try_get::<i64, _>("score")?).unwrap_or(0),
                comment: r.try_get("comment")?,
                recorded_by: r.try_get("recorded_by")?,
                create_time: Some(minqing_kit::time::to_timestamp(r.try_get("create_time")?)),
            })
        })
        .collect()
}

/// Inserts a note.
pub async fn insert_annotation(
    tx: &mut Tx,
    id: &str,
    case_id: &str,
    author: &str,
    text: &str,
    now: Micros,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO annotations (id, case_id, author, text, create_time) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(case_id)
    .bind(author)
    .bind(text)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A case's notes, oldest first.
pub async fn annotations<'c, E: Executor<'c, Database = Any>>(
    db: E,
    case_id: &str,
) -> Result<Vec<pb::Annotation>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, author, text, create_time FROM annotations WHERE case_id = $1 \
         ORDER BY create_time, id",
    )
    .bind(case_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(pb::Annotation {
                name: format!("annotations/{}", r.try_get::<String, _>("id")?),
                case: format!("cases/{case_id}"),
                text: r.try_get("text")?,
                author: r.try_get("author")?,
                create_time: Some(minqing_kit::time::to_timestamp(r.try_get("create_time")?)),
            })
        })
        .collect()
}
