//! # kmem: the kernel arena, malloc(9) and a Rust global allocator
//!
//! The top of the stack: a [`vmem`] arena of address space from the OS (the
//! **kernel arena**), UMA zones ([`uma::Zone`]) whose slabs come from it, FreeBSD's
//! `malloc(9)` over size-class zones, and [`Kmem`], a `GlobalAlloc`:
//!
//! ```
//! #[global_allocator]
//! static A: kmem::Kmem = kmem::Kmem;
//! # fn main() {}
//! ```
//!
//! ## Statistics and options
//!
//! [`stats`] returns the one-call totals (allocated, active, resident,
//! mapped, metadata bytes; no zone walk); [`write_stats`] writes them with
//! the `vmstat -z` table (busy zones only; [`write_stats_all`] for every
//! zone), `vmstat -m` ([`MallocType`]s), the kernel arena and the OS
//! figures; [`write_stats_json`] writes the same as JSON. None of them
//! allocates. The `BSDALLOC_STATS`, `BSDALLOC_TIMEOUT_MS`,
//! `BSDALLOC_BAD_FREE` and `BSDALLOC_LIMIT` environment variables are read
//! once when kmem starts, in any program (`BSDALLOC_STATS=1` writes the
//! statistics to stderr at exit).
//!
//! Linux only, 4 KiB pages ([`PAGE_SIZE`]): other targets do not build,
//! other page sizes abort at start-up with a message.
//!
//! ## The recursion, and how it is broken
//!
//! Boundary tags of the kernel arena are items of a UMA zone (the **btag
//! zone**). A new btag slab needs pages; pages come from the kernel arena;
//! a kernel-arena allocation needs boundary tags. As in FreeBSD (on
//! platforms without a direct map), the cycle is broken by a reserve:
//!
//! 1. vmem secures `BT_MAXALLOC` tags before every mutation and does at
//!    most one import per allocation ([`vmem`]'s contract).
//! 2. The btag zone holds a keg reserve of `2 * BT_MAXALLOC * ncpu` tags
//!    ([`uma::Zone::reserve`]): ordinary tag allocations never take them.
//! 3. The btag zone's page source (`vmem_bt_alloc`) takes its pages from
//!    the kernel arena with `USE_RESERVE | NOVM | NOWAIT | BESTFIT`, so the
//!    tags that allocation needs come from the reserve, and the new slab
//!    refills it. Its matching free gives the pages back to the arena.
//! 4. `keg_drain` keeps free items >= the reserve, so a drain of the btag
//!    zone racing such allocations never leaves the arena without tags
//!    (FreeBSD D26772; the bug of seed 002).
//!
//! ## Start-up sequence
//!
//! Built on first use, by one thread, with no global allocator:
//!
//! 1. **Boot chunk**: one 2 MiB-aligned chunk is mapped and registered in
//!    the page metadata. Until the kernel arena exists, every page source
//!    bump-allocates from it ("boot pages", never freed, like FreeBSD's).
//! 2. **UMA** is bootstrapped over the kernel page source (its first chunk,
//!    its internal zones and their first slabs are boot pages).
//! 3. The **btag zone** is created; its first slab is boot pages.
//! 4. The **kernel arena** is created with the btag zone as tag source and
//!    the OS as import source (4 MiB imports of 2 MiB-aligned chunks), and
//!    the **metadata arena** importing 2 MiB chunks from it (the
//!    allocator's own slabs: see "Memory" below).
//! 5. **The switch**: the rest of the boot chunk becomes the metadata
//!    arena's first (static) span; from now on the btag zone and UMA's
//!    internal zones allocate from the metadata arena, every other page
//!    source from the kernel arena.
//! 6. The btag **reserve** is set and preallocated.
//! 7. The **malloc zones** (44 size classes) are not: each is created by
//!    the first request of its class (`kernel::class_zone`), with a page
//!    source that labels its slabs with the class in the page metadata,
//!    and its entries of the fast path's tables are filled then. A
//!    process that makes a few allocations and exits (every process of a
//!    shell script) builds the few zones it uses, not 44 (a fifth of the
//!    start-up cost the allocator added to such a process). An allocation
//!    made inside a walk of the zone list (a statistics sink, a reclaim's
//!    callback) may build one too: UMA lists it when the walk ends
//!    (`uma::Uma::for_each_zone`).
//! 8. The large classes' arena. The kernel arena's **quantum cache**
//!    zones (1..16 pages, UMA cache-only zones importing from the arena)
//!    and the **large classes'** cache zones (80 KiB to 256 KiB, four per
//!    doubling, `classes::large_pages`) are built by their first request,
//!    as the malloc zones are; until one exists the arena's `alloc`/`free`
//!    of its size fall through to `xalloc`/`xfree`.
//!
//! ## Memory
//!
//! - Placement by lifetime (seed 000): the kernel arena holds only the
//!   program's memory (size-class slabs, large blocks); the allocator's
//!   own (boundary-tag slabs, UMA's internal zones and buckets) lives in
//!   the metadata arena ([`meta_arena`]), in whole chunks it gives back
//!   when they are wholly free. So freeing the program's blocks frees
//!   whole spans, and a reclaim unmaps them (details in `kmem/src/kernel/`).
//! - The kernel arena imports 2 MiB-aligned chunks with `mmap`. Freed slabs
//!   are unbacked with `madvise(MADV_DONTNEED)` before they go back to the
//!   arena. A freed large block (above 64 KiB) keeps its pages for a while:
//!   they are labelled dirty in the page metadata, and large requests take
//!   them first, with no page fault; spans that become wholly free stay
//!   mapped for later imports. Past 64 MiB of dirty pages (or 64 MiB of free
//!   spans), after 1 s, or on a reclaim, they are unbacked and unmapped
//!   ([`dirty_stats`]; the code is in `kmem/src/dirty.rs`).
//! - The lazy timeout ([`set_timeout_period`], [`timeout_passes`]): once a
//!   second, a thread that takes a size-class slow path or frees a large
//!   block runs FreeBSD's `uma_timeout` pass over kmem's own zones (bucket
//!   caches trimmed to their working-set estimates, free slabs back to the
//!   arena) and purges what is past its decay time, so a burst of frees
//!   goes back to the OS within seconds with no thread of kmem's own. Every free arena page not labelled
//!   dirty reads as zero, so a zero-filled request clears only the dirty
//!   pages it gets. Blocks of up to 64 KiB go through the arena's quantum
//!   cache (16 UMA cache-only zones, step 8 of the start-up), keep their
//!   pages while cached, and are zeroed with a write when asked.
//! - Page metadata (`kmem/src/pagemeta.rs`; [`owns`] probes it): one word per page, found in
//!   O(1) through a one-level radix table of leaves (two dependent
//!   loads), says whether a page is a slab
//!   of size class `c`, the head of a large block of `n` pages (the size
//!   cookie), or internal. `free(ptr)` without a size uses it; a pointer
//!   that is not an allocation start is reported, never trusted.
//! - Size classes: see [`CLASS_SIZES`] (at most 25% waste above 128 B).
//!
//! ## Bad input
//!
//! [`free`]/[`realloc`]/[`malloc_usable_size`] validate the pointer against
//! the page metadata (foreign, interior, internal pointers; a large block
//! freed twice is caught here, its cookie being gone: as
//! [`ReportKind::DoubleFree`] while its pages still hold their data, as
//! [`ReportKind::NotAllocationStart`] once they were purged). `Kmem`'s `dealloc`
//! trusts the layout for small blocks (the fast path) and checks large
//! ones against their cookie. Reports go to [`set_report_hook`] or abort;
//! with a hook the bad operation is dropped.
//!
//! The `invariants` feature adds:
//!
//! - UMA's INVARIANTS checks (a per-slab bitset: double free of a small
//!   block by any road, modified after free), reported through the same
//!   hook (see [`set_report_hook`]);
//! - a layout check on every `Kmem` dealloc ([`ReportKind::WrongSize`]);
//! - malloc type tags: every malloc(9) block ends with its type's tag
//!   ([`MALLOC_TAG_BYTES`]), so [`free`], [`zfree`], [`realloc`] and
//!   [`reallocf`] report a wrong type ([`ReportKind::WrongType`], both
//!   type names) and a small block freed twice ([`ReportKind::DoubleFree`])
//!   before touching the block. Details in `kmem/src/malloc/mod.rs`.
//!
//! Without the feature none of these checks costs anything.
//!
//! ## Fork
//!
//! Fork safe: once built, the allocator installs `pthread_atfork` handlers
//! that take every allocator lock (kernel arena, UMA, kmem's own) in one
//! global order before a fork and release them in the parent and the child,
//! so a child forked while other threads allocate can allocate and free.
//! The order and what the child gets are in `kmem/src/fork.rs`.
//!
//! ## Source layout, by floor
//!
//! Lower floors never call upper ones except through the process kernel's
//! accessor (`kernel::kernel()`), which the reclaim pass and the timeout
//! use to reach the zones.
//!
//! | floor | files |
//! |---|---|
//! | the OS and the shim | `os.rs` (mappings, the clocks, OS figures), `sync.rs` (atomics and locks; loom's under `cfg(loom)`), `env.rs` (`BSDALLOC_*`, the stderr writer), `report.rs` |
//! | page metadata and dirty pages | `pagemeta.rs`, `dirty.rs` |
//! | the arenas and the wiring | `kernel/mod.rs` (the kernel, its build), `kernel/wiring.rs` (boot region, page and tag sources, the seed-002 recursion, small kernels for the models), `kernel/pages.rs` (charged arena pages, OS imports), `kernel/qcache.rs` |
//! | pressure | `pressure/mod.rs` (charges, sleeping at the limit, statistics), `pressure/{account,limit,lowmem,reserve,worker}.rs`, `timeout.rs` (the lazy timeout) |
//! | malloc and the front doors | `classes.rs`, `fast.rs` (the one fast path), `malloc/mod.rs` (malloc(9)), `malloc/moves.rs` (where `realloc` moves a large block), `malloc/types.rs` (`MallocType`, `vmstat -m`), `kmem.rs` (`kmem_malloc`, `kva_alloc`), `global.rs` (`Kmem`), `raw.rs` (the C ABI's entry points), `debugmode.rs`, `stats.rs`, `fork.rs` |
//! | the heap profiler (beside the front doors, on their slow roads) | `prof/mod.rs` (start, stop, the hooks), `prof/sample.rs` (the per-class countdowns and gates), `prof/gated.rs` (gated frees), `prof/stack.rs` (the stack walk), `prof/unwind.rs` (its cached CFI walk), `prof/table.rs` (live samples, mapped from the OS), `prof/heap.rs` (profiles as data), `prof/pprof.rs`, `prof/flame.rs`, `prof/symbols.rs` (ELF symbols), `prof/trigger.rs` (dumps at exit, periodic, on a signal), `prof/math.rs` (`ln`, `exp_m1` without libm), `prof/off.rs` (the stand-in under loom) |
//! | tests in the crate | `tests/` (seed 002 on a small kernel; the loom models) |
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "bsdalloc-kmem supports Linux only (futex, mmap/madvise, /proc, 4 KiB pages); \
     this target is not Linux"
);

