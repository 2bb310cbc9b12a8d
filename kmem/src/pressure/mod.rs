//! Memory limits and forward progress under pressure (ARCHITECTURE.md §6).
//!
//! - **The limit** (FreeBSD `vm_kmem_size`): [`set_limit`] / [`limit`], or
//!   `BSDALLOC_LIMIT` in the environment (read once at bootstrap). It caps
//!   the memory kmem has *committed*: pages it took from the kernel arena
//!   for slabs, large blocks, `kmem_malloc` and `kva_alloc` (the page
//!   caches' ranges, 32-256 KiB, from when their zone imports them until
//!   it gives them back, in use or cached: [`charge_cached`]). The kernel
//!   arena's address space is capped too, at twice the limit (rounded up
//!   to the import quantum) plus one import quantum: the limit is on
//!   memory, and address space is cheap (`MAP_NORESERVE`, unbacked when
//!   free), so small blocks kept alive here and there (seed 000) cannot
//!   make a large request that fits under the limit fail for want of a
//!   contiguous range, while a leak of address space stays bounded.
//! - **At the limit** an allocation first reclaims (low-memory handlers,
//!   every thread's cache, bucket caches, free slabs, the arena's quantum
//!   cache: [`reclaim_now`]; application zones whose reclaim would run
//!   their fini, release or page source are left to an explicit
//!   [`reclaim`](crate::reclaim) or, if started (it is off by default),
//!   the reclaim worker, as the failing thread may hold a lock those
//!   callbacks take), then retries; `NOWAIT` then fails cleanly,
//!   `WAITOK` sleeps until memory is freed (a free wakes it; it reclaims
//!   again every [`WAIT_RETRY`]).
//! - **Soft threshold** ([`set_soft_threshold_pct`], 90% by default): above
//!   it, a rate-limited trim ([`LowMemLevel::Soft`]) runs.
//! - **Reservations** ([`Reservation`], seed 004): accounting against the
//!   limit, not preallocated objects. Ordinary charges keep
//!   `committed + reserved <= limit`; a reservation's own allocations draw
//!   on its share. At most [`RESERVE_MAX_PCT`]% of the limit is reserved.
//!
//! The accounting is one atomic word (`account.rs`, loom-checked).
//!
//! Files: this one holds the state, the charges and the sleeping at the
//! limit, and the statistics; `limit.rs` the limit and its environment
//! variable, `lowmem.rs` the handlers and the reclaim pass, `reserve.rs`
//! the reservations, `worker.rs` the reclaim worker, `account.rs` the
//! account word.
//!
//! Recursion: the reclaim pass may be reached from inside a boundary-tag
//! slab allocation (the seed-002 recursion) or from inside a reclaim (a
//! low-memory handler that allocates). A thread-local nesting flag makes
//! both skip the pass, boundary-tag slab charges are never refused, and
//! the pass is single-flight and rate-limited so a crowd of failing threads
//! runs it once. A pass is one walk over the zone list and the handler
//! table: bounded work (seed 001).

use crate::sync::plain::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use crate::sync::plain::{Condvar, Mutex};
use core::cell::Cell;
use core::fmt;
use core::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::classes::class_of;
use crate::kernel::{kernel, IMPORT_QUANTUM};
use crate::malloc::MallocType;
use crate::os::{now_ns, round_page, PAGE_SIZE};
use crate::Flags;

pub(crate) mod account;
mod limit;
mod lowmem;
mod reserve;
mod worker;

use account::Account;
pub use limit::*;
pub use lowmem::*;
pub use reserve::*;
pub use worker::*;

// ---------------------------------------------------------------- state

crate::sync::global! {
    /// The limit's account: committed and reserved pages.
    fn account() -> Account = Account::new();
}
/// The limit in pages (0: none).
static LIMIT_PAGES: AtomicU64 = AtomicU64::new(0);
static SOFT_PCT: AtomicUsize = AtomicUsize::new(90);

