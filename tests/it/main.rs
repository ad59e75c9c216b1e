//! Black-box tests against the running app, a real PostgreSQL (per-test database), and later the
//! PBX simulator and a real FTP server. One test binary, so the suite links once.
//!
//! Needs `DIALBACK_TEST_DATABASE_URL` (an admin URL of a throwaway cluster); `scripts/test` sets it.
//! `TEST_LOG=1` prints the app's logs.

mod support;

mod admin_page;
mod ami;
mod callbacks;
mod foundation;
mod pbx_sim;
mod pbx_test;
mod recordings;
