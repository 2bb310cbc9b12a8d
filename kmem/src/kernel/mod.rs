//! The kernel arena, the metadata arena, the btag zone and the bootstrap
//! (see the crate doc for the start-up sequence).
//!
//! # Placement by lifetime (seed 000)
//!
//! Two arenas share the address space, as FreeBSD's kernel arena and its
//! per-domain arenas do:
//!
//! - the **kernel arena** holds the program's memory: size-class slabs,
//!   large blocks, `kmem_malloc` and `kva_alloc` ranges, the quantum
//!   cache's ranges. It imports 4 MiB spans of 2 MiB-aligned chunks from
//!   the OS and gives a span back (`munmap`, through `dirty`) once it is
//!   wholly free, but for the latest such span, which it keeps until
//!   another is freed or the next timeout pass or reclaim
//!   (`vmem::ArenaBuilder::keep_idle`: a program that frees its only large
//!   block and allocates another finds the space still there);
//! - the **metadata arena** (`kmem meta`) holds the allocator's own
//!   long-lived memory: boundary-tag slabs (the btag zone), UMA's internal
//!   zones (zones, kegs, off-page slab headers, buckets, keg hash tables)
//!   and zones created without a page source of their own. Its first span
//!   is the rest of the boot chunk; it imports whole 2 MiB chunks from the
//!   kernel arena (FreeBSD `kva_import_domain`, `KVA_QUANTUM`), best fit,
//!   and gives a chunk back as soon as it is wholly free.
//!
//! So freeing the program's blocks leaves the kernel arena's spans free
//! of metadata: no boundary-tag slab sits among small-object slabs, and a
//! reclaim (a trim, or the pass before an allocation fails) unmaps them.
//!
//! The metadata arena's own boundary tags come from vmem's standalone tag
//! pool (a few pages of its own mappings), not from the btag zone. With
//! btag-zone tags, every btag slab would be described by a tag living in
//! another btag slab: a chain that keeps all but the newest slab alive
//! after everything else is freed (the 30,000 free tags of seed 000's
//! report). FreeBSD avoids the same chain on amd64 by taking btag slabs
//! from the direct map, which needs no tags.
//!
//! The recursion of seed 002 is still there: the btag zone takes its slabs
//! from the metadata arena with `USE_RESERVE | NOVM | NOWAIT | BESTFIT`,
//! and when that arena has no room its import takes a chunk from the
//! kernel arena with the same flags, whose tags come from the btag zone's
//! reserve (one fill, `BT_MAXALLOC` tags, per chain; the reserve holds
//! twice that per CPU, as FreeBSD's).

mod pages;
mod qcache;
pub(crate) mod wiring;

pub(crate) use pages::{arena_free, arena_pages, slab_bytes_in_use, vflags};
#[cfg(test)]
pub(crate) use pages::{arena_free_slab, arena_slab};
pub(crate) use qcache::QCACHE_PAGES;
pub(crate) use qcache::{
    lc_arena, lcache_zone, page_cache_bytes, qcache_zones, QCACHE, QCACHE_MAX,
};
#[cfg(not(loom))]
pub(crate) use wiring::BootLock;

use core::ptr;

use uma::{Uma, Zone, ZoneArgs, ZoneFlags};
use vmem::Arena;

use crate::classes::{class_align, CLASS_NAMES, CLASS_SIZES, LARGE_CLASS_PAGES, NCLASSES};
use crate::os::{self, CHUNK_SIZE, PAGE_SIZE};
use crate::pagemeta;
use crate::sync::plain::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use qcache::{
    build_lc_arena, lcache_import, lcache_release, qcache_import, qcache_release, LCACHE,
    LCACHE_NAMES, QCACHE_NAMES,
};
use wiring::{KernelPages, Sources, Spec, StaticCell, Wiring};

/// The kernel arena imports address space from the OS this much at a time.
pub const IMPORT_QUANTUM: usize = 2 * CHUNK_SIZE;

/// The kernel arena's imports grow with it, up to this (see
/// `vmem::ArenaBuilder::import_growth`): a program with hundreds of MiB of
/// large blocks gets them out of shared 64 MiB spans, where freed blocks
/// coalesce and their dirty pages are reused, instead of a span each.
pub(crate) const IMPORT_GROWTH_MAX: usize = 64 << 20;

