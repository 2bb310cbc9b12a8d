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
//!
//! A period also ends early when the process has mapped
//! [`GROWTH_PASS_BYTES`] (or an eighth of its peak) of address space for
//! its blocks beyond the most it ever had mapped ([`mapped`]): a period is
//! then "1 s or that much growth, whichever comes first". The rule is
//! "trim before growing": what idle caches hold goes back to the slabs
//! before more memory is mapped. Without it, a program that moves its
//! working set from class to class faster than the timeout kept every
//! class's peak: `perl` appending to 1,000 strings in turn (each `realloc`
//! takes a string up a class, and no string comes back to the class it
//! left) peaked at 152 MB for 24 MB of strings (glibc 32 MB), and faulted
//! in every page of it; now 80 MB, with half the page faults, since the
//! slabs such a pass frees keep their pages (`dirty::slabs`) and the next
//! class's slabs take them. An early pass trims the zones only; a size
//! class's only of what the current period has not drawn from it
//! ([`uma::Zone::trim_early`]: what a class's cache only took in, the
//! blocks of buffers that moved on, goes back at once, where a timeout
//! keeps the period's range and lets it decay a fifth a period), without
//! ending the period or decaying the estimate, the page caches' too
//! (their trims keep the pages, see `pass`). The dirty pages and
//! retained spans are kept for a time, which growth says nothing about.
//! The page caches' zones (large blocks of 32-256 KiB) have no slow-path
//! hook: their slow roads, `malloc::large_alloc` and `large_free`, tick
//! instead. While the reclaim worker runs, it runs the passes, by
//! time only: a tick does nothing then, early or not.
//!
//! Between passes, each size class's and page cache's bucket cache has a
//! soft cap ([`CACHE_CAP_BYTES`] of its items): a cache past it keeps
//! what threads free, but the next time any class is about to take a
//! slab, or a page cache ranges, from an arena ([`before_taking_pages`]),
//! the excess goes back (to the slabs and their pages to the arena, or
//! the ranges to their arena), for those pages to be taken. The pass's
//! rule cannot tell a class the program left from one it will come back
//! to when both were drawn within the period (`Vec`s doubled round after
//! round draw every class whole each round); the soft cap does not need
//! to: it lets go only when another class needs pages, so a structure
//! dropped and built again in the same class still finds its blocks.
//!
//! The price is paid by a program whose classes do come back: the trims
//! of its first turns, and the slabs it then rebuilds. Cycling 600 MB
//! through four classes (each turn fills one class and frees it) pays
//! about 0.4 s once, while its heap grows; once it stops growing, only
//! the 1 s timeout trims, as before (40 turns: 1.31 s against 0.85; 120
//! turns: 2.25 s against 2.16).

#![cfg_attr(loom, allow(dead_code))] // under loom only the models use it

use std::time::Duration;

use crate::kernel::{self, Kernel};
use crate::sync::{const_new, global, AtomicBool, AtomicU64, Ordering};

/// The default period of the lazy timeout.
pub const TIMEOUT_PERIOD: Duration = Duration::from_secs(1);

/// New address space, in bytes, that ends the lazy timeout's period early:
/// the next tick runs a pass (see the module doc). Small enough that a
/// working set moving between classes leaves only a few periods' growth
/// cached; large enough that a pass (a lock and a few loads per zone when
/// it has nothing to trim) is nothing beside the page faults of that much
/// new memory (2,048 of them, a millisecond or more).
pub const GROWTH_PASS_BYTES: u64 = 8 << 20;

