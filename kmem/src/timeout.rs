//! The lazy timeout: FreeBSD's `uma_timeout` without a thread of its own.
//!
//! The kernel runs `uma_timeout` from a callout every `UMA_TIMEOUT` (20 s):
//! each zone's working-set estimate is updated, its bucket cache trimmed
//! to it, and the freed slabs go back to the VM. Without that pass a
//! burst of frees stays cached for good: a program that allocated a
//! gigabyte of small blocks and freed them kept a gigabyte resident.
//!
//! A library cannot count on a thread of its own (the reclaim worker,
//! [`start_reclaim_worker`](crate::start_reclaim_worker), is opt-in), so
//! the pass runs in a thread that is allocating anyway, as jemalloc's
//! decay without background threads does:
//!
//! - every size-class zone has a UMA slow-path hook ([`tick`]), called at
//!   the end of an allocation or free that took the slow path (a thread's
//!   bucket ran dry or filled: about once per bucket of operations, never
//!   on the fast path), with no allocator lock held; large frees call it
//!   too;
//! - [`tick`] reads the coarse monotonic clock (vDSO, no system call) and,
//!   once per period (1 s by default, [`set_timeout_period`]), one thread
//!   wins a compare-and-swap of the deadline and runs [`pass`].
//!
//! The pass covers kmem's own zones (the size classes, the quantum cache,
//! the btag zone, whose reserve the keg drain honours, and UMA's internal
//! zones) and the application's zones on [`uma`](crate::uma) whose trim
//! runs none of its code ([`uma::Uma::timeout_plain`]: no fini, no
//! release, the instance's page source), then purges dirty pages and
//! retained spans past their decay time. A zone whose trim would run the
//! application's callbacks is left out: they must not run in whatever
//! thread happens to allocate, maybe holding the application's own locks.
//! The reclaim worker's [`uma::Uma::timeout`] covers those, or the
//! application calls it.
//!
//! A burst goes back over a few periods (the estimate decays to a fifth
//! per quiet period), a steady working set stays cached. While the reclaim
//! worker runs, the tick does nothing: the worker runs the same pass for
//! every zone, and two passes per period would decay the estimates twice
//! as fast.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::kernel::{self, Kernel};

/// The default period of the lazy timeout.
pub const TIMEOUT_PERIOD: Duration = Duration::from_secs(1);

/// The period in nanoseconds (0: off).
static PERIOD_NS: AtomicU64 = AtomicU64::new(TIMEOUT_PERIOD.as_nanos() as u64);
/// When the next pass is due (coarse monotonic nanoseconds).
static NEXT_NS: AtomicU64 = AtomicU64::new(0);
/// Passes run by ticks.
static PASSES: AtomicU64 = AtomicU64::new(0);
/// A pass is running (single flight).
static PASS_BUSY: AtomicBool = AtomicBool::new(false);

/// Sets the period of the lazy timeout (`None` or zero: off). Returns the
/// previous one. The next pass is due one period from now.
pub fn set_timeout_period(period: Option<Duration>) -> Option<Duration> {
    let ns = period.map_or(0, |p| u64::try_from(p.as_nanos()).unwrap_or(u64::MAX));
    NEXT_NS.store(coarse_now_ns().saturating_add(ns), Ordering::Relaxed);
    let old = PERIOD_NS.swap(ns, Ordering::Relaxed);
    (old != 0).then(|| Duration::from_nanos(old))
}

/// Timeout passes the allocating threads have run so far.
pub fn timeout_passes() -> u64 {
    PASSES.load(Ordering::Relaxed)
}

/// The `timeout:` line of the statistics: the period and the passes run.
pub(crate) fn write_timeout_stats(w: &mut dyn core::fmt::Write) -> core::fmt::Result {
    let period = PERIOD_NS.load(Ordering::Relaxed);
    let passes = timeout_passes();
    if period == 0 {
        writeln!(w, "timeout: off; {passes} passes so far")
    } else if crate::pressure::reclaim_worker_running() {
        writeln!(
            w,
            "timeout: run by the reclaim worker; {passes} lazy passes so far"
        )
    } else {
        writeln!(
            w,
            "timeout: lazy, every {} ms; {passes} passes so far",
            period / 1_000_000
        )
    }
}

/// The coarse monotonic clock in nanoseconds (a few milliseconds of
/// resolution; read from the vDSO).
fn coarse_now_ns() -> u64 {
    crate::os::clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// The size-class zones' slow-path hook (and the large free path's): runs
/// a [`pass`] when one is due. Called with no allocator lock held.
pub(crate) fn tick() {
    let period = PERIOD_NS.load(Ordering::Relaxed);
    if period == 0 {
        return;
    }
    let due = NEXT_NS.load(Ordering::Relaxed);
    let now = coarse_now_ns();
    if now < due {
        return;
    }
    if NEXT_NS
        .compare_exchange(
            due,
            now.saturating_add(period),
            Ordering::Relaxed,
            Ordering::Relaxed,
        )
        .is_err()
    {
        return; // another thread runs this one
    }
    if crate::pressure::reclaim_worker_running() {
        return;
    }
    // One pass at a time: a pass longer than the period (a short period,
    // a big trim) must not overlap the next one, whose wss estimate would
    // then cover a nearly empty interval and decay a steady working set.
    if PASS_BUSY.swap(true, Ordering::Acquire) {
        return;
    }
    // None while the allocator is being built (the building thread's own
    // allocations): nothing to trim yet.
    if let Some(k) = kernel::kernel() {
        pass(k);
        PASSES.fetch_add(1, Ordering::Relaxed);
    }
    PASS_BUSY.store(false, Ordering::Release);
}

/// One timeout pass over what kmem owns (see the module doc).
fn pass(k: &Kernel) {
    for z in k.classes {
        z.timeout();
    }
    for z in kernel::qcache_zones() {
        z.timeout();
    }
    k.btag.timeout();
    k.uma.timeout_plain();
    k.uma.timeout_internal();
    crate::dirty::purge_old(k.arena);
}

/// Fork child: a thread that was inside a pass is gone.
pub(crate) fn fork_child() {
    PASS_BUSY.store(false, Ordering::Relaxed);
}