/// Everything the allocator is made of, built once by [`kernel`].
pub(crate) struct Kernel {
    /// The kernel arena: the program's memory (see the module doc).
    pub(crate) arena: &'static Arena<'static>,
    /// The metadata arena: the allocator's own slabs, in chunks imported
    /// from the kernel arena.
    pub(crate) meta: &'static Arena<'static>,
    /// The UMA instance whose internal zones live in the metadata arena.
    pub(crate) uma: &'static Uma,
    /// The boundary-tag zone the kernel arena takes its tags from.
    pub(crate) btag: &'static Zone,
    /// The btag zone's reserve (items).
    pub(crate) btag_reserve: usize,
}

/// The metadata arena imports this much at a time.
pub(crate) const META_IMPORT: usize = CHUNK_SIZE;

/// The process kernel's wiring and sources.
pub(crate) static WIRING: Wiring = Wiring::new(true);
static SOURCES: Sources = Sources::of(&WIRING);
static KERNEL: StaticCell<Kernel> = StaticCell::new();
static ARENA: StaticCell<Arena<'static>> = StaticCell::new();
static META: StaticCell<Arena<'static>> = StaticCell::new();

/// The class zones, each built by the first request of its class (null
/// until then; see [`class_zone`]).
pub(crate) static CLASS_ZONES: [AtomicPtr<Zone>; NCLASSES] =
    [const { AtomicPtr::new(ptr::null_mut()) }; NCLASSES];

/// Slab size and items per slab of each class zone built (pointer
/// validation; 0 until the zone is built, written before it is published).
static CLASS_SLAB: [AtomicUsize; NCLASSES] = [const { AtomicUsize::new(0) }; NCLASSES];
static CLASS_IPERS: [AtomicUsize; NCLASSES] = [const { AtomicUsize::new(0) }; NCLASSES];

/// One page source per size class, so slabs are labelled with their class.
static CLASS_PAGES: [KernelPages; NCLASSES] = {
    let mut t = [const {
        KernelPages {
            w: &WIRING,
            word: 0,
            meta: false,
            name: "kernel-malloc",
        }
    }; NCLASSES];
    let mut c = 0;
    while c < NCLASSES {
        t[c].word = pagemeta::slab_word(c);
        c += 1;
    }
    t
};

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

uma::zeroed_thread_local! {
    /// Set while the calling thread builds the allocator.
    fn initializing: core::cell::Cell<bool> = "bsdalloc_kmem_initializing_v01";
}

/// The allocator, built on first use. `None` if the OS refused the first
/// chunk, or when called recursively while this thread builds it.
#[inline]
pub(crate) fn kernel() -> Option<&'static Kernel> {
    if STATE.load(Ordering::Acquire) == READY {
        // SAFETY: READY is published after KERNEL was written.
        return Some(unsafe { (*KERNEL.0.get()).assume_init_ref() });
    }
    kernel_slow()
}

#[cold]
#[inline(never)]
fn kernel_slow() -> Option<&'static Kernel> {
    let backoff = crossbeam_utils::Backoff::new();
    loop {
        match STATE.compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                initializing(|i| i.set(true));
                let ok = build();
                initializing(|i| i.set(false));
                STATE.store(if ok { READY } else { FAILED }, Ordering::Release);
                // The fork handlers, once the allocator is complete (and
                // usable: pthread_atfork may call malloc, which with kmem's
                // C ABI is us).
                #[cfg(not(loom))]
                if ok {
                    crate::fork::install();
                }
            }
            Err(READY) => {
                // SAFETY: as in `kernel`.
                return Some(unsafe { (*KERNEL.0.get()).assume_init_ref() });
            }
            Err(FAILED) => return None,
            Err(_) => {
                if initializing(|i| i.get()) {
                    return None; // recursion from inside the bootstrap
                }
                backoff.snooze();
            }
        }
    }
}

/// Online CPUs: UMA's count, read once per process (std's
/// available_parallelism may read cgroup files through the global
/// allocator).
fn ncpu() -> usize {
    uma::online_cpus()
}

/// Boot pages in use and given back (bytes).
pub(crate) fn boot_usage() -> (usize, usize) {
    WIRING.boot_usage()
}

/// Takes the boot lock for a fork (see `fork`).
#[cfg(not(loom))]
pub(crate) fn fork_lock_boot() -> BootLock {
    WIRING.fork_lock_boot()
}

