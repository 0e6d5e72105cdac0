//! Matching (placeholder while the crate is built up).
#![forbid(unsafe_code)]

pub mod calendar;
pub mod config;
pub mod domain;
pub mod flow;
pub mod rank;
