//! `sqlx::migrate!` embeds the migration files at compile time; rebuild
//! this crate whenever one of them is added or changed.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
