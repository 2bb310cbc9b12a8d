//! Sampled heap profiles: who allocated what is live, leak reports at
//! exit, pprof files and flame graphs, for every front door ([`Kmem`],
//! [`raw`], and so the C ABI under `LD_PRELOAD`).
//!
//! UMA's zone statistics say *what* is live; a sample says *who* allocated
//! it. About one allocation per [`DEFAULT_INTERVAL`] bytes (a byte-based
//! Poisson process, as tcmalloc and jemalloc sample) is recorded with its
//! stack in a side table and dropped when its block is freed; a profile
//! scales each live sample to the allocations it stands for.
//!
//! ```no_run
//! kmem::prof::start(kmem::prof::DEFAULT_INTERVAL).unwrap();
//! // ... the program runs ...
//! kmem::prof::dump("/tmp/myprog").unwrap(); // .heap.pb.gz, .collapsed, .svg
//! ```
//!
//! | variable | effect |
//! |---|---|
//! | `BSDALLOC_PROF=heap,leaks` | sample from the start; at exit write the profile (`heap`), print the leak report on stderr (`leaks`); `on` only samples |
//! | `BSDALLOC_PROF_INTERVAL=512K` | the mean sampling interval in bytes (`K`, `M` suffixes) |
//! | `BSDALLOC_PROF_PREFIX=path` | where profiles go: `path.<pid>.<n>.heap.pb.gz`, `.collapsed`, `.svg` (default `bsdalloc`) |
//! | `BSDALLOC_PROF_DUMP=N` | also write a profile every `N` seconds (a thread of its own) |
//! | `BSDALLOC_PROF_SIGNAL=N` | also write one when signal `N` arrives (e.g. `12`, `SIGUSR2`) |
//!
//! ## How it stays off the fast path
//!
//! See [`sample`](self) for the countdown. In short: the fast path does not
//! change (profiling off costs nothing: the callgrind pairs are the same),
//! the countdown runs on the slow road from UMA's own lazy hit counts, and
//! a sampled block is whole pages of its own, so that `free(p)` (which
//! reads the page metadata anyway) misses its fast path for it and finds
//! the sample on the slow road. [`Kmem::dealloc`] trusts the layout, not
//! the page: while profiling with `Kmem`, every free of a size class takes
//! the zone's road ([`uma::Zone::gate_fast_frees`]), where the page is
//! checked. The C ABI declares that it frees by page
//! ([`unsized_frees_only`]) and keeps its fast frees.
//!
//! The profiler never allocates through the allocator on its paths (the
//! side table is mapped from the OS), never samples what it allocates
//! itself (a per-thread flag), and takes one leaf lock, which the fork
//! handlers hold across `fork`. Writing a profile (symbols, files) runs
//! outside the allocator and allocates like any code, with sampling off
//! for its thread.
//!
//! [`Kmem`]: crate::Kmem
//! [`Kmem::dealloc`]: crate::Kmem
//! [`raw`]: crate::raw

mod flame;

/// The profiler's hash maps: std's `HashMap` with a fixed hasher, because
/// `RandomState::new` reads a thread-local (a `__tls_get_addr` call in
/// `libbsdalloc.so`, which must not wait for the loader's lock: see
/// `uma::tls_block`); the keys are our own addresses and names.
pub(crate) type FixedMap<K, V> =
    std::collections::HashMap<K, V, core::hash::BuildHasherDefault<std::hash::DefaultHasher>>;
mod gated;
mod heap;
mod math;
mod pprof;
mod sample;
mod stack;
mod symbols;
mod table;
mod trigger;
mod unwind;

/// The one door to atomics of this module (to be redirected to kmem's
/// `sync` shim).
pub(crate) mod sync {
    pub(crate) use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
}

use core::ptr::NonNull;

use sync::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use crate::classes::class_of;
use crate::kernel::{kernel, Kernel};
use crate::pagemeta;
use crate::Flags;

pub use heap::{HeapProfile, StackFrame, StackProfile};
pub use table::MAX_FRAMES;

