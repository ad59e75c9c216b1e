//! dialback: the backend a courier app calls to place a two-leg callback through the company's
//! Asterisk PBX over AMI.
//!
//! Where each concern lives (imports run one way: `http`, `agi` → `dialplan_watch` → `return_calls`, `webhooks` →
//! `callbacks`, `recordings` → `events`, `domain`, `store`, `ami`; `domain` depends on nothing of
//! the application):
//!
//! ```text
//! main.rs        the CLI: serve, migrate, token, pbx-sim, call-in
//! startup.rs     wires the services and the HTTP server from a config; follows settings changes
//! config.rs      settings from dialback.toml and DIALBACK_* variables
//! telemetry.rs   logs (with error cause chains) and the metrics recorder
//! i18n.rs        what people read in their language (Russian, English): the admin page's messages
//!                and the Test button's hints, from one Fluent catalogue per language (locales/)
//! http/          the API: the route table, extractors (who calls, pages), JSON object bodies,
//!                problem+json for every error, one file per resource (the journal's CSV and live
//!                streams too, the dashboard's counts), the admin page and the docs
//! agi/           the FastAGI server the PBX asks where a calling-back client goes
//! callbacks/     placing a callback (policy, originate, fallback), the Idempotency-Key protocol,
//!                the callback as the API shows it, AMI events as facts, the call tracker, the
//!                takeover of calls between processes, the Test button's diagnosis
//! return_calls/  routing a client's call back (rules, decision), following it, its takeover
//! dialplan_watch.rs  whether each company's PBX runs the dialplan dialback generated (checked on
//!                save and periodically; the Test button's dialplan step reads it the same way)
//! webhooks/      endpoints, signing, the deliverer
//! events.rs      the bus: what was written, told to live streams and the deliverer
//! recordings/    fetching recordings over FTP/FTPS, storing them, binding them to calls, signed
//!                audio URLs, the background scheduler
//! limits.rs      rate limits (per courier, per company, failed logins per address), shared among
//!                the processes alive
//! companies.rs   the operator's work on companies: create, suspend, give an issuer, remove
//! auth/          JWT claims and roles, minting, verification with each company's issuer (its
//!                PEM keys, its JWKS, its HS256 secret) or the deployment's own keys
//! outbound.rs    which URLs dialback may call (webhooks, JWKS): https, public addresses
//! crypto.rs      secrets at rest and signatures; tls.rs: the TLS client setup AMI and FTPS share;
//!                pg_tls.rs: TLS to PostgreSQL as libpq's sslmode asks
//! domain/        phone numbers, PBX settings, couriers and orders, the callback and return-call
//!                state machines, recording file names, the dialplan a company's PBX needs: parsed
//!                once, no I/O
//! store/         SQL as functions per table; the migrations runner; the processes and their
//!                heartbeats; change notifications (NOTIFY/LISTEN)
//! ami/           the AMI client: codec, typed messages, transports (TCP, TLS, HTTP), supervised
//!                client, pool
//! pbx_sim/       the protocol-faithful PBX simulator the demo and the tests talk to (AMI and AJAM),
//!                with a model of extensions.conf that runs the dialplan dialback generates
//! ```

pub mod agi;
pub mod ami;
pub mod auth;
pub mod callbacks;
pub mod companies;
pub mod config;
pub mod crypto;
pub mod dialplan_watch;
pub mod domain;
pub mod events;
pub mod http;
pub mod i18n;
pub mod limits;
pub mod outbound;
pub mod pbx_sim;
pub mod pg_tls;
pub mod recordings;
pub mod return_calls;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod webhooks;
