//! dialback: the backend a courier app calls to place a two-leg callback through the company's
//! Asterisk PBX over AMI.
//!
//! - [`config`]: settings from `dialback.toml` and `DIALBACK_*` variables.
//! - [`telemetry`]: logs and metrics.
//! - [`startup`]: builds the app (pool, migrations, HTTP server) from a config.
//! - [`http`]: routes and handlers; [`error`]: the problem+json error type.
//! - [`store`]: PostgreSQL pool, migrations and SQL.
//! - [`auth`]: JWT claims; [`crypto`]: encryption of stored secrets.

pub mod ami;
pub mod auth;
pub mod callbacks;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod http;
pub mod pbx_sim;
pub mod startup;
pub mod store;
pub mod telemetry;