/// What each allocation drawn from a [`Reservation`] is charged on top of
/// its slab or block, for the metadata (buckets, boundary-tag slabs) it
/// may allocate on the way.
pub const META_ALLOWANCE: usize = 2 * PAGE_SIZE;
/// Most of the limit that may be reserved at once (per cent).
pub const RESERVE_MAX_PCT: u64 = 50;
/// How often a `WAITOK` allocation at the limit looks again (and
/// reclaims) when no free woke it.
pub const WAIT_RETRY: Duration = Duration::from_millis(10);
/// A `WAITOK` [`Reservation::new`] gives up after this long.
pub const RESERVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Two hard reclaim passes are at least this far apart (a thread that
/// comes sooner just retries: the memory the last pass freed is back).
const RECLAIM_MIN_INTERVAL_NS: u64 = 1_000_000;
/// Two soft trims are at least this far apart.
const SOFT_MIN_INTERVAL_NS: u64 = 100_000_000;

const NEST_RECLAIM: u8 = 1;
const NEST_BTAG: u8 = 2;
const NEST_DRAW: u8 = 4;

uma::zeroed_thread_local! {
    /// The `NEST_*` bits of the calling thread (no `__tls_get_addr`: read
    /// under the arena locks; see `uma::tls_block`).
    fn nest_bits: Cell<u8> = "bsdalloc_kmem_nest_v01";
}

fn nest() -> u8 {
    nest_bits(Cell::get)
}

/// Sets `bit` for the guard's life (restores the previous value).
pub(crate) struct NestGuard(u8);

impl NestGuard {
    fn new(bit: u8) -> Self {
        let old = nest();
        nest_bits(|n| n.set(old | bit));
        NestGuard(old)
    }

    /// Marks this thread as inside a boundary-tag slab allocation.
    pub(crate) fn btag() -> Self {
        Self::new(NEST_BTAG)
    }
}

impl Drop for NestGuard {
    fn drop(&mut self) {
        nest_bits(|n| n.set(self.0));
    }
}

struct Counters {
    passes: AtomicU64,
    zones_visited: AtomicU64,
    handler_calls: AtomicU64,
    skipped_nested: AtomicU64,
    skipped_rate: AtomicU64,
    soft_passes: AtomicU64,
    failures: AtomicU64,
    meta_failures: AtomicU64,
    waits: AtomicU64,
    reserve_refused: AtomicU64,
}

static C: Counters = Counters {
    passes: AtomicU64::new(0),
    zones_visited: AtomicU64::new(0),
    handler_calls: AtomicU64::new(0),
    skipped_nested: AtomicU64::new(0),
    skipped_rate: AtomicU64::new(0),
    soft_passes: AtomicU64::new(0),
    failures: AtomicU64::new(0),
    meta_failures: AtomicU64::new(0),
    waits: AtomicU64::new(0),
    reserve_refused: AtomicU64::new(0),
};

fn pages(bytes: usize) -> u64 {
    bytes.div_ceil(PAGE_SIZE) as u64
}

// ---------------------------------------------------------------- waiting

static WAIT_LOCK: Mutex<u64> = Mutex::new(0);
static WAIT_CV: Condvar = Condvar::new();
static WAITERS: AtomicUsize = AtomicUsize::new(0);

/// Wakes the sleepers. Never blocks on the wait lock (a free must not
/// wait, and a child forked while the lock was held must not hang): if it
/// is busy, notifies without it (a wakeup lost that way costs the sleeper
/// at most one [`WAIT_RETRY`]).
fn wake_waiters() {
    if WAITERS.load(Ordering::SeqCst) > 0 {
        match WAIT_LOCK.try_lock() {
            Ok(mut g) => {
                *g = g.wrapping_add(1);
                WAIT_CV.notify_all();
            }
            Err(_) => WAIT_CV.notify_all(),
        }
    }
}

/// Sleeps until a free (or a limit change) or `timeout`.
fn wait_for_free(seen: (u64, u64), timeout: Duration) {
    C.waits.fetch_add(1, Ordering::Relaxed);
    WAITERS.fetch_add(1, Ordering::SeqCst);
    match WAIT_LOCK.try_lock() {
        Ok(g) => {
            // A free between our check and now changed the account: don't
            // sleep.
            if account().get() == seen {
                let _ = WAIT_CV.wait_timeout(g, timeout);
            }
        }
        Err(_) => std::thread::sleep(timeout.min(Duration::from_millis(1))),
    }
    WAITERS.fetch_sub(1, Ordering::SeqCst);
}

// ---------------------------------------------------------------- charges

/// Charges `bytes` (a page multiple) of kernel-arena memory against the
/// limit before it is allocated. Over the limit it reclaims and retries;
/// then fails (`wait == false`) or sleeps until memory is freed. `force`
/// (boundary-tag slabs, which must not fail: seed 002) never refuses.
/// Returns false only for `NOWAIT`, for a request larger than the limit,
/// or when called from inside a reclaim pass.
pub(crate) fn charge(bytes: usize, wait: bool, force: bool) -> bool {
    let n = pages(bytes);
    let nested = nest();
    let bypass = force || nested & NEST_DRAW != 0;
    let mut limit = LIMIT_PAGES.load(Ordering::Relaxed);
    if account().try_charge(n, limit, bypass, force) {
        if limit != 0 {
            maybe_soft(limit);
        }
        return true;
    }
    if n > limit {
        return false;
    }
    loop {
        reclaim_pass(LowMemLevel::Hard);
        limit = LIMIT_PAGES.load(Ordering::Relaxed);
        if account().try_charge(n, limit, bypass, false) {
            return true;
        }
        if !wait || nested & (NEST_RECLAIM | NEST_BTAG) != 0 {
            return false;
        }
        wait_for_free(account().get(), WAIT_RETRY);
        limit = LIMIT_PAGES.load(Ordering::Relaxed);
        if account().try_charge(n, limit, bypass, false) {
            return true;
        }
    }
}

/// Charges a page cache's range as it imports it (the quantum cache's and
/// the large classes' cache zones hold charged ranges, so handing one out
/// or taking it back charges nothing): one try, no reclaim pass (an import
/// runs inside a zone's allocation), false at the limit; the request then
/// takes arena pages, through [`charge`]. Never on a reservation's room
/// (an import fills a bucket, more than a draw's cost: a draw whose cache
/// is empty takes arena pages, charged as the draw allows).
pub(crate) fn charge_cached(bytes: usize) -> bool {
    let limit = LIMIT_PAGES.load(Ordering::Relaxed);
    account().try_charge(pages(bytes), limit, false, false)
}

/// Whose page request failed, for [`count_failure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The program's memory (a size-class slab, a large block,
    /// `kmem_malloc`, `kva_alloc`): the caller gets null.
    Program,
    /// The allocator's own (the metadata arena: buckets, boundary-tag and
    /// internal slabs): UMA falls back, nobody gets null for it.
    Meta,
}

