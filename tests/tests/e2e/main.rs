//! End-to-end tests: real gRPC over loopback sockets against services started for real, on
//! a fresh SQLite database and (where reachable) a fresh PostgreSQL database each.

mod indicators;
mod intake;
mod matching;
mod routing;
mod supervision;
mod support;
