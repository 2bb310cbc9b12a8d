//! Memory limits and forward progress under pressure (ARCHITECTURE.md §6).
//!
//! - **The limit** (FreeBSD `vm_kmem_size`): [`set_limit`] / [`limit`], or
//!   `BSDALLOC_LIMIT` in the environment (read once at bootstrap). It caps
//!   the memory kmem has *committed*: pages it took from the kernel arena
//!   for slabs, large blocks, `kmem_malloc` and `kva_alloc`. The kernel
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
use crate::os::{round_page, PAGE_SIZE};
use crate::Flags;

pub(crate) mod account;
use account::Account;

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

std::thread_local! {
    static NEST: Cell<u8> = const { Cell::new(0) };
}

fn nest() -> u8 {
    NEST.try_with(Cell::get).unwrap_or(NEST_RECLAIM)
}

/// Sets `bit` for the guard's life (restores the previous value).
pub(crate) struct NestGuard(u8);

impl NestGuard {
    fn new(bit: u8) -> Self {
        let old = nest();
        let _ = NEST.try_with(|n| n.set(old | bit));
        NestGuard(old)
    }

    /// Marks this thread as inside a boundary-tag slab allocation.
    pub(crate) fn btag() -> Self {
        Self::new(NEST_BTAG)
    }
}

