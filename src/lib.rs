//! dialback: the backend a courier app calls to place a two-leg callback through the company's
//! Asterisk PBX over AMI.
//!
//! Where each concern lives (imports run one way: `http` → `callbacks`, `recordings` → `domain`,
//! `store`, `ami`; `domain` depends on nothing of the application):
//!
//! ```text
//! main.rs        the CLI: serve, migrate, token, pbx-sim
//! startup.rs     wires the services and the HTTP server from a config
//! config.rs      settings from dialback.toml and DIALBACK_* variables
//! telemetry.rs   logs (with error cause chains) and the metrics recorder
//! http/          the API: the route table, extractors (who calls, pages), problem+json for every
//!                error, one file per resource (the journal's CSV too), the admin page and the docs
//! callbacks/     placing a callback (policy, originate, fallback), the Idempotency-Key protocol,
//!                the callback as the API shows it, AMI events as facts, the call tracker, the
//!                Test button's diagnosis
//! recordings/    fetching recordings over FTP/FTPS, storing them, binding them to calls, signed
//!                audio URLs, the background scheduler
//! limits.rs      rate limits (per courier, per company, failed logins per address)
//! auth.rs        JWT claims, minting and verification
//! crypto.rs      secrets at rest and signatures; tls.rs: the TLS client setup AMI and FTPS share
//! domain/        phone numbers, PBX settings, couriers and orders, the callback state machine,
//!                recording file names, the dialplan a company's PBX needs: parsed once, no I/O
//! store/         SQL as functions per table; the migrations runner
//! ami/           the AMI client: codec, typed messages, transport, supervised client, pool
//! pbx_sim/       the protocol-faithful PBX simulator the demo and the tests talk to, with a model
//!                of extensions.conf that runs the dialplan dialback generates
//! ```

pub mod agi;
pub mod ami;
pub mod auth;
pub mod callbacks;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod events;
pub mod http;
pub mod limits;
pub mod pbx_sim;
pub mod pg_tls;
pub mod recordings;
pub mod return_calls;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod webhooks;