/// The address of a static (as `*const u8`), with no load: on x86-64 a
/// `lea` off the instruction pointer. rustc's position-independent code
/// reaches a static of another codegen unit or crate through the GOT
/// (`R_X86_64_GOTPCREL`, which GNU ld does not relax into a `lea`): a
/// load at the head of the C door's `malloc` and `free`, which
/// `libbsdalloc.so` compiles from this crate's inlined code. The static's
/// symbol ends up local to the library (no kmem static is exported), so
/// the linker resolves the displacement. Used on the C door's roads only
/// (`SIZE_SLOTS`, the page-metadata root, `CHECKS` in the unsized free):
/// inlined into a loop, as in `examples/global_pair.rs`, the GOT load is
/// hoisted out of it and the `lea` is not (2026-12-06: 43 against 46
/// instructions per `GlobalAlloc` pair when `Kmem`'s roads used it too);
/// in a C `malloc` or `free` nothing is hoisted, and the load was on the
/// path to everything else (batch loops 3-8% faster, README).
#[cfg(not(any(loom, feature = "invariants")))]
macro_rules! static_addr {
    ($s:path) => {{
        #[cfg(target_arch = "x86_64")]
        let p: *const u8 = {
            let p: *const u8;
            // SAFETY: `lea` computes an address: no memory is read or
            // written, no flag or stack touched.
            #[allow(unused_unsafe)]
            unsafe {
                core::arch::asm!(
                    "lea {p}, [rip + {s}]",
                    p = out(reg) p,
                    s = sym $s,
                    options(pure, nomem, nostack, preserves_flags),
                )
            };
            p
        };
        #[cfg(not(target_arch = "x86_64"))]
        let p: *const u8 = core::ptr::addr_of!($s).cast();
        p
    }};
}