impl Drop for NestGuard {
    fn drop(&mut self) {
        let _ = NEST.try_with(|n| n.set(self.0));
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

/// The monotonic clock in nanoseconds.
pub(crate) fn now_ns() -> u64 {
    crate::os::clock_ns(libc::CLOCK_MONOTONIC)
}

fn pages(bytes: usize) -> u64 {
    bytes.div_ceil(PAGE_SIZE) as u64
}

// ---------------------------------------------------------------- the limit

/// Sets the limit on committed memory in bytes (rounded up to pages; 0
/// removes it) and caps the kernel arena accordingly. Returns the old
/// limit. Memory already committed above a new, lower limit stays; new
/// allocations wait or fail until enough of it is freed.
pub fn set_limit(bytes: usize) -> usize {
    let old = limit();
    LIMIT_PAGES.store(pages(bytes), Ordering::SeqCst);
    if let Some(k) = kernel() {
        k.arena.set_limit(arena_limit(bytes));
    }
    wake_waiters();
    old
}

/// The limit on committed memory in bytes (0: none).
pub fn limit() -> usize {
    LIMIT_PAGES.load(Ordering::Relaxed) as usize * PAGE_SIZE
}

/// The kernel arena's cap for a limit: twice the limit rounded up to the
/// import quantum (room to fragment: see the module doc), plus one import
/// quantum of slack (the metadata arena's chunks, the quantum cache).
pub(crate) fn arena_limit(bytes: usize) -> usize {
    if bytes == 0 {
        return 0;
    }
    bytes
        .checked_next_multiple_of(IMPORT_QUANTUM)
        .and_then(|b| b.checked_mul(2))
        .and_then(|b| b.checked_add(IMPORT_QUANTUM))
        .unwrap_or(0)
}

/// Sets the soft threshold (per cent of the limit, 1..=100) above which a
/// rate-limited trim runs.
pub fn set_soft_threshold_pct(pct: usize) {
    SOFT_PCT.store(pct.clamp(1, 100), Ordering::Relaxed);
}

/// Parses `512M`, `1G`, `65536`, `64k`, `2GiB`... into bytes.
fn parse_size(s: &[u8]) -> Option<usize> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: usize = 0;
    for &b in &s[..digits] {
        n = n.checked_mul(10)?.checked_add((b - b'0') as usize)?;
    }
    let rest = &s[digits..];
    let shift = match rest.first().map(u8::to_ascii_uppercase) {
        None => 0,
        Some(b'K') => 10,
        Some(b'M') => 20,
        Some(b'G') => 30,
        Some(b'T') => 40,
        Some(b'B') if rest.len() == 1 => 0,
        _ => return None,
    };
    let tail = if shift == 0 { rest } else { &rest[1..] };
    if !(tail.is_empty() || tail.eq_ignore_ascii_case(b"B") || tail.eq_ignore_ascii_case(b"iB")) {
        return None;
    }
    n.checked_mul(1usize << shift)
}

/// Bootstrap: reads `BSDALLOC_LIMIT` (no allocation) and caps `arena`.
pub(crate) fn init_from_env(arena: &vmem::Arena<'_>) {
    // SAFETY: the name is a NUL-terminated literal; getenv returns null or
    // a NUL-terminated string we only read, before any setenv of ours.
    let v = unsafe { libc::getenv(c"BSDALLOC_LIMIT".as_ptr()) };
    if v.is_null() {
        return;
    }
    // SAFETY: non-null, NUL-terminated (getenv).
    let s = unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes();
    if let Some(bytes) = parse_size(s) {
        LIMIT_PAGES.store(pages(bytes), Ordering::SeqCst);
        arena.set_limit(arena_limit(bytes));
    }
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
        (k.classes.iter().copied())
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

// ---------------------------------------------------------------- lowmem

/// How bad it is, for a low-memory handler (FreeBSD `vm_lowmem` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LowMemLevel {
    /// Usage went above the soft threshold: trim what is cheap to trim.
    Soft,
    /// An allocation is about to fail or sleep: give back all you can.
    Hard,
}

/// A low-memory handler. It runs on an allocating thread, inside the
/// reclaim pass: it should free memory and return; its own allocations
/// are `NOWAIT` in effect and do not trigger a nested pass.
pub type LowMemHandler = fn(LowMemLevel);

/// Slots in the handler table.
pub const LOWMEM_SLOTS: usize = 32;

static HANDLERS: [AtomicUsize; LOWMEM_SLOTS] = [const { AtomicUsize::new(0) }; LOWMEM_SLOTS];

/// Registers a low-memory handler (FreeBSD `EVENTHANDLER_REGISTER(vm_lowmem)`).
/// Returns false when the table (of [`LOWMEM_SLOTS`]) is full. Registering
/// the same function twice runs it twice.
pub fn register_lowmem(f: LowMemHandler) -> bool {
    let v = f as usize;
    HANDLERS.iter().any(|s| {
        s.compare_exchange(0, v, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

/// Removes one registration of `f`; false if it was not registered.
pub fn unregister_lowmem(f: LowMemHandler) -> bool {
    let v = f as usize;
    HANDLERS.iter().any(|s| {
        s.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

fn run_lowmem(level: LowMemLevel) {
    for s in &HANDLERS {
        let v = s.load(Ordering::Acquire);
        if v != 0 {
            // SAFETY: only `LowMemHandler` values are stored in the table
            // (register_lowmem), and fn pointers are never null.
            let f: LowMemHandler = unsafe { core::mem::transmute::<usize, LowMemHandler>(v) };
            C.handler_calls.fetch_add(1, Ordering::Relaxed);
            f(level);
        }
    }
}

// ---------------------------------------------------------------- reclaim

static RECLAIM_BUSY: AtomicBool = AtomicBool::new(false);
static RECLAIM_GEN: AtomicU64 = AtomicU64::new(0);
static LAST_PASS: AtomicU64 = AtomicU64::new(0);

/// The kernel arena's reclaim hook (vmem calls it without the arena lock
/// before an allocation sleeps or fails).
pub(crate) fn arena_reclaim(_flags: vmem::Flags) {
    reclaim_pass(LowMemLevel::Hard);
}

/// One bounded pass: low-memory handlers, then every zone's per-thread
/// caches, bucket cache and free slabs beyond reserves (the arena's
/// quantum-cache zones included; application zones with callbacks are
/// left out: [`reclaim_zones`]). Skipped when nested; single-flight (a
/// thread that finds a pass running waits a bounded while for it); at
/// most one pass per millisecond.
fn reclaim_pass(level: LowMemLevel) {
    if nest() & (NEST_RECLAIM | NEST_BTAG) != 0 {
        C.skipped_nested.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Some(k) = kernel() else { return };
    let now = now_ns();
    if now.wrapping_sub(LAST_PASS.load(Ordering::Relaxed)) < RECLAIM_MIN_INTERVAL_NS {
        C.skipped_rate.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if RECLAIM_BUSY
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        // Someone is reclaiming for us all: wait (bounded) for it.
        let gen = RECLAIM_GEN.load(Ordering::Acquire);
        let backoff = crossbeam_utils::Backoff::new();
        for _ in 0..1000 {
            if RECLAIM_GEN.load(Ordering::Acquire) != gen {
                break;
            }
            backoff.snooze();
        }
        C.skipped_rate.fetch_add(1, Ordering::Relaxed);
        return;
    }
    {
        let _n = NestGuard::new(NEST_RECLAIM);
        C.passes.fetch_add(1, Ordering::Relaxed);
        run_lowmem(level);
        let zones = reclaim_zones(k, uma::Reclaim::DrainCpu);
        C.zones_visited.fetch_add(zones as u64, Ordering::Relaxed);
        crate::kernel::settle_tags(k);
        crate::dirty::purge_all(k.arena);
    }
    LAST_PASS.store(now_ns(), Ordering::Relaxed);
    RECLAIM_GEN.fetch_add(1, Ordering::AcqRel);
    RECLAIM_BUSY.store(false, Ordering::Release);
    wake_waiters();
}

/// A kernel-arena allocation failed after its charge passed (the arena is
/// at its cap with room held in caches, or fragmented): runs a pass now,
/// past the rate limit, and says whether retrying is worth it (false when
/// nested: no pass ran).
pub(crate) fn reclaim_for_retry() -> bool {
    if nest() & (NEST_RECLAIM | NEST_BTAG) != 0 || kernel().is_none() {
        return false;
    }
    reclaim_now();
    true
}

/// Runs a full reclaim pass now (low-memory handlers at [`LowMemLevel::Hard`],
/// then every cache, bucket cache, free slab and the quantum cache), unless
/// one ran within the last millisecond or this thread is inside one. As
/// every pass, it leaves application zones with a fini, a release or
/// their own page source to the reclaim worker; [`reclaim`](crate::reclaim)
/// covers them too.
pub fn reclaim_now() {
    LAST_PASS.store(0, Ordering::Relaxed);
    reclaim_pass(LowMemLevel::Hard);
}

// ---------------------------------------------------------------- reservations

/// Why a [`Reservation`] was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// The allocator could not start.
    NotStarted,
    /// More than [`RESERVE_MAX_PCT`]% of the limit: can never be granted.
    TooLarge,
    /// Not enough room now (`NOWAIT`).
    NoMemory,
    /// Not enough room within the timeout (`WAITOK`).
    TimedOut,
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReserveError::NotStarted => "allocator not started",
            ReserveError::TooLarge => "reservation larger than the reservable share of the limit",
            ReserveError::NoMemory => "not enough memory to reserve",
            ReserveError::TimedOut => "timed out waiting for memory to reserve",
        })
    }
}

/// A promise of future allocations, kept as accounting against the limit
/// (seed 004), not as preallocated objects: granting it moves `bytes` of
/// room out of reach of ordinary allocations; its own allocations
/// ([`malloc`](Self::malloc), [`zone_alloc`](Self::zone_alloc)) draw on it
/// first, each charged [`cost`](Self::cost) (the worst case: a new slab);
/// dropping it gives the unused part back.
///
/// ```
/// kmem::malloc_define!(M_TXN, "txn", "transactions");
/// let r = kmem::Reservation::for_allocs(100, 4, kmem::Flags::NOWAIT).unwrap();
/// let p = r.malloc(100, &M_TXN).unwrap();
/// unsafe { kmem::free(p.as_ptr(), &M_TXN) };
/// ```
#[derive(Debug)]
pub struct Reservation {
    remaining: AtomicUsize,
}

impl Reservation {
    /// Reserves `bytes` (rounded up to pages). `NOWAIT`: reclaims once,
    /// then fails with [`ReserveError::NoMemory`]; `WAITOK`: waits up to
    /// [`RESERVE_TIMEOUT`] for memory to be freed.
    pub fn new(bytes: usize, flags: Flags) -> Result<Reservation, ReserveError> {
        let timeout = if flags.contains(Flags::WAITOK) {
            Some(RESERVE_TIMEOUT)
        } else {
            None
        };
        Self::reserve(bytes, timeout)
    }

    /// Reserves `bytes`, waiting at most `timeout` for room.
    pub fn with_timeout(bytes: usize, timeout: Duration) -> Result<Reservation, ReserveError> {
        Self::reserve(bytes, Some(timeout))
    }

    /// Reserves room for `n` allocations of `size` bytes by
    /// [`malloc`](Self::malloc).
    pub fn for_allocs(size: usize, n: usize, flags: Flags) -> Result<Reservation, ReserveError> {
        let c = Self::cost(size).ok_or(ReserveError::TooLarge)?;
        Self::new(c.checked_mul(n).ok_or(ReserveError::TooLarge)?, flags)
    }

    /// Reserves room for `n` allocations from `zone` by
    /// [`zone_alloc`](Self::zone_alloc).
    pub fn for_zone(zone: &uma::Zone, n: usize, flags: Flags) -> Result<Reservation, ReserveError> {
        let c = Self::zone_cost(zone).ok_or(ReserveError::TooLarge)?;
        Self::new(c.checked_mul(n).ok_or(ReserveError::TooLarge)?, flags)
    }

    /// What one `malloc(size)` draws from a reservation: its class's slab
    /// size (a new slab at worst), or its pages for a large block, plus
    /// [`META_ALLOWANCE`] for the allocator metadata it may need (a bucket,
    /// boundary tags).
    pub fn cost(size: usize) -> Option<usize> {
        let k = kernel()?;
        let base = match class_of(size, 1) {
            Some(c) => k.slab_size[c],
            None => round_page(size.max(1))?,
        };
        base.checked_add(META_ALLOWANCE)
    }

    /// What one allocation from `zone` draws: the keg's slab size plus
    /// [`META_ALLOWANCE`].
    pub fn zone_cost(zone: &uma::Zone) -> Option<usize> {
        zone.keg_info()
            .and_then(|i| i.layout.slab_size.checked_add(META_ALLOWANCE))
    }

    fn reserve(bytes: usize, timeout: Option<Duration>) -> Result<Reservation, ReserveError> {
        kernel().ok_or(ReserveError::NotStarted)?;
        let bytes = round_page(bytes).ok_or(ReserveError::TooLarge)?;
        let n = pages(bytes);
        let limit = LIMIT_PAGES.load(Ordering::Relaxed);
        let max = limit * RESERVE_MAX_PCT / 100;
        if limit != 0 && n > max {
            C.reserve_refused.fetch_add(1, Ordering::Relaxed);
            return Err(ReserveError::TooLarge);
        }
        let start = Instant::now();
        let mut reclaimed = false;
        loop {
            let limit = LIMIT_PAGES.load(Ordering::Relaxed);
            let max = limit * RESERVE_MAX_PCT / 100;
            if account().try_reserve(n, limit, max) {
                return Ok(Reservation {
                    remaining: AtomicUsize::new(bytes),
                });
            }
            if !reclaimed {
                reclaimed = true;
                reclaim_now();
                continue;
            }
            let Some(t) = timeout else {
                C.reserve_refused.fetch_add(1, Ordering::Relaxed);
                return Err(ReserveError::NoMemory);
            };
            let left = t.saturating_sub(start.elapsed());
            if left.is_zero() {
                C.reserve_refused.fetch_add(1, Ordering::Relaxed);
                return Err(ReserveError::TimedOut);
            }
            reclaim_pass(LowMemLevel::Hard);
            wait_for_free(account().get(), left.min(WAIT_RETRY));
        }
    }

    /// Bytes still reserved.
    pub fn remaining(&self) -> usize {
        self.remaining.load(Ordering::Relaxed)
    }

    fn take(&self, cost: usize) -> bool {
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |r| r.checked_sub(cost))
            .is_ok()
    }

    /// Runs `f` (an allocation) on the reservation's account: `cost` bytes
    /// are drawn if the reservation still has them (the allocation is then
    /// guaranteed room under the limit), else `f` runs as an ordinary
    /// `NOWAIT` allocation.
    fn draw<T>(&self, cost: usize, f: impl FnOnce() -> Option<T>) -> Option<T> {
        if !self.take(cost) {
            return f();
        }
        let r = {
            let _n = NestGuard::new(NEST_DRAW);
            f()
        };
        if r.is_some() {
            account().unreserve(pages(cost));
        } else {
            self.remaining.fetch_add(cost, Ordering::AcqRel);
        }
        r
    }

    /// `malloc(size, ty, NOWAIT)` drawing on the reservation first.
    pub fn malloc(&self, size: usize, ty: &'static MallocType) -> Option<NonNull<u8>> {
        let cost = Self::cost(size)?;
        self.draw(cost, || crate::malloc(size, ty, Flags::NOWAIT))
    }

    /// `zone.alloc(NOWAIT)` drawing on the reservation first.
    pub fn zone_alloc(&self, zone: &uma::Zone) -> Option<NonNull<u8>> {
        let cost = Self::zone_cost(zone)?;
        self.draw(cost, || zone.alloc(Flags::NOWAIT))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let left = *self.remaining.get_mut();
        if left > 0 {
            account().unreserve(pages(left));
            wake_waiters();
        }
    }
}

// ---------------------------------------------------------------- worker

static WORKER_RUNNING: AtomicBool = AtomicBool::new(false);
static WORKER_STOP: AtomicBool = AtomicBool::new(false);
/// A pass in an allocating thread left the application zones with
/// callbacks alone ([`reclaim_zones`]): the worker reclaims every zone at
/// its next period.
static APP_RECLAIM_DUE: AtomicU8 = AtomicU8::new(DUE_NONE);
const DUE_NONE: u8 = 0;
const DUE_TRIM: u8 = 1;
const DUE_DRAIN_CPU: u8 = 2;

/// Starts the reclaim worker (off by default): every `period` it runs UMA's
/// periodic trim (`uma_timeout`: working-set estimates, bucket caches
/// trimmed to them), purges dirty pages and retained spans past their decay
/// time (so an idle program's resident set falls too) and, above the soft
/// threshold, a soft pass. After a reclaim pass ran in an allocating
/// thread, which leaves application zones with callbacks alone, it first
/// runs that pass's reclaim (`Trim` or `DrainCpu`) over every zone (their
/// callbacks run in the worker, which holds none of the application's
/// locks). One pass per period at most. Returns
/// false if it is already running.
pub fn start_reclaim_worker(period: Duration) -> bool {
    if WORKER_RUNNING
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    WORKER_STOP.store(false, Ordering::Release);
    let period = period.max(Duration::from_millis(1));
    let spawned = std::thread::Builder::new()
        .name("kmem-reclaim".into())
        .spawn(move || {
            while !WORKER_STOP.load(Ordering::Acquire) {
                std::thread::sleep(period);
                if let Some(k) = kernel() {
                    let due = APP_RECLAIM_DUE.swap(DUE_NONE, Ordering::Relaxed);
                    let how = match due {
                        DUE_NONE => None,
                        DUE_TRIM => Some(uma::Reclaim::Trim),
                        _ => Some(uma::Reclaim::DrainCpu),
                    };
                    if let Some(how) = how {
                        if !k.uma.reclaim(how) {
                            // Another pass held the reclaim lock: next period.
                            APP_RECLAIM_DUE.fetch_max(due, Ordering::Relaxed);
                        }
                    }
                    k.uma.timeout();
                    crate::dirty::purge_old(k.arena);
                    let limit = LIMIT_PAGES.load(Ordering::Relaxed);
                    let (c, r) = account().get();
                    if limit != 0 && (c + r) * 100 > limit * SOFT_PCT.load(Ordering::Relaxed) as u64
                    {
                        soft_pass();
                    }
                }
            }
            WORKER_RUNNING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        WORKER_RUNNING.store(false, Ordering::Release);
        return false;
    }
    true
}

/// Asks the reclaim worker to stop (it exits within one period).
pub fn stop_reclaim_worker() {
    WORKER_STOP.store(true, Ordering::Release);
}

/// Whether the reclaim worker is running.
pub fn reclaim_worker_running() -> bool {
    WORKER_RUNNING.load(Ordering::Acquire)
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
    let mut r = Ok(());
    k.uma.for_each_zone(|z| {
        if r.is_err() {
            return;
        }
        if let Some(i) = z.keg_info() {
            r = writeln!(
                w,
                "{:>24} {:>8} {:>6} {:>6} {:>8}",
                z.name(),
                i.layout.slab_size,
                i.layout.ipers,
                i.layout.efficiency_pct(),
                i.slabs
            );
        }
    });
    r
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
