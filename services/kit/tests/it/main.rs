//! The kit's integration tests: real gRPC over loopback sockets, real databases (a fresh
//! SQLite file and, where reachable, a fresh PostgreSQL database per test).

mod auth;
mod fanout;
mod feed;
mod harness;
mod horizon;
mod lanes;
mod overload;
mod pace;
mod quiet;
mod rows;
mod sessions;
mod settings;
mod tls;
