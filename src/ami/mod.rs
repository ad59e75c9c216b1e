//! The AMI (Asterisk Manager Interface) client: framing, typed actions and events, one connection
//! task per PBX, and the per-tenant pool.

pub mod codec;
