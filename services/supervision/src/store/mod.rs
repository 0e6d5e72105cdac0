//! Supervision's storage. Columns are portable (TEXT and integers) so one set of queries
//! runs on SQLite and PostgreSQL behind sqlx `Any`; documents are JSON in TEXT. Changes take
//! the handler's `&mut Tx`, so a change and its event commit together.

pub mod calendars;
pub mod clocks;
pub mod ratings;
pub mod replies;

use serde::{Serialize, de::DeserializeOwned};

use minqing_kit::error::StoreError;

/// Supervision's migrations, one entry per part, in version order. A new part adds its own
/// files and entry with the next free version.
pub(crate) const MIGRATIONS: minqing_kit::db::Migrations = minqing_kit::db::Migrations {
    sqlite: &[
        (
            100,
            "supervision calendars",
            include_str!("../../migrations/100_calendars.sqlite.sql"),
        ),
        (
            101,
            "supervision clocks and timers",
            include_str!("../../migrations/101_clocks.sqlite.sql"),
        ),
        (
            102,
            "supervision replies",
            include_str!("../../migrations/102_replies.sqlite.sql"),
        ),
        (
            103,
            "supervision ratings, scores, assessments and annotations",
            include_str!("../../migrations/103_ratings.sqlite.sql"),
        ),
        (
            104,
            "supervision clocks re-planned on calendar edits",
            include_str!("../../migrations/104_replan.sqlite.sql"),
        ),
        (
            200,
            "supervision indicators",
            include_str!("../../migrations/200_indicators.sqlite.sql"),
        ),
        (
            201,
            "supervision hot spots' cases as rows",
            include_str!("../../migrations/201_hotspot_cases.sqlite.sql"),
        ),
        (
            202,
            "supervision hot spots looked up by case",
            include_str!("../../migrations/202_hotspot_cases_by_case.sqlite.sql"),
        ),
    ],
    postgres: &[
        (
            100,
            "supervision calendars",
            include_str!("../../migrations/100_calendars.postgres.sql"),
        ),
        (
            101,
            "supervision clocks and timers",
            include_str!("../../migrations/101_clocks.postgres.sql"),
        ),
        (
            102,
            "supervision replies",
            include_str!("../../migrations/102_replies.postgres.sql"),
        ),
        (
            103,
            "supervision ratings, scores, assessments and annotations",
            include_str!("../../migrations/103_ratings.postgres.sql"),
        ),
        (
            104,
            "supervision clocks re-planned on calendar edits",
            include_str!("../../migrations/104_replan.postgres.sql"),
        ),
        (
            200,
            "supervision indicators",
            include_str!("../../migrations/200_indicators.postgres.sql"),
        ),
        (
            201,
            "supervision hot spots' cases as rows",
            include_str!("../../migrations/201_hotspot_cases.postgres.sql"),
        ),
        (
            202,
            "supervision hot spots looked up by case",
            include_str!("../../migrations/202_hotspot_cases_by_case.postgres.sql"),
        ),
    ],
};

pub(crate) fn decode_error(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Other(sqlx::Error::Decode(format!("{what}: {err}").into()))
}

pub(crate) fn to_doc<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| decode_error("document", e))
}

pub(crate) fn from_doc<T: DeserializeOwned>(doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|e| decode_error("document", e))
}

/// The rows of `sql` for all of `ids`, a statement per chunk ([`id_chunks`]): `sql` is given
/// a chunk's `IN (…)` list of placeholders (`$1, $2, …`), the statement's only ones.
pub(crate) async fn rows_in(
    conn: &mut sqlx::AnyConnection,
    ids: &[String],
    sql: impl Fn(&str) -> String,
) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
    let mut out = Vec::new();
    for chunk in id_chunks(ids, 1) {
        let text = sql(&minqing_kit::db::placeholders(chunk.len()));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
        for id in chunk {
            q = q.bind(id.clone());
        }
        out.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// Cuts `ids` into chunks for `IN (…)` lists of `per_id` placeholders an id: each chunk stays
/// under the statement-size cap routing's multi-row writes use
/// ([`minqing_kit::db::MAX_STATEMENT_BYTES`] of values), under the bind-parameter limit and
/// under [`minqing_kit::db::MAX_ROWS_PER_STATEMENT`] ids, and holds a
/// [`statement_size`](minqing_kit::db::statement_size) of ids, so its text is one the
/// connection has prepared before.
pub(crate) fn id_chunks(ids: &[String], per_id: usize) -> Vec<&[String]> {
    let per_id = per_id.max(1);
    let most = (minqing_kit::db::MAX_PARAMETERS / per_id)
        .clamp(1, minqing_kit::db::MAX_ROWS_PER_STATEMENT);
    let sizes: Vec<usize> = ids.iter().map(|id| (id.len() + 8) * per_id).collect();
    minqing_kit::db::sized_chunks(ids, &sizes, most)
}

#[cfg(test)]
mod tests {
    #[test]
    fn id_chunks_stay_under_the_caps_and_keep_every_id_in_order() {
        let ids: Vec<String> = (0..2_000).map(|i| format!("{i:036}")).collect();
        let chunks = super::id_chunks(&ids, 2);
        assert!(chunks.len() > 1);
        for c in &chunks {
            assert!(!c.is_empty());
            let bytes: usize = c.iter().map(|id| (id.len() + 8) * 2).sum();
            assert!(bytes <= minqing_kit::db::MAX_STATEMENT_BYTES, "{bytes}");
        }
        let joined: Vec<String> = chunks.concat();
        assert_eq!(joined, ids);
        assert!(super::id_chunks(&[], 1).is_empty());
        // One id larger than the cap still goes, alone.
        let big = vec!["x".repeat(minqing_kit::db::MAX_STATEMENT_BYTES), "y".into()];
        assert_eq!(super::id_chunks(&big, 1).len(), 2);
    }
}