/// Counts a page request that failed for lack of memory: the limit, or
/// the arena out of address space (`RLIMIT_AS`, `mmap` refused).
pub(crate) fn count_failure(what: Failure) {
    match what {
        Failure::Program => C.failures.fetch_add(1, Ordering::Relaxed),
        Failure::Meta => C.meta_failures.fetch_add(1, Ordering::Relaxed),
    };
}

/// Gives back a charge (the memory went back to the kernel arena).
pub(crate) fn uncharge(bytes: usize) {
    account().uncharge(pages(bytes));
    wake_waiters();
}

static LAST_SOFT: AtomicU64 = AtomicU64::new(0);

fn maybe_soft(limit: u64) {
    let (c, r) = account().get();
    if (c + r) * 100 <= limit * SOFT_PCT.load(Ordering::Relaxed) as u64 {
        return;
    }
    if nest() != 0 {
        return;
    }
    let now = now_ns();
    let last = LAST_SOFT.load(Ordering::Relaxed);
    if now.wrapping_sub(last) < SOFT_MIN_INTERVAL_NS
        || LAST_SOFT
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    soft_pass();
}

fn soft_pass() {
    let Some(k) = kernel() else { return };
    let _n = NestGuard::new(NEST_RECLAIM);
    C.soft_passes.fetch_add(1, Ordering::Relaxed);
    run_lowmem(LowMemLevel::Soft);
    let _ = reclaim_zones(k, uma::Reclaim::Trim);
}