/// The default mean sampling interval: 512 KiB (jemalloc's and
/// tcmalloc's).
pub const DEFAULT_INTERVAL: u64 = 512 << 10;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Set once sampling ever started: the free hooks look for samples.
static TRACKING: AtomicBool = AtomicBool::new(false);
static INTERVAL: AtomicU64 = AtomicU64::new(DEFAULT_INTERVAL);
static UNSIZED_ONLY: AtomicBool = AtomicBool::new(false);
/// `BSDALLOC_PROF_EXACT`: gate the class frees even for the C ABI.
static EXACT: AtomicBool = AtomicBool::new(false);
/// 0: class frees not gated yet; 1: gating; 2: done.
static GATES: AtomicU8 = AtomicU8::new(0);

/// What to do at exit (bits).
static AT_EXIT: AtomicU8 = AtomicU8::new(0);
const EXIT_HEAP: u8 = 1;
const EXIT_LEAKS: u8 = 2;

/// Why [`start`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfError {
    /// Debug mode is on (its blocks have a layout of their own).
    DebugMode,
    /// The side table's memory could not be mapped, or kmem not built.
    NoMemory,
}

impl core::fmt::Display for ProfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ProfError::DebugMode => "kmem: heap profiling is not available in debug mode",
            ProfError::NoMemory => "kmem: no memory for the heap profiler's table",
        })
    }
}

impl std::error::Error for ProfError {}

/// Starts sampling about one allocation per `interval` bytes (0 means
/// [`DEFAULT_INTERVAL`]). May be called at any time, again to change the
/// interval.
pub fn start(interval: u64) -> Result<(), ProfError> {
    let _ = crate::debugmode::decide();
    if crate::debugmode::on() {
        return Err(ProfError::DebugMode);
    }
    if kernel().is_none() || !table::TABLE.ensure_mapped() {
        return Err(ProfError::NoMemory);
    }
    let interval = if interval == 0 {
        DEFAULT_INTERVAL
    } else {
        interval
    };
    INTERVAL.store(interval, Ordering::Relaxed);
    sample::set_interval(interval);
    TRACKING.store(true, Ordering::Release);
    ENABLED.store(true, Ordering::Release);
    Ok(())
}

/// Stops taking new samples; the live ones stay in profiles until freed.
pub fn stop() {
    ENABLED.store(false, Ordering::Release);
}

/// Whether sampling is on.
pub fn is_on() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The mean sampling interval in bytes.
#[inline]
pub fn interval() -> u64 {
    INTERVAL.load(Ordering::Relaxed)
}

/// Declares that every block of the process is freed through [`raw::free`]
/// (or `raw::realloc`), which finds sampled blocks by their page, and never
/// through [`Kmem`]'s `dealloc`: the size-class zones' fast frees then stay
/// on while profiling. The C ABI calls it; a Rust program using `Kmem`
/// must not.
///
/// [`raw::free`]: crate::raw::free
/// [`Kmem`]: crate::Kmem
pub fn unsized_frees_only() {
    // Read first: the C ABI calls this on its slow roads, and a store of
    // the same value would still write the page, which after a `fork` is a
    // copy-on-write fault in the child (one per `$(...)` of a shell).
    if !UNSIZED_ONLY.load(Ordering::Relaxed) {
        UNSIZED_ONLY.store(true, Ordering::Relaxed);
    }
}

/// Counters of the profiler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfStats {
    /// Samples taken.
    pub samples: u64,
    /// Samples live now.
    pub live: u64,
    /// Picked allocations that were fast-path hits the countdown could not
    /// see (see the module doc; only with fast frees, i.e. the C ABI):
    /// each is sampled late, as the next allocation of its class and
    /// thread that the countdown sees.
    pub overshoots: u64,
    /// Picked allocations lost (an estimate): unseen ones beyond the
    /// stand-ins a class may owe (8), e.g. in a loop that allocates and
    /// frees a class for long without a slow-road visit.
    pub lost: u64,
    /// Times a thread's class cache was gated to count allocations one by
    /// one near a sample.
    pub gated: u64,
    /// Samples dropped because the table was full.
    pub dropped_full: u64,
}

/// The profiler's counters.
pub fn stats() -> ProfStats {
    ProfStats {
        samples: sample::SAMPLES.load(Ordering::Relaxed),
        live: table::TABLE.live() as u64,
        overshoots: sample::OVERSHOOTS.load(Ordering::Relaxed),
        lost: sample::LOST.load(Ordering::Relaxed),
        gated: sample::GATED.load(Ordering::Relaxed),
        dropped_full: table::TABLE.dropped_full.load(Ordering::Relaxed),
    }
}

