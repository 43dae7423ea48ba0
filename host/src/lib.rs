//! `carbon-host`: the master platform's server and operator tools over `carbon-engine`.
//!
//! **Architecture invariant:** the host knows no SQL; it reaches the database only through the
//! engine and its `Store`.

pub mod api;
pub mod ca;
pub mod cli;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod notify_url;
pub mod ops;
pub mod plugin_cli;
pub mod push;
pub mod server;
pub mod wire;