/// The zone part of a pass run by an allocating thread: kmem's own zones
/// (size classes, quantum caches, boundary tags: their callbacks are
/// kmem's, safe from any thread that holds no allocator lock), then every
/// other zone whose reclaim runs no application code
/// ([`uma::Uma::reclaim_plain`]). Application zones with a fini, a release
/// or their own page source are not touched here: their callbacks may
/// want a lock the failing thread holds. They are left to the reclaim
/// worker if it runs (told by [`APP_RECLAIM_DUE`] to run the same reclaim
/// at its next period), to [`reclaim`](crate::reclaim), or to the
/// application's own [`uma::Uma::reclaim`] calls.
fn reclaim_zones(k: &crate::kernel::Kernel, how: uma::Reclaim) -> usize {
    let own = || {
        crate::kernel::built_classes()
            .chain(crate::kernel::qcache_zones())
            .chain(core::iter::once(k.btag))
    };
    // kmem's own zones with callbacks (kmem's page sources, the quantum
    // caches' release into the arena): reclaim_plain skips them.
    let mut n = 0;
    let mut own_skipped = 0;
    for z in own().filter(|z| z.trim_runs_callbacks()) {
        z.reclaim(how);
        n += 1;
        own_skipped += 1;
    }
    // Then every other zone whose reclaim runs no application code. If the
    // zone list stayed busy (a walk or a zone creation elsewhere, or this
    // very thread allocating inside a statistics walk), kmem's own plain
    // zones at least.
    let plain = k.uma.reclaim_plain(how);
    match plain {
        Some(p) => n += p.reclaimed,
        None => {
            for z in own().filter(|z| !z.trim_runs_callbacks()) {
                z.reclaim(how);
                n += 1;
            }
        }
    }
    // Application zones left alone (or maybe left alone): the worker's job.
    if plain.is_none_or(|p| p.skipped > own_skipped) {
        let level = if how == uma::Reclaim::Trim {
            DUE_TRIM
        } else {
            DUE_DRAIN_CPU
        };
        APP_RECLAIM_DUE.fetch_max(level, Ordering::Relaxed);
    }
    n
}

// ---------------------------------------------------------------- stats

/// The limit, the account and what the pressure machinery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PressureStats {
    /// The limit in bytes (0: none).
    pub limit: usize,
    /// Bytes committed (taken from the kernel arena by kmem).
    pub committed: usize,
    /// Bytes reserved and not yet drawn.
    pub reserved: usize,
    /// Hard reclaim passes run.
    pub reclaim_passes: u64,
    /// Zones visited by those passes (at most the zone count per pass).
    pub zones_visited: u64,
    /// Low-memory handler calls.
    pub lowmem_calls: u64,
    /// Passes skipped because the thread was inside a pass or a btag slab
    /// allocation.
    pub skipped_nested: u64,
    /// Passes skipped by the rate limit or single flight.
    pub skipped_rate: u64,
    /// Soft trims run.
    pub soft_passes: u64,
    /// Page requests for the program's memory (size-class slabs, large
    /// blocks, `kmem_malloc`, `kva_alloc`) that failed for lack of memory:
    /// refused at the limit, or the arena out of address space. Every null
    /// kmem returns for lack of memory comes with at least one (a small
    /// block's request may try its slab more than once: for a bucket, then
    /// alone).
    pub failures: u64,
    /// The same for the allocator's own pages (metadata arena: buckets,
    /// boundary-tag and internal slabs). UMA falls back when they fail (a
    /// free goes to the slab instead of a new bucket): no caller gets null.
    pub meta_failures: u64,
    /// Sleeps of WAITOK allocations and reservations at the limit.
    pub waits: u64,
    /// Reservations refused.
    pub reserve_refused: u64,
}

