//! Rebuilds the crate when a migration is added, changed or removed: `refinery::embed_migrations!`
//! (src/store/migrations.rs) reads the directory at compile time but tells cargo nothing, so a new
//! migration would otherwise be left out of the binary until some other change recompiled it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