mod classes;
mod debugmode;
mod dirty;
mod env;
mod fast;
mod fast_large;
#[cfg(not(loom))]
mod fork;
mod global;
mod kernel;
mod kmem;
mod malloc;
mod os;
mod pagemeta;
mod pressure;
#[cfg(not(loom))]
pub mod prof;
#[cfg(loom)]
#[path = "prof/off.rs"]
mod prof;
pub mod raw;
mod report;
mod stats;
mod sync;
#[cfg(test)]
mod tests;
mod timeout;

pub use classes::{class_align, class_of, CLASS_NAMES, CLASS_SIZES, MAX_CLASS_SIZE, NCLASSES};
pub use debugmode::{
    debug_mode, debug_stats, set_debug, DebugError, DebugFlags, DebugStats, AUDIT_FRAMES,
};
pub use dirty::{
    dirty_budget, dirty_stats, retain_budget, DirtyStats, DECAY_NS, DIRTY_MAX, RETAIN_MAX,
};
pub use env::StderrWriter;
pub use global::{owns, usable_size, Kmem, ZoneAllocator};
pub use kernel::IMPORT_QUANTUM;
pub use kmem::{kmem_free, kmem_malloc, kva_alloc, kva_free};
pub use malloc::{
    for_each_malloc_type, free, malloc, malloc_aligned, malloc_untyped_stats, malloc_usable_size,
    realloc, reallocf, write_vmstat_m, zfree, MallocType, MallocTypeStats, MALLOC_TAG_BYTES,
};
pub use os::{os_stats, OsStats, CHUNK_SIZE, PAGE_SIZE};
pub use pressure::{
    limit, pressure_stats, reclaim_now, reclaim_worker_running, register_lowmem, set_limit,
    set_soft_threshold_pct, start_reclaim_worker, stop_reclaim_worker, unregister_lowmem,
    write_pressure_stats, LowMemHandler, LowMemLevel, PressureStats, Reservation, ReserveError,
    LOWMEM_SLOTS, META_ALLOWANCE, RESERVE_MAX_PCT, RESERVE_TIMEOUT, WAIT_RETRY,
};
pub use report::{set_report_hook, Report, ReportKind};
pub use stats::{
    stats, write_arena_stats, write_os_stats, write_stats, write_stats_all, write_stats_json,
    write_vmstat_z, write_vmstat_z_active, Stats,
};
pub use timeout::{set_timeout_period, timeout_passes, GROWTH_PASS_BYTES, TIMEOUT_PERIOD};
/// Allocation flags (FreeBSD `M_WAITOK`, `M_NOWAIT`, `M_ZERO`,
/// `M_USE_RESERVE`, `M_NOVM`): UMA's.
pub use uma::Flags;

