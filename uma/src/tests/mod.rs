//! In-crate tests: loom models of the concurrent protocols
//! (`RUSTFLAGS="--cfg loom" cargo test -p uma --release loom`).

#[cfg(loom)]
mod loom_models;