/// After a reclaim: hands the kernel arena's spare boundary tags back and
/// drains the btag zone (every thread's cache, its bucket cache, its free
/// slabs beyond the reserve). The arena's next operation takes fresh tags
/// from the fullest btag slabs, so the spares, freed whenever segments
/// coalesced and so spread over many slabs, stop pinning them: what stays
/// is about the tags in use, packed, plus the reserve.
pub(crate) fn settle_tags(k: &Kernel) {
    k.arena.release_spare_tags();
    k.btag.reclaim(uma::Reclaim::DrainCpu);
}

// ---------------------------------------------------------------- bootstrap

/// The btag zone's reserve for the process: enough tags for every CPU to
/// be inside a btag slab allocation at once (2 * BT_MAXALLOC per CPU,
/// FreeBSD vmem_startup).
fn btag_reserve() -> usize {
    2 * vmem::BT_MAXALLOC * ncpu()
}

/// Builds the allocator (the sequence in the crate doc). Never touches the
/// global allocator.
fn build() -> bool {
    crate::env::init(); // page size check, BSDALLOC_* options (env.rs)
                        // 1. The boot chunk.
    let Some(base) = os::map_chunks(CHUNK_SIZE) else {
        return false;
    };
    if !pagemeta::register(base, CHUNK_SIZE) {
        return false;
    }
    // 2-6. UMA, the btag zone, the arenas, the switch, the reserve.
    let spec = Spec {
        boot: (base, CHUNK_SIZE),
        span: None,
        meta_import: META_IMPORT,
        btag_ipers: None,
        reserve: btag_reserve(),
    };
    let Some(core) = wiring::build_core(&SOURCES, &spec, (&ARENA, &META)) else {
        return false;
    };
    // 7. The malloc zones: built one by one, each by the first request of
    //    its class (`class_zone`).
    // 8. The large classes' arena. The page caches' zones (the quantum
    //    cache's and the large classes', UMA cache-only zones) are built on
    //    first use, as the size classes' are (`qcache_zone`,
    //    `lcache_zone_for`); until one exists, arena.alloc falls through
    //    to xalloc and arena.free to xfree.
    if !build_lc_arena(&SOURCES.bt_tags) {
        return false;
    }
    // 9. The memory limit from the environment (BSDALLOC_LIMIT).
    crate::pressure::init_from_env(core.arena);
    // SAFETY: single initializing thread; READY is published by the caller.
    unsafe {
        KERNEL.write(Kernel {
            arena: core.arena,
            meta: core.meta,
            uma: core.uma,
            btag: core.btag,
            btag_reserve: spec.reserve,
        });
    }
    true
}

/// Size class `c`'s zone if some request has built it.
#[inline]
pub(crate) fn built_class(c: usize) -> Option<&'static Zone> {
    let z = CLASS_ZONES.get(c)?.load(Ordering::Acquire);
    // SAFETY: set once to a zone that is never destroyed.
    (!z.is_null()).then(|| unsafe { &*z })
}

/// The class zones built so far.
pub(crate) fn built_classes() -> impl Iterator<Item = &'static Zone> {
    (0..NCLASSES).filter_map(built_class)
}

/// Size class `c`'s zone, built now if no request of the class has built
/// it yet: a process creates the zones of the classes it uses, not all
/// 44 (a program that makes a few allocations and exits, as every process
/// of a shell script does, built them all: 44 zones and kegs, 13 pages of
/// them, a fifth of what the allocator added to such a process's start).
/// `None` if `c` is no class or the zone could not be had.
#[inline]
pub(crate) fn class_zone(k: &Kernel, c: usize) -> Option<&'static Zone> {
    built_class(c).or_else(|| build_class(k, c))
}

/// Whether UMA's debug bitset says `p`, an item of class `c`, is free
/// (`invariants` builds; false when unknown).
#[cfg(feature = "invariants")]
pub(crate) fn item_is_free(c: usize, p: *const u8) -> bool {
    built_class(c).and_then(|z| uma::debug::is_allocated(z, p)) == Some(false)
}

/// Class `c`'s slab size and items per slab (0 until its zone is built).
#[inline]
pub(crate) fn class_geometry(c: usize) -> (usize, usize) {
    (
        CLASS_SLAB[c].load(Ordering::Relaxed),
        CLASS_IPERS[c].load(Ordering::Relaxed),
    )
}