// ---------------------------------------------------------------- hooks

/// Whether the slow road samples ([`alloc`]).
#[inline(always)]
pub(crate) fn on() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether frees must look for samples ([`free_if_sampled`]).
#[inline(always)]
pub(crate) fn tracking() -> bool {
    TRACKING.load(Ordering::Relaxed)
}

/// The slow road's allocation while profiling ([`on`]): as `alloc_plain`,
/// sampling.
pub(crate) fn alloc(k: &Kernel, size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
    let interval = INTERVAL.load(Ordering::Relaxed);
    let gated = gates_ready();
    match class_of(size, align) {
        Some(c) if gated => sample::alloc_class(k, c, size, align, flags, interval),
        Some(c) => crate::fast::class_alloc(k, c, flags),
        None if gated => sample::alloc_large(k, size, align, flags, interval),
        None => crate::malloc::large_alloc(k, size, align, flags),
    }
}

/// Sends every free of the size classes to the zones' road, once, unless
/// the process frees by page only; true when sampling may start.
fn gates_ready() -> bool {
    match GATES.load(Ordering::Acquire) {
        2 => true,
        1 => false,
        _ => {
            if GATES
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return GATES.load(Ordering::Acquire) == 2;
            }
            // Against a class zone built meanwhile (see `class_built`).
            core::sync::atomic::fence(Ordering::SeqCst);
            if all_frees_gated() {
                for z in crate::kernel::built_classes() {
                    z.gate_fast_frees();
                }
            }
            GATES.store(2, Ordering::Release);
            true
        }
    }
}

/// A class zone just built (on first use, see `kernel::class_zone`): its
/// frees are gated as the others' if sampling has gated them, or is
/// gating them now (either this sees `GATES` set, or that loop sees the
/// zone: a fence on each side).
pub(crate) fn class_built(z: &'static uma::Zone) {
    core::sync::atomic::fence(Ordering::SeqCst);
    if GATES.load(Ordering::Relaxed) != 0 && all_frees_gated() {
        z.gate_fast_frees();
    }
}

/// After a free of a class-`c` block on the slow road (see
/// `sample::after_free`).
#[inline]
pub(crate) fn after_free(c: usize) {
    if on() {
        // (A block of class `c` was freed: its zone is built.)
        if let Some(z) = crate::kernel::built_class(c) {
            sample::after_free::<crate::fast::TlsDescriptor>(
                c,
                z.fast_slot(),
                INTERVAL.load(Ordering::Relaxed),
            );
        }
    }
}

/// Whether every free of the size classes takes the zones' road while
/// profiling (`Kmem`; `BSDALLOC_PROF_EXACT`), rather than only those of a
/// thread's class near its next sample (the C ABI).
#[inline(always)]
pub(crate) fn all_frees_gated() -> bool {
    !UNSIZED_ONLY.load(Ordering::Relaxed) || EXACT.load(Ordering::Relaxed)
}

/// The C ABI's `free` after its fast path missed: a free the profiler's
/// gate sent off it, served (true); false for anything else.
///
/// # Safety
///
/// As [`raw::free`](crate::raw::free).
#[inline]
pub(crate) unsafe fn free_gated(ptr: *mut u8) -> bool {
    // SAFETY: the caller's promise.
    // (A free the gate sent off the fast path has its class's free gate
    // set in this thread, or every free is gated.)
    tracking()
        && (sample::any_free_gate() || all_frees_gated())
        && unsafe { gated::free::<crate::fast::TlsDescriptor>(ptr) }
}

/// An allocation after the fast path missed: one the profiler's gate sent
/// off it is counted and served (`Some`); `None` for anything else.
#[inline]
pub(crate) fn alloc_gated<A: crate::fast::TlsAccess>(
    size: usize,
    align: usize,
) -> Option<NonNull<u8>> {
    if !on() || !sample::any_alloc_gate() {
        return None;
    }
    gated::alloc::<A>(size, align)
}

/// The swap road while profiling ([`on`]): see `gated::alloc_swap`.
#[cfg(not(any(loom, feature = "invariants")))]
pub(crate) use gated::alloc_swap;

/// The swap road's `free` while profiling ([`on`]; C ABI): see
/// `gated::free_swap`.
#[cfg(not(any(loom, feature = "invariants")))]
pub(crate) use gated::free_swap;

