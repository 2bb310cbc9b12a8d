//! In-crate tests: loom models of the concurrent protocols
//! (`RUSTFLAGS="--cfg loom" cargo test -p uma --release loom`), and tests
//! that need the zone's internals (holding its lock).

#[cfg(not(loom))]
mod contention;
#[cfg(loom)]
mod loom_models;
