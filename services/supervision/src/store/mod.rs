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