/// `Kmem::dealloc` after its fast path missed (and `ptr` is no sample):
/// as [`free_gated`].
///
/// # Safety
///
/// `GlobalAlloc::dealloc`'s contract; `ptr` is no sampled block.
#[inline]
pub(crate) unsafe fn free_sized_gated(ptr: *mut u8, size: usize, align: usize) -> bool {
    // SAFETY: the caller's promise.
    tracking() && unsafe { gated::free_sized::<crate::fast::RustTls>(ptr, size, align) }
}

/// The free hook of every front door's slow road: if `ptr` is a sampled
/// block, forgets the sample and frees the block (true); else false, and
/// the caller frees `ptr` as usual.
///
/// # Safety
///
/// As [`raw::free`](crate::raw::free).
#[inline(always)]
pub(crate) unsafe fn free_if_sampled(ptr: *mut u8) -> bool {
    // A sampled block is whole pages: anything else is no sample, without
    // a look at the page word (most small blocks; `Kmem`'s gated frees).
    // SAFETY: the caller's promise.
    ptr as usize & (crate::PAGE_SIZE - 1) == 0 && unsafe { free_if_sampled_page(ptr) }
}

/// [`free_if_sampled`] for a page-aligned `ptr`.
///
/// # Safety
///
/// As [`raw::free`](crate::raw::free).
#[inline(never)]
unsafe fn free_if_sampled_page(ptr: *mut u8) -> bool {
    let word = pagemeta::lookup(ptr as usize);
    if !pagemeta::is_large(word) || table::TABLE.remove(ptr as usize).is_none() {
        return false;
    }
    let Some(k) = kernel() else { return false };
    // SAFETY: a live sampled block (a large block of `word >> 3` pages),
    // which the caller gives up.
    unsafe { crate::malloc::large_free(k, ptr as usize, word >> 3) };
    true
}

/// `raw::realloc`'s hook: a sampled block moves to a new block (which may
/// be sampled in turn). `None` if `ptr` is not a sampled block.
///
/// # Safety
///
/// As [`raw::realloc`](crate::raw::realloc).
pub(crate) unsafe fn realloc_if_sampled(
    ptr: *mut u8,
    size: usize,
    align: usize,
) -> Option<*mut u8> {
    if ptr as usize & (crate::PAGE_SIZE - 1) != 0 {
        return None;
    }
    let word = pagemeta::lookup(ptr as usize);
    if !pagemeta::is_large(word) || !table::TABLE.contains(ptr as usize) {
        return None;
    }
    let old = (word >> 3) * crate::PAGE_SIZE;
    let new = crate::raw::alloc(size, align);
    if !new.is_null() {
        // SAFETY: `ptr` is live with `old` bytes, `new` fresh with `size`;
        // then `ptr` goes as `free` would (the caller's promise).
        unsafe {
            core::ptr::copy_nonoverlapping(ptr, new, old.min(size));
            free_if_sampled(ptr);
        }
    }
    Some(new)
}

// ---------------------------------------------------------------- env, exit, fork

/// Reads `BSDALLOC_PROF*` (from `env::init`, when kmem builds itself:
/// nothing is started here, only recorded; sampling starts at the first
/// slow allocation after the build).
pub(crate) fn init_from_env(var: impl Fn(&core::ffi::CStr) -> Option<&'static [u8]>) {
    let Some(mode) = var(c"BSDALLOC_PROF") else {
        return;
    };
    let mut exit = 0;
    let mut any = false;
    for w in mode.split(|&b| b == b',') {
        match w {
            b"heap" => exit |= EXIT_HEAP,
            b"leaks" => exit |= EXIT_LEAKS,
            b"on" | b"1" | b"sample" => {}
            b"" | b"0" | b"off" => continue,
            _ => {
                crate::report::warn(format_args!(
                    "kmem: BSDALLOC_PROF={}: unknown; use heap, leaks or on",
                    core::str::from_utf8(mode).unwrap_or("?")
                ));
                return;
            }
        }
        any = true;
    }
    if !any {
        return;
    }
    if var(c"BSDALLOC_PROF_EXACT").is_some_and(crate::env::truthy) {
        EXACT.store(true, Ordering::Relaxed);
    }
    if let Some(i) = var(c"BSDALLOC_PROF_INTERVAL").and_then(parse_bytes) {
        INTERVAL.store(i.max(1), Ordering::Relaxed);
    }
    trigger::configure(
        var(c"BSDALLOC_PROF_PREFIX"),
        var(c"BSDALLOC_PROF_DUMP").and_then(crate::env::parse_u64),
        var(c"BSDALLOC_PROF_SIGNAL").and_then(crate::env::parse_u64),
    );
    AT_EXIT.store(exit, Ordering::Relaxed);
    PENDING_START.store(true, Ordering::Release);
}

