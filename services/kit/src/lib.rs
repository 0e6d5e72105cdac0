//! What every Minqing service stands on.
//!
//! - [`config`]: typed TOML config with environment overrides; invalid config exits 64.
//! - [`db`]: one storage abstraction over SQLite (embedded default) and PostgreSQL, with
//!   per-service, per-backend migrations.
//! - [`feed`]: the transactional outbox, `EventFeed/Subscribe`, and exactly-once consumers
//!   with a lease.
//! - [`audit`]: the audit log of personal-data reads, written in batches, never dropped.
//! - [`auth`]: bearer tokens (stored hashed) naming a principal, role and scope.
//! - [`error`]: one mapping to `google.rpc.Status` with details.
//! - [`server`]: gRPC server bootstrap: health, reflection, tower stack, graceful drain.
//! - [`telemetry`] and [`http`]: logs, OpenTelemetry traces and metrics, `/metrics`.
//! - [`time`]: timestamps and a clock tests can drive.
//! - [`testing`]: a fresh database per test on either backend.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod feed;
pub mod http;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod testing;
pub mod time;

pub use minqing_proto as proto;
