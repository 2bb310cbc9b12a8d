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

#![cfg_attr(loom, allow(dead_code))] // under loom only the models use it

use std::time::Duration;

use crate::kernel::{self, Kernel};
use crate::sync::{const_new, global, AtomicBool, AtomicU64, Ordering};

/// The default period of the lazy timeout.
pub const TIMEOUT_PERIOD: Duration = Duration::from_secs(1);

/// The lazy timeout's state: the period, the deadline, and the single
/// flight of passes. A protocol of its own (loom-checked on this struct,
/// `src/tests/loom_timeout.rs`): allocating threads race to claim a due
/// period, and a pass may outlast the period.
pub(crate) struct Timeout {
    /// The period in nanoseconds (0: off).
    period_ns: AtomicU64,
    /// When the next pass is due (coarse monotonic nanoseconds).
    next_ns: AtomicU64,
    /// Passes run by ticks.
    passes: AtomicU64,
    /// A pass is running (single flight).
    busy: AtomicBool,
}

impl Timeout {
    const_new! {
        /// A timeout with period `period_ns` (0: off), due at once.
        pub(crate) fn new(period_ns: u64) -> Timeout {
            Timeout {
                period_ns: AtomicU64::new(period_ns),
                next_ns: AtomicU64::new(0),
                passes: AtomicU64::new(0),
                busy: AtomicBool::new(false),
            }
        }
    }

    /// Sets the period (0: off) and makes the next pass due one period
    /// after `now`. Returns the previous period.
    pub(crate) fn set_period(&self, now: u64, ns: u64) -> u64 {
        self.next_ns
            .store(now.saturating_add(ns), Ordering::Relaxed);
        self.period_ns.swap(ns, Ordering::Relaxed)
    }

    /// The period (0: off).
    pub(crate) fn period(&self) -> u64 {
        self.period_ns.load(Ordering::Relaxed)
    }

    /// Passes run so far.
    pub(crate) fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// One thread's tick at `now`: claims the period if a pass is due (one
    /// thread wins the deadline's compare-and-swap), then runs `pass`
    /// unless `skip()` says not to or a pass is still running. `pass`
    /// returns whether it did the work (it counts then). Returns whether
    /// `pass` ran.
    pub(crate) fn tick(
        &self,
        now: u64,
        skip: impl FnOnce() -> bool,
        pass: impl FnOnce() -> bool,
    ) -> bool {
        let period = self.period_ns.load(Ordering::Relaxed);
        if period == 0 {
            return false;
        }
        let due = self.next_ns.load(Ordering::Relaxed);
        if now < due {
            return false;
        }
        if self
            .next_ns
            .compare_exchange(
                due,
                now.saturating_add(period),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false; // another thread runs this one
        }
        if skip() {
            return false;
        }
        // One pass at a time: a pass longer than the period (a short
        // period, a big trim) must not overlap the next one, whose wss
        // estimate would then cover a nearly empty interval and decay a
        // steady working set.
        // (A compare-and-swap rather than a swap: a failed one writes
        // nothing, and loom models it right; its RMW-after-store ordering
        // of `swap` is wrong, tokio-rs/loom#254.)
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        if pass() {
            self.passes.fetch_add(1, Ordering::Relaxed);
        }
        self.busy.store(false, Ordering::Release);
        true
    }

    /// Fork child: a thread that was inside a pass is gone.
    pub(crate) fn reset_busy(&self) {
        self.busy.store(false, Ordering::Relaxed);
    }
}

global! {
    /// The process's lazy timeout.
    fn timeout() -> Timeout = Timeout::new(TIMEOUT_PERIOD.as_nanos() as u64);
}

/// Sets the period of the lazy timeout (`None` or zero: off). Returns the
/// previous one. The next pass is due one period from now.
pub fn set_timeout_period(period: Option<Duration>) -> Option<Duration> {
    let ns = period.map_or(0, |p| u64::try_from(p.as_nanos()).unwrap_or(u64::MAX));
    let old = timeout().set_period(crate::os::coarse_now_ns(), ns);
    (old != 0).then(|| Duration::from_nanos(old))
}

/// Timeout passes the allocating threads have run so far.
pub fn timeout_passes() -> u64 {
    timeout().passes()
}

/// The `timeout:` line of the statistics: the period and the passes run.
pub(crate) fn write_timeout_stats(w: &mut dyn core::fmt::Write) -> core::fmt::Result {
    let period = timeout().period();
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

/// The size-class zones' slow-path hook (and the large free path's): runs
/// a [`pass`] when one is due. Called with no allocator lock held. While
/// the reclaim worker runs, it runs the passes.
pub(crate) fn tick() {
    tick_at(crate::os::coarse_now_ns());
}

/// [`tick`] with the coarse clock read already (`now`).
pub(crate) fn tick_at(now: u64) {
    let t = timeout();
    if t.period() == 0 {
        return;
    }
    t.tick(now, crate::pressure::reclaim_worker_running, || {
        // None while the allocator is being built (the building thread's
        // own allocations): nothing to trim yet.
        kernel::kernel().map(pass).is_some()
    });
}

/// One timeout pass over what kmem owns (see the module doc).
fn pass(k: &Kernel) {
    for z in kernel::built_classes() {
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
    timeout().reset_busy();
}
