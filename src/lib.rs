//! eventvault: an event registry and a durable event bus on one RocksDB store, with automatic
//! backup and restore.
//!
//! The binary is thin: [`cli::run`] dispatches to [`server::serve`] and [`worker::run`].
//! [`store`] owns the one RocksDB handle; [`registry`] and [`bus`] share it; [`http`] holds
//! the routes only.

#![warn(missing_docs)]

pub mod backup;
pub mod bus;
pub mod cli;
pub mod client;
pub mod config;
pub mod durable;
pub mod fault;
pub mod http;
pub mod names;
pub mod observe;
pub mod registry;
pub mod server;
pub mod signals;
pub mod startup;
pub mod store;
pub mod untrusted;
pub mod worker;
