//! Matching's storage. Each resource is a JSON document (the domain value) beside the columns
//! its lists filter on; changes take the handler's `&mut Tx`, so a change and its event commit
//! together; reads take any executor. Updates are conditional on the row's `version`
//! (optimistic concurrency that works the same on SQLite and PostgreSQL).

pub mod assignments;
pub mod bodies;
pub mod needs;
pub mod volunteers;

use serde::{Serialize, de::DeserializeOwned};
use sqlx::{Any, any::AnyArguments, query::Query};

use minqing_kit::error::StoreError;

pub(crate) const MIGRATIONS: minqing_kit::db::Migrations = minqing_kit::db::Migrations {
    sqlite: &[(
        100,
        "matching tables",
        include_str!("../../migrations/sqlite.sql"),
    )],
    postgres: &[(
        100,
        "matching tables",
        include_str!("../../migrations/postgres.sql"),
    )],
};

/// What an idempotent insert found.
#[derive(Debug)]
pub enum Inserted<T> {
    /// The row is new.
    New,
    /// The request id was used before: the earlier request's hash and its resource.
    Existing {
        /// Hash of the earlier request.
        request_hash: String,
        /// What it created.
        value: Box<T>,
    },
}

pub(crate) fn decode_error(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Other(sqlx::Error::Decode(format!("{what}: {err}").into()))
}

pub(crate) fn to_doc<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| decode_error("document", e))
}

pub(crate) fn from_doc<T: DeserializeOwned>(doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|e| decode_error("document", e))
}

/// A value bound to a numbered placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Text(String),
    Int(i64),
}

/// A `WHERE` clause built from optional filters; every value is bound, never inlined.
#[derive(Debug, Default)]
pub(crate) struct Where {
    clauses: Vec<String>,
    vals: Vec<Val>,
}

impl Where {
    /// The next placeholder, bound to `v`.
    pub fn arg(&mut self, v: Val) -> String {
        self.vals.push(v);
        format!("${}", self.vals.len())
    }

    /// Adds a clause.
    pub fn push(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    /// `column = text`.
    pub fn text(&mut self, column: &str, value: &str) {
        let p = self.arg(Val::Text(value.to_string()));
        self.push(format!("{column} = {p}"));
    }

    /// `column IN (ints…)`, skipped when empty.
    pub fn ints_in(&mut self, column: &str, values: &[i64]) {
        if values.is_empty() {
            return;
        }
        let list: Vec<String> = values.iter().map(|v| self.arg(Val::Int(*v))).collect();
        self.push(format!("{column} IN ({})", list.join(", ")));
    }

    /// ` WHERE …` or nothing.
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// Binds the values, in placeholder order.
    pub fn bind<'q>(
        &self,
        mut query: Query<'q, Any, AnyArguments>,
    ) -> Query<'q, Any, AnyArguments> {
        for v in &self.vals {
            query = match v {
                Val::Text(t) => query.bind(t.clone()),
                Val::Int(i) => query.bind(*i),
            };
        }
        query
    }
}