/// Builds class `c`'s zone and publishes it, unless another thread's
/// build of it wins the race (then that one, and this one is destroyed
/// unused). No lock of kmem's is held, so a build may start anywhere an
/// allocation may (UMA serializes what it must); a fork in the middle
/// leaves the child an orphaned, empty zone at worst.
#[cold]
#[inline(never)]
fn build_class(k: &Kernel, c: usize) -> Option<&'static Zone> {
    if c >= NCLASSES {
        return None;
    }
    // RAMP: a class's first buckets hold one slab's items, so a
    // short process touches a page per class it uses, not four.
    let args = ZoneArgs::new(CLASS_NAMES[c], CLASS_SIZES[c])
        .flags(ZoneFlags::RAMP)
        .align(class_align(c).max(8))
        .source(&CLASS_PAGES[c]);
    let z = k.uma.create_zone(&args)?;
    crate::timeout::cap_cache(z, CLASS_SIZES[c]);
    let info = z.keg_info()?;
    // The same values whoever wins: the layout depends on the class only.
    CLASS_SLAB[c].store(info.layout.slab_size, Ordering::Relaxed);
    CLASS_IPERS[c].store(info.layout.ipers, Ordering::Relaxed);
    // The lazy timeout (`timeout` module) runs from their slow paths.
    #[cfg(not(loom))]
    z.set_slow_hook(crate::timeout::tick);
    Some(publish_built(k, &CLASS_ZONES[c], z, || {
        crate::fast::publish_class(c, z);
        crate::prof::class_built(z);
    }))
}

/// Publishes `z`, a zone just built on first use, in `slot` and runs
/// `won` (its entries of the fast path's tables), unless another thread's
/// build of the same zone got there first: then that zone, and `z` is
/// destroyed unused.
fn publish_built(
    k: &Kernel,
    slot: &'static AtomicPtr<Zone>,
    z: &'static Zone,
    won: impl FnOnce(),
) -> &'static Zone {
    let mine = z as *const Zone as *mut Zone;
    match slot.compare_exchange(ptr::null_mut(), mine, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            won();
            z
        }
        Err(theirs) => {
            // SAFETY: our zone, never published: no item, no cache of it.
            unsafe { k.uma.destroy(z) };
            // SAFETY: set once to a zone that is never destroyed.
            unsafe { &*theirs }
        }
    }
}

/// The quantum cache's zone of `n`-page ranges (1..=16), built now if no
/// request has built it yet. Until it is, the arena's `alloc`/`free`
/// fall through to `xalloc`/`xfree`; a block handed out by it is
/// labelled so (not direct), so its free always finds it built.
pub(crate) fn qcache_zone(k: &Kernel, n: usize) -> Option<&'static Zone> {
    QCACHE.zone(n).or_else(|| {
        let args = uma::CacheArgs {
            name: QCACHE_NAMES.get(n).filter(|_| n > 0)?,
            size: n * PAGE_SIZE,
            import: qcache_import,
            release: qcache_release,
            arg: n,
            ctor: None,
            dtor: None,
            flags: uma::ZoneFlags::NONE,
            bucket_size: None,
        };
        build_cache(k, &QCACHE.zones[n], &args)
    })
}

/// Large class `c`'s cache zone, built now if no request has built it.
pub(crate) fn lcache_zone_for(k: &Kernel, c: usize) -> Option<&'static Zone> {
    lcache_zone(c).or_else(|| {
        let args = uma::CacheArgs {
            name: LCACHE_NAMES.get(c)?,
            size: LARGE_CLASS_PAGES[c] * PAGE_SIZE,
            import: lcache_import,
            release: lcache_release,
            arg: LARGE_CLASS_PAGES[c],
            ctor: None,
            dtor: None,
            flags: uma::ZoneFlags::NONE,
            // Two ranges a bucket (UMA's choice for items above 4 KiB is
            // one): a thread that frees and allocates blocks of several
            // classes in turn trades a bucket with its zone half as often
            // (16 live blocks of 70-200 KB replaced at random: 75 -> 53 ns
            // a pair; four a bucket, 44 ns). A thread's cache holds at
            // most two buckets a class: 5 MB over the eight classes.
            bucket_size: Some(2),
        };
        build_cache(k, &LCACHE[c], &args)
    })
}

/// Builds a page cache's zone and publishes it in `slot` and the fast
/// road's tables (see `publish_built`).
#[cold]
#[inline(never)]
fn build_cache(
    k: &Kernel,
    slot: &'static AtomicPtr<Zone>,
    args: &uma::CacheArgs,
) -> Option<&'static Zone> {
    let z = k.uma.create_cache(args)?;
    crate::timeout::cap_cache(z, args.size);
    Some(publish_built(k, slot, z, crate::fast::publish_caches))
}