/// `BSDALLOC_PROF` asked for sampling: started at the next slow
/// allocation (the kernel is being built when the variable is read).
static PENDING_START: AtomicBool = AtomicBool::new(false);

/// Called by the slow road: starts what the environment asked for, once.
#[inline(always)]
pub(crate) fn poll_start() {
    if PENDING_START.load(Ordering::Relaxed) {
        start_pending();
    }
}

#[cold]
fn start_pending() {
    if PENDING_START.swap(false, Ordering::AcqRel) {
        if let Err(e) = start(INTERVAL.load(Ordering::Relaxed)) {
            crate::report::warn(format_args!("{e}"));
        }
        trigger::spawn();
    }
}

/// A size with an optional `K`, `M` or `G` suffix.
fn parse_bytes(v: &[u8]) -> Option<u64> {
    let (num, mul) = match v.last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 1 << 10),
        b'M' | b'm' => (&v[..v.len() - 1], 1 << 20),
        b'G' | b'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    crate::env::parse_u64(num)?.checked_mul(mul)
}

/// The exit outputs (`BSDALLOC_PROF=heap,leaks`), from a `.fini_array`
/// entry (run by `exit` after the `atexit` handlers; in the C ABI's
/// library too, since kmem is linked into it).
extern "C" fn at_exit() {
    // Read first: with nothing to write at exit (the usual case) the page
    // stays unwritten, so an exiting `fork` child copies nothing for it.
    if AT_EXIT.load(Ordering::Acquire) == 0 {
        return;
    }
    let what = AT_EXIT.swap(0, Ordering::AcqRel);
    if what == 0 || !tracking() {
        return;
    }
    let _ = sample::guarded(|| {
        if what & EXIT_LEAKS != 0 {
            // (The counters first: the report's own allocations move the
            // caches too.)
            let st = stats();
            let p = heap::HeapProfile::collect();
            let mut out = String::new();
            let _ = p.write_leak_report(&mut out, 10);
            out.push_str(&format!(
                "bsdalloc: profiler: {} samples taken, {} live, {} taken late (unseen hits), {} lost, {} dropped (table full)\n",
                st.samples, st.live, st.overshoots, st.lost, st.dropped_full
            ));
            let _ = std::io::Write::write_all(&mut std::io::stderr(), out.as_bytes());
        }
        if what & EXIT_HEAP != 0 {
            if let Err(e) = trigger::dump_numbered() {
                crate::report::warn(format_args!("kmem: heap profile at exit: {e}"));
            }
        }
    });
}

#[cfg(not(loom))]
#[used]
#[link_section = ".fini_array"]
static AT_EXIT_HOOK: extern "C" fn() = at_exit;

/// Fork prepare: the side table's lock (a leaf).
pub(crate) fn fork_prepare() {
    table::TABLE.fork_prepare();
}

/// Fork parent and child: releases it.
pub(crate) fn fork_release() {
    table::TABLE.fork_release();
}

// ---------------------------------------------------------------- dumps

/// Writes the live heap profile as `<prefix>.heap.pb.gz` (pprof: `pprof`,
/// `go tool pprof`), `<prefix>.collapsed` (collapsed stacks, for
/// `flamegraph.pl`/`inferno`) and `<prefix>.svg` (a flame graph).
pub fn dump(prefix: impl AsRef<std::path::Path>) -> std::io::Result<()> {
    let prefix = prefix.as_ref().to_path_buf();
    sample::guarded(|| {
        let p = HeapProfile::collect();
        p.write_files(&prefix)
    })
    .unwrap_or_else(|| Err(std::io::Error::other("kmem: dump from inside the profiler")))
}

/// The live heap profile now (symbolized; the allocator's own frames
/// trimmed).
pub fn profile() -> HeapProfile {
    sample::guarded(HeapProfile::collect).unwrap_or_default()
}
