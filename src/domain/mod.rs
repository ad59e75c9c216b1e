//! Domain types, parsed once at the edge ("parse, don't validate"); they know nothing of HTTP.

pub mod callback;
pub mod phone;
pub mod settings;
