//! Black-box tests against the running app: a real PostgreSQL (a database per test), the PBX
//! simulator, a real FTP server and headless Chromium; every answer is checked against
//! openapi.yaml. One test binary, so the suite links once.
//!
//! Needs `DIALBACK_TEST_DATABASE_URL` (an admin URL of a throwaway cluster); `scripts/test` sets it.
//! `TEST_LOG=1` prints the app's logs.

mod support;

mod admin_page;
mod ajam;
mod ami;
mod callbacks;
mod cluster;
mod confirm;
mod dashboard;
mod dialplan;
mod foundation;
mod issuers;
mod journal;
mod live;
mod object_storage;
mod pbx_sim;
mod pbx_test;
mod postgres_tls;
mod recordings;
mod retention;
mod return_calls;
mod sftp;
mod webhooks;
