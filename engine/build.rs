//! `sqlx::migrate!` embeds `migrations/` when the crate compiles; without this, a migration
//! added without a source change is left out of the build until something else changes.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
