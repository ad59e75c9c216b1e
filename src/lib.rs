//! dialback: the backend a courier app calls to place a two-leg callback through the company's
//! Asterisk PBX over AMI.
//!
//! The product crate of a workspace (Cargo.toml): it builds on `dialback-domain` (crates/domain),
//! `dialback-ami` (crates/ami) and `dialback-logging` (crates/logging), which cannot import it;
//! the PBX simulator (crates/pbx-sim) is only a dev-dependency, so it is not in the binary.
//!
//! Where each concern lives (imports run one way: `http`, `agi` → `dialplan_watch` → `return_calls`, `webhooks` →
//! `callbacks`, `recordings` → `events`, `domain`, `store`, `ami`):
//!
//! ```text
//! main.rs        the CLI: serve, migrate, token, company, recordings, call-in
//! call_in.rs     `dialback call-in`: a client's call to the company's number, placed on any Asterisk
//! startup.rs     wires the services and the HTTP server from a config; follows settings changes
//! config.rs      settings from dialback.toml and DIALBACK_* variables
//! telemetry.rs   the metrics recorder; logs and error cause chains (from crates/logging)
//! i18n.rs        what people read in their language (Russian, English): the admin page's messages
//!                and the Test button's hints, from one Fluent catalogue per language (locales/)
//! http/          the API: the route table, extractors (who calls, pages), JSON object bodies,
//!                problem+json for every error, one file per resource (the journal's CSV and live
//!                streams too, the dashboard's counts), the admin page and the docs
//! agi/           the FastAGI server the PBX asks where a calling-back client goes
//! callbacks/     placing a callback (policy, originate, fallback), the Idempotency-Key protocol,
//!                the callback as the API shows it, AMI events as facts, the call tracker, the
//!                takeover of calls between processes, the Test button's diagnosis, the caches a
//!                tap is decided on
//! return_calls/  routing a client's call back (rules, decision), following it, its takeover
//! dialplan_watch.rs  whether each company's PBX runs the dialplan dialback generated (checked on
//!                save and periodically; the Test button's dialplan step reads it the same way)
//! webhooks/      endpoints, signing, the deliverer
//! view.rs        what every resource's view shares: who is looking, timestamps, masked numbers
//! events.rs      the bus: what was written, told to live streams and the deliverer
//! cluster.rs     this process among those on one database (its id, heartbeat, how many are
//!                alive) and what its services share: the AMI sessions, the bus, the limits
//! recordings/    fetching recordings over FTP/FTPS, storing them, binding them to calls, signed
//!                audio URLs, the background scheduler
//! limits.rs      rate limits (per courier, per company, failed logins per address), shared among
//!                the processes alive
//! companies.rs   the operator's work on companies: create, suspend, give an issuer, remove
//! auth/          JWT claims and roles, minting, verification with each company's issuer (its
//!                PEM keys, its JWKS, its HS256 secret) or the deployment's own keys
//! outbound.rs    which URLs dialback may call (webhooks, JWKS): https, public addresses
//! crypto.rs      secrets at rest and signatures; pg_tls.rs: TLS to PostgreSQL as libpq's sslmode
//!                asks (the TLS client set-up AMI and FTPS share is `ami::tls`)
//! store/         SQL as functions per table; the migrations runner; the processes and their
//!                heartbeats; change notifications (NOTIFY/LISTEN)
//! ```
//!
//! The other crates:
//!
//! ```text
//! crates/domain   phone numbers, PBX settings, couriers and orders, the callback and return-call
//!                 state machines, recording file names, the dialplan a company's PBX needs: parsed
//!                 once, no I/O (its manifest has nothing of the application to import)
//! crates/ami      the AMI client: codec, typed messages, transports (TCP, TLS, HTTP), supervised
//!                 client, pool, the TLS client set-up
//! crates/logging  the log subscriber and error cause chains, for every crate
//! crates/pbx-sim  the protocol-faithful PBX simulator the demo and the tests talk to (AMI, AJAM,
//!                 FastAGI calls in), with a model of extensions.conf that runs the dialplan
//!                 dialback generates; its own binary, `pbx-sim`
//! ```

pub mod agi;
pub mod auth;
pub mod call_in;
pub mod callbacks;
pub mod cluster;
pub mod companies;
pub mod config;
pub mod crypto;
pub mod dialplan_watch;
pub mod events;
pub mod http;
pub mod i18n;
pub mod limits;
pub mod outbound;
pub mod pg_tls;
pub mod recordings;
pub mod return_calls;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod view;
pub mod webhooks;

// The crates of the workspace this one builds on, under the names the application uses.
pub use dialback_ami as ami;
pub use dialback_ami::tls;
pub use dialback_domain as domain;