/// A snapshot of [`PressureStats`].
pub fn pressure_stats() -> PressureStats {
    let (c, r) = account().get();
    PressureStats {
        limit: limit(),
        committed: c as usize * PAGE_SIZE,
        reserved: r as usize * PAGE_SIZE,
        reclaim_passes: C.passes.load(Ordering::Relaxed),
        zones_visited: C.zones_visited.load(Ordering::Relaxed),
        lowmem_calls: C.handler_calls.load(Ordering::Relaxed),
        skipped_nested: C.skipped_nested.load(Ordering::Relaxed),
        skipped_rate: C.skipped_rate.load(Ordering::Relaxed),
        soft_passes: C.soft_passes.load(Ordering::Relaxed),
        failures: C.failures.load(Ordering::Relaxed),
        meta_failures: C.meta_failures.load(Ordering::Relaxed),
        waits: C.waits.load(Ordering::Relaxed),
        reserve_refused: C.reserve_refused.load(Ordering::Relaxed),
    }
}

/// Writes the limit, the account, the kernel arena's fragmentation
/// (largest free segment, free bytes by order) and each keg's slab
/// efficiency.
pub fn write_pressure_stats(w: &mut dyn fmt::Write) -> fmt::Result {
    let p = pressure_stats();
    writeln!(
        w,
        "pressure: limit {} KiB, committed {} KiB, reserved {} KiB; {} reclaim passes ({} zones), {} lowmem calls, {} soft, {} skipped nested, {} skipped rate, {} failures ({} metadata), {} waits, {} reservations refused",
        p.limit / 1024,
        p.committed / 1024,
        p.reserved / 1024,
        p.reclaim_passes,
        p.zones_visited,
        p.lowmem_calls,
        p.soft_passes,
        p.skipped_nested,
        p.skipped_rate,
        p.failures,
        p.meta_failures,
        p.waits,
        p.reserve_refused
    )?;
    let Some(k) = kernel() else { return Ok(()) };
    let s = k.arena.stats();
    write!(
        w,
        "fragmentation: arena free {} KiB, largest free {} KiB; free KiB by order:",
        (s.size - s.inuse) / 1024,
        s.largest_free / 1024
    )?;
    for o in k.arena.order_stats().iter().filter(|o| o.free > 0) {
        write!(w, " {}K:{}", o.size / 1024, o.free_bytes / 1024)?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "{:>24} {:>8} {:>6} {:>6} {:>8}",
        "zone", "slab", "ipers", "eff%", "slabs"
    )?;
    // (Written after the zone list is dropped: `w` may allocate.)
    let row = |z: &uma::Zone| z.keg_info().map(|info| (z.name(), info));
    crate::stats::for_each_zone_row(k.uma, row, |(name, info)| {
        writeln!(
            w,
            "{:>24} {:>8} {:>6} {:>6} {:>8}",
            name,
            info.layout.slab_size,
            info.layout.ipers,
            info.layout.efficiency_pct(),
            info.slabs
        )
    })
}

/// Fork child: the threads that were inside a reclaim pass, the worker or a
/// wait are gone; clear their marks so the child can reclaim again.
#[cfg(not(loom))]
pub(crate) fn fork_child() {
    RECLAIM_BUSY.store(false, Ordering::Release);
    WORKER_RUNNING.store(false, Ordering::Release);
    WAITERS.store(0, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn limit_env_parse() {
        assert_eq!(parse_size(b"512M"), Some(512 << 20));
        assert_eq!(parse_size(b"1g"), Some(1 << 30));
        assert_eq!(parse_size(b"64KiB"), Some(64 << 10));
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"10B"), Some(10));
        assert_eq!(parse_size(b"x"), None);
        assert_eq!(parse_size(b"12Q"), None);
        assert_eq!(parse_size(b"99999999999999999999999T"), None);
    }
}