/// The UMA instance kmem runs (create your own zones on it: their slabs
/// come from the kernel arena). `None` if the allocator could not start.
pub fn uma() -> Option<&'static uma::Uma> {
    kernel::kernel().map(|k| k.uma)
}

/// Builds the allocator now if it is not built yet (the first allocation
/// would). False if it could not start.
pub fn start() -> bool {
    kernel::kernel().is_some()
}

/// The kernel arena. `None` if the allocator could not start.
pub fn kernel_arena() -> Option<&'static vmem::Arena<'static>> {
    kernel::kernel().map(|k| k.arena)
}

/// The metadata arena: the allocator's own slabs (boundary tags, UMA's
/// internal zones), in whole chunks imported from the kernel arena, so
/// they never sit among the program's blocks. `None` if the allocator
/// could not start.
pub fn meta_arena() -> Option<&'static vmem::Arena<'static>> {
    kernel::kernel().map(|k| k.meta)
}

/// The btag zone (the kernel arena's boundary tags).
pub fn btag_zone() -> Option<&'static uma::Zone> {
    kernel::kernel().map(|k| k.btag)
}

/// The zone of size class `class` (see [`CLASS_SIZES`]).
pub fn class_zone(class: usize) -> Option<&'static uma::Zone> {
    kernel::kernel().and_then(|k| kernel::class_zone(k, class))
}

