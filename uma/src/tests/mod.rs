//! In-crate tests: loom models of the concurrent protocols
//! (`RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=4 cargo test -p bsdalloc-uma
//! --release loom`; without `LOOM_MAX_PREEMPTIONS` every interleaving, see
//! `loom_models` for which models finish so), and tests that need the
//! zone's internals (holding its lock).

#[cfg(not(loom))]
mod contention;
#[cfg(loom)]
mod loom_models;

/// Serializes the in-crate tests that hold a UMA lock while they wait for
/// another thread (`contention`) with the fork test, whose prepare step
/// takes every lock in order and would wait for them (and they for it).
#[cfg(not(loom))]
pub(crate) fn lock_holders_serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