/// The growth that ends a period early now: [`GROWTH_PASS_BYTES`], or an
/// eighth of the most the process has had mapped if that is more, so that
/// a large heap is not trimmed at every few megabytes it creeps up by (the
/// 600 MB cycle of the module doc, whose arena crept up by fragments of
/// its free space each turn, was trimmed at every turn with a fixed 8 MiB:
/// 2.0 s against 1.5 s).
fn growth_pass_bytes() -> u64 {
    #[cfg(not(loom))]
    let peak = crate::os::peak_mapped() as u64 / 8;
    #[cfg(loom)]
    let peak = 0;
    GROWTH_PASS_BYTES.max(peak)
}

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
    /// Bytes of new address space since the period began
    /// ([`Timeout::grew`]); [`GROWTH_PASS_BYTES`] of them make a pass due.
    grown: AtomicU64,
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
                grown: AtomicU64::new(0),
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

    /// Counts `bytes` of new address space: once the period has seen
    /// [`GROWTH_PASS_BYTES`], the next tick runs a pass however early it
    /// is. Relaxed: a trigger, not an account (growth counted while a
    /// tick claims the period may be forgotten with it).
    pub(crate) fn grew(&self, bytes: u64) {
        self.grown.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One thread's tick at `now`: claims the period if a pass is due (its
    /// time has come, or [`GROWTH_PASS_BYTES`] of growth ended it early;
    /// one thread wins the deadline's compare-and-swap), then runs `pass`
    /// unless `skip()` says not to or a pass is still running. `pass` is
    /// told whether the period ended early (by growth), and returns
    /// whether it did the work (it counts then). Returns whether `pass`
    /// ran.
    pub(crate) fn tick(
        &self,
        now: u64,
        skip: impl FnOnce() -> bool,
        pass: impl FnOnce(bool) -> bool,
    ) -> bool {
        let period = self.period_ns.load(Ordering::Relaxed);
        if period == 0 {
            return false;
        }
        let due = self.next_ns.load(Ordering::Relaxed);
        let early = now < due;
        if early {
            // Early: only if growth ended the period, and only the thread
            // that takes that growth (a compare-and-swap, so that a second
            // thread that read the deadline this one is about to move
            // cannot claim the new period for the same growth).
            let g = self.grown.load(Ordering::Relaxed);
            if g < growth_pass_bytes()
                || self
                    .grown
                    .compare_exchange(g, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                return false;
            }
        } else {
            // Due by time: the period's growth is this claim's too, taken
            // before the deadline moves, so that no early claim can use it
            // for a second pass once it has.
            self.grown.swap(0, Ordering::Relaxed);
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
        if pass(early) {
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

/// Counts `bytes` of address space just mapped for blocks toward an early
/// pass (see [`GROWTH_PASS_BYTES`]).
pub(crate) fn mapped(bytes: usize) {
    timeout().grew(bytes as u64);
}

/// The soft cap on each size class's and page cache's bucket cache, in
/// bytes of its items ([`uma::Zone::set_cache_cap`]): past it a cache
/// still takes what threads free (a program that drops a structure and
/// builds it again finds it there), but once another class or page cache
/// is about to take pages from an arena ([`before_taking_pages`]), the
/// excess goes back (a class's to its slabs, and the emptied slabs' pages
/// to the arena; a page cache's ranges to their arena, the pages kept),
/// for the pages to be taken from there. A class a program has moved on
/// from (buffers grown into the next class, a phase that ended) otherwise
/// held its peak until a pass trimmed it: 4,000 buffers grown in turn to
/// 32 KiB peaked at 364 MB (mimalloc 160), 200,000 doubled to 1 KiB three
/// times at 365 MB (jemalloc 207).
pub const CACHE_CAP_BYTES: usize = 4 << 20;

/// The caches past their soft cap since their last trim to it: bit `c`
/// for size class `c`, in [`OVER_CAP`]; bit `n - 1` for the quantum
/// cache's `n`-page zone and `16 + c` for large class `c`, in
/// [`PAGES_OVER_CAP`].
static OVER_CAP: crate::sync::plain::AtomicU64 = crate::sync::plain::AtomicU64::new(0);
static PAGES_OVER_CAP: crate::sync::plain::AtomicU64 = crate::sync::plain::AtomicU64::new(0);

/// Trims to the soft cap that gave items back (for the statistics).
static CAP_TRIMS: crate::sync::plain::AtomicU64 = crate::sync::plain::AtomicU64::new(0);

const _: () = assert!(crate::classes::NCLASSES <= 64);
const _: () = assert!(kernel::QCACHE_PAGES + crate::classes::NLARGE <= 64);

/// The page caches in [`PAGES_OVER_CAP`]'s order: bit `i` is entry `i`.
fn page_cache(i: usize) -> Option<&'static uma::Zone> {
    if i < kernel::QCACHE_PAGES {
        kernel::QCACHE.zone(i + 1)
    } else {
        kernel::lcache_zone(i - kernel::QCACHE_PAGES)
    }
}

/// Gives the bucket cache of `z` (a size class's or page cache's zone, its
/// items `size` bytes) its soft cap, [`CACHE_CAP_BYTES`] of items.
pub(crate) fn cap_cache(z: &uma::Zone, size: usize) {
    #[cfg(not(loom))]
    z.set_cache_cap((CACHE_CAP_BYTES / size).max(1), over_cap);
    #[cfg(loom)]
    let _ = (z, size);
}

/// The cap hook of the size classes' and page caches' zones
/// ([`uma::Zone::set_cache_cap`]): notes the zone. Runs under the zone's
/// lock: a few loads and one atomic OR.
fn over_cap(z: &uma::Zone) {
    let is = |b: Option<&uma::Zone>| b.is_some_and(|b| core::ptr::eq(b, z));
    if let Some(c) = (0..crate::classes::NCLASSES).find(|&c| is(kernel::built_class(c))) {
        OVER_CAP.fetch_or(1 << c, Ordering::Relaxed);
    } else if let Some(i) =
        (0..kernel::QCACHE_PAGES + crate::classes::NLARGE).find(|&i| is(page_cache(i)))
    {
        PAGES_OVER_CAP.fetch_or(1 << i, Ordering::Relaxed);
    }
}

/// A size class is about to take a slab from the kernel arena, or a page
/// cache ranges from its arena: first the caches past their soft cap give
/// the excess back ([`uma::Zone::trim_to_cache_cap`]), so the pages can
/// come from theirs. Two loads when none is. Called with no allocator
/// lock held.
pub(crate) fn before_taking_pages() {
    if OVER_CAP.load(Ordering::Relaxed) | PAGES_OVER_CAP.load(Ordering::Relaxed) == 0 {
        return;
    }
    let trim = |over: &crate::sync::plain::AtomicU64,
                zone: fn(usize) -> Option<&'static uma::Zone>| {
        let mut m = over.swap(0, Ordering::Relaxed);
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            if zone(i).is_some_and(|z| z.trim_to_cache_cap()) {
                CAP_TRIMS.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    trim(&OVER_CAP, kernel::built_class);
    trim(&PAGES_OVER_CAP, page_cache);
}

/// Timeout passes the allocating threads have run so far.
pub fn timeout_passes() -> u64 {
    timeout().passes()
}

/// The `timeout:` line of the statistics: the period and the passes run.
pub(crate) fn write_timeout_stats(w: &mut dyn core::fmt::Write) -> core::fmt::Result {
    let period = timeout().period();
    let passes = timeout_passes();
    let caps = CAP_TRIMS.load(Ordering::Relaxed);
    if period == 0 {
        write!(w, "timeout: off; {passes} passes so far")?;
    } else if crate::pressure::reclaim_worker_running() {
        write!(
            w,
            "timeout: run by the reclaim worker; {passes} lazy passes so far"
        )?;
    } else {
        write!(
            w,
            "timeout: lazy, every {} ms; {passes} passes so far",
            period / 1_000_000
        )?;
    }
    writeln!(w, "; {caps} caches trimmed to their soft cap")
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
    t.tick(now, crate::pressure::reclaim_worker_running, |early| {
        // None while the allocator is being built (the building thread's
        // own allocations): nothing to trim yet.
        kernel::kernel().map(|k| pass(k, early)).is_some()
    });
}

/// One timeout pass over what kmem owns (see the module doc). An `early`
/// one (growth ended the period) trims the size classes' and the page
/// caches' zones to what the period drew from them
/// ([`uma::Zone::trim_early`]), and the other zones as a timeout does;
/// what the dirty
/// pages and retained spans keep is kept for a time, and the growth says
/// nothing about that (purged early, a buffer growing by `realloc` lost
/// the span it was about to grow into: 125 -> 141 MB peak).
fn pass(k: &Kernel, early: bool) {
    // The page caches' trims keep the pages of what they give back, as a
    // class's trimmed slabs do (`dirty::free_cached_range`). (Until
    // 2026-12-08 they unbacked them, and these zones kept the range rule:
    // trimmed at once, the 256 KiB blocks of `Vec`-like buffers doubled
    // in turn, freed and doubled again, were faulted back each round.)
    for z in kernel::built_classes().chain(kernel::qcache_zones()) {
        if early {
            z.trim_early();
        } else {
            z.timeout();
        }
    }
    k.btag.timeout();
    k.uma.timeout_plain();
    k.uma.timeout_internal();
    if !early {
        crate::dirty::purge_old(k.arena);
    }
}

/// Fork child: a thread that was inside a pass is gone.
pub(crate) fn fork_child() {
    timeout().reset_busy();
}