/// Gives memory back (FreeBSD `uma_reclaim`): `Trim` trims caches to their
/// working set and purges dirty pages over budget or past their decay
/// time, `Drain` empties bucket caches, frees free slabs beyond reserves
/// and purges every dirty page and retained span, `DrainCpu` also empties
/// every thread's cache. It covers application zones with callbacks too
/// (which the reclaim passes of failing allocations leave out), running
/// their fini, release and page source in this thread: see
/// [`uma::Uma::reclaim`] for who may call it.
///
/// `Drain` and `DrainCpu` also hand the kernel arena's spare boundary tags
/// back and drain the btag zone, so the tags left pack into few slabs and
/// the others (and the metadata chunks they were in) go back; then every
/// wholly free span is unmapped; and they repeat (at most 4 rounds) while
/// a round gave something back. Returns the bytes this call gave back to
/// the OS (pages unbacked with `madvise`, spans unmapped), by this thread:
/// 0 when there was nothing to give back (what `malloc_trim` reports).
pub fn reclaim(how: uma::Reclaim) -> usize {
    let before = os::released_here();
    let Some(k) = kernel::kernel() else { return 0 };
    if how == uma::Reclaim::Trim {
        k.uma.reclaim(how);
        dirty::purge_old(k.arena);
        return os::released_here().wrapping_sub(before);
    }
    // A drain frees things into zones the walk has passed already (the
    // buckets of a drained cache go to their bucket zone, freed slabs give
    // boundary tags back): a few rounds, while each still gives something
    // back, so one call leaves nothing for the next.
    for _ in 0..RECLAIM_ROUNDS {
        let round = os::released_here();
        k.uma.reclaim(how);
        // Pack the boundary tags (freeing btag slabs, and with them
        // metadata chunks) before the wholly free spans are unmapped.
        kernel::settle_tags(k);
        dirty::purge_all(k.arena);
        if os::released_here() == round {
            break;
        }
    }
    os::released_here().wrapping_sub(before)
}

/// Most rounds of one [`reclaim`] with `Drain` or `DrainCpu`.
const RECLAIM_ROUNDS: usize = 4;
