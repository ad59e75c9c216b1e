//! dialback: the backend a courier app calls to place a two-leg callback through the company's
//! Asterisk PBX over AMI.
//!
//! - [`config`]: settings from `dialback.toml` and `DIALBACK_*` variables.
//! - [`telemetry`]: logs and metrics.
//! - [`startup`]: builds the app (pool, migrations, HTTP server) from a config.
//! - [`http`]: routes and handlers; [`error`]: the problem+json error type.
//! - [`store`]: PostgreSQL pool, migrations and SQL.
//! - [`auth`]: JWT claims; [`crypto`]: encryption and signing with the secrets key; [`tls`]: the
//!   TLS client setup AMI and FTPS share.
//! - [`domain`]: phone numbers, PBX settings, the callback state machine.
//! - [`callbacks`]: placing callbacks, tracking them from AMI events, the Test button.
//! - [`ami`]: the AMI client; [`pbx_sim`]: the protocol-faithful PBX simulator.
//! - [`recordings`]: fetching call recordings over FTP/FTPS and binding them to calls.

pub mod ami;
pub mod auth;
pub mod callbacks;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod limits;
pub mod pbx_sim;
pub mod recordings;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
