//! The kernel arena's quantum cache (FreeBSD `qcache_*`) as UMA
//! cache-only zones.

use core::ptr::{self, NonNull};

use vmem::{Arena, Constraints};

use crate::classes::NLARGE;
use crate::os::PAGE_SIZE;
use crate::sync::plain::{AtomicPtr, AtomicUsize, Ordering};
use crate::Flags;
use uma::Zone;

/// Pages per request the kernel arena's quantum cache serves (1..=16
/// pages, vmem's class limit).
pub(crate) const QCACHE_PAGES: usize = vmem::QCACHE_MAX_CLASSES;
/// The largest request the quantum cache serves.
pub(crate) const QCACHE_MAX: usize = QCACHE_PAGES * PAGE_SIZE;

/// The kernel arena's quantum cache (FreeBSD `qcache_*`): one UMA
/// cache-only zone per page count, importing from and releasing to the
/// arena. Ranges freed into it by `large_free` keep their pages (dirty, so
/// a reuse costs no page faults); a release (trim, drain) gives them back
/// to the arena with their pages kept, labelled dirty
/// ([`release_ranges`]). (`arena_free` unbacks and frees past the cache:
/// nothing may expect the cache's ranges to read as zero.)
pub(crate) struct KernelQCache {
    pub(crate) zones: [AtomicPtr<Zone>; QCACHE_PAGES + 1],
}

pub(crate) static QCACHE: KernelQCache = KernelQCache {
    zones: [const { AtomicPtr::new(ptr::null_mut()) }; QCACHE_PAGES + 1],
};

pub(crate) const QCACHE_NAMES: [&str; QCACHE_PAGES + 1] = [
    "",
    "kva qc 4K",
    "kva qc 8K",
    "kva qc 12K",
    "kva qc 16K",
    "kva qc 20K",
    "kva qc 24K",
    "kva qc 28K",
    "kva qc 32K",
    "kva qc 36K",
    "kva qc 40K",
    "kva qc 44K",
    "kva qc 48K",
    "kva qc 52K",
    "kva qc 56K",
    "kva qc 60K",
    "kva qc 64K",
];

/// The page-cache zones that exist: the quantum cache's (ranges of the
/// kernel arena) and the large classes' (ranges of their own arena).
pub(crate) fn qcache_zones() -> impl Iterator<Item = &'static Zone> {
    (1..=QCACHE_PAGES)
        .filter_map(|c| QCACHE.zone(c))
        .chain((0..NLARGE).filter_map(lcache_zone))
}

/// The large classes' cache zones (see [`LARGE_CLASS_PAGES`]): one UMA
/// cache-only zone per class, its items ranges of the class's pages taken
/// from the large classes' arena ([`lc_arena`]), used as the quantum
/// cache's are (`malloc::large_alloc` and `large_free`, the fast road of
/// `fast_large`).
pub(crate) static LCACHE: [AtomicPtr<Zone>; NLARGE] =
    [const { AtomicPtr::new(ptr::null_mut()) }; NLARGE];

pub(crate) const LCACHE_NAMES: [&str; NLARGE] = [
    "large 80K",
    "large 96K",
    "large 112K",
    "large 128K",
    "large 160K",
    "large 192K",
    "large 224K",
    "large 256K",
];

/// The cache zone of large class `c`, once built.
#[inline]
pub(crate) fn lcache_zone(c: usize) -> Option<&'static Zone> {
    let z = LCACHE.get(c)?.load(Ordering::Acquire);
    // SAFETY: set once to a zone that is never destroyed.
    (!z.is_null()).then(|| unsafe { &*z })
}

impl KernelQCache {
    pub(crate) fn zone(&self, class: usize) -> Option<&'static Zone> {
        let z = self.zones.get(class)?.load(Ordering::Acquire);
        // SAFETY: set once to a zone that is never destroyed.
        (!z.is_null()).then(|| unsafe { &*z })
    }
}

impl vmem::QuantumCache for KernelQCache {
    fn alloc(&self, _arena: &Arena<'_>, class: usize, _flags: vmem::Flags) -> Option<usize> {
        let z = self.zone(class)?;
        z.alloc(Flags::NOWAIT).map(|p| p.as_ptr() as usize)
    }

    fn free(&self, arena: &Arena<'_>, class: usize, addr: usize) {
        match (self.zone(class), NonNull::new(addr as *mut u8)) {
            // SAFETY: `addr` is a live range of `class` pages of this arena,
            // given up by its owner: a valid item of the cache zone.
            (Some(z), Some(p)) => unsafe { z.free(p) },
            _ => {
                crate::pagemeta::set_head(addr, 0);
                let _ = arena.xfree(addr, class * PAGE_SIZE);
            }
        }
    }

    fn drain(&self, _arena: &Arena<'_>) {
        // The large classes' ranges too: the arena is out of space.
        for z in qcache_zones() {
            z.reclaim(uma::Reclaim::Drain);
        }
    }
}

/// The quantum-cache contract's constraint on cached ranges.
const QCACHE_RANGE: Constraints = Constraints::new().range(vmem::QCACHE_MIN_ADDR, usize::MAX);

/// Cache-zone import: `class`-page ranges straight from the arena, with
/// the quantum-cache contract's constraint (never address 0). Cached
/// ranges are dirty anyway: their dirty labels are just cleared.
pub(crate) fn qcache_import(class: usize, store: &mut [*mut u8], _flags: Flags) -> usize {
    import_ranges(super::WIRING.arena(), class, &QCACHE_RANGE, store)
}

/// A page cache's import (the quantum cache's or a large class's): ranges
/// of `pages` pages from `a` into `store`, each charged first (a cached
/// range stays charged, see `charge_cached`), its dirty labels cleared (a
/// cached range is dirty anyway: nothing trusts it to read as zero);
/// stops at the limit or when the arena has no more.
fn import_ranges(
    a: Option<&'static Arena<'static>>,
    pages: usize,
    c: &Constraints,
    store: &mut [*mut u8],
) -> usize {
    let Some(a) = a else { return 0 };
    // Caches past their soft cap give their excess back first.
    #[cfg(not(loom))]
    crate::timeout::before_taking_pages();
    let bytes = pages * PAGE_SIZE;
    let mut n = 0;
    for slot in store.iter_mut() {
        if !crate::pressure::charge_cached(bytes) {
            break;
        }
        let Ok(addr) = a.xalloc(bytes, c, vmem::Flags::NOWAIT) else {
            crate::pressure::uncharge(bytes);
            break;
        };
        crate::dirty::taken(addr, pages, 0, false);
        *slot = addr as *mut u8;
        n += 1;
    }
    HELD.fetch_add(n * bytes, Ordering::Relaxed);
    n
}

/// Bytes of ranges the page caches hold (in use or cached): imported less
/// released. Part of what the dirty budget follows
/// (`dirty::dirty_budget`): the pages their trims give back stay dirty.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Bytes of ranges the page caches hold, in use or cached (see `HELD`).
pub(crate) fn page_cache_bytes() -> usize {
    HELD.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------- large classes

/// The large classes' arena ("kmem large classes"): the ranges of the
/// large classes' cache zones, in spans of its own from the kernel arena's
/// source (`pages::OS_CHUNKS`: chunks mapped from the OS and registered
/// in the page metadata, or retained spans), which keeps a wholly free
/// span a while for the next import of either arena (`dirty::retain_span`)
/// and then unmaps it. (Unmapped at once until 2026-12-08: once its
/// caches' trims kept their pages, a trimmed class's spans went back to
/// the OS and the next round of buffers faulted them back, 240k page
/// faults against 189k, 1,000 buffers doubled to 256 KiB three times.)
/// Its free pages hold old data where labelled dirty (trimmed ranges,
/// `dirty::free_cached_range`), as the kernel arena's do; its caches
/// clear the labels of what they import and nobody trusts a cached range
/// to read as zero.
///
/// Apart from the kernel arena because the caches keep their ranges for
/// as long as they are cached: in the kernel arena those pinned pieces of
/// the spans and free ranges that big freed blocks leave, which the arena
/// could then no longer coalesce, retain whole or reuse, and the next big
/// block took fresh pages instead of dirty ones. Taken from the dirty
/// lists, `bsdalloc::patterns` `buffers` (vectors grown to 16 MiB by
/// `realloc`) peaked at 182 MB instead of 152; taken by instant or best
/// fit, the workload `malloc-large` (8 live blocks of 64 KiB-8 MiB, every
/// page written) faulted 41% more pages (76.5k against 54.2k) and ran 20%
/// longer, a dozen cached ranges keeping six spans from being retained;
/// in chunks imported from the kernel arena, 92k.
static LC_ARENA: AtomicPtr<Arena<'static>> = AtomicPtr::new(ptr::null_mut());
static LC_ARENA_CELL: super::wiring::StaticCell<Arena<'static>> = super::wiring::StaticCell::new();

/// The large classes' arena imports this much at a time.
const LC_IMPORT: usize = crate::os::CHUNK_SIZE;

/// The large classes' arena, once built.
pub(crate) fn lc_arena() -> Option<&'static Arena<'static>> {
    let a = LC_ARENA.load(Ordering::Acquire);
    // SAFETY: set once to an arena that lives for the process.
    (!a.is_null()).then(|| unsafe { &*a })
}

/// Builds the large classes' arena (tags from `tags`, the kernel arena's
/// source: the btag zone). False if it could not be built.
pub(crate) fn build_lc_arena(tags: &'static dyn vmem::TagSource) -> bool {
    let Ok(a) = Arena::builder("kmem large classes")
        .quantum(PAGE_SIZE)
        .source(&super::pages::OS_CHUNKS, LC_IMPORT)
        .tag_source(tags)
        .build()
    else {
        return false;
    };
    // SAFETY: the single building thread, once; published below.
    let a: &'static Arena<'static> = unsafe { LC_ARENA_CELL.write(a) };
    LC_ARENA.store(a as *const _ as *mut _, Ordering::Release);
    true
}

/// Large-class cache-zone import: `pages`-page ranges of the large
/// classes' arena (whose free pages carry no dirty labels).
pub(crate) fn lcache_import(pages: usize, store: &mut [*mut u8], _flags: Flags) -> usize {
    import_ranges(lc_arena(), pages, &Constraints::NONE, store)
}

/// Large-class cache-zone release: as [`qcache_release`], to the large
/// classes' arena.
pub(crate) fn lcache_release(pages: usize, items: &[*mut u8]) {
    release_ranges(lc_arena(), pages, items);
}

/// Quantum-cache zone release: `class` is the items' page count.
pub(crate) fn qcache_release(class: usize, items: &[*mut u8]) {
    release_ranges(super::WIRING.arena(), class, items);
}

/// Gives a page cache's ranges of `pages` pages back to their arena `a`:
/// head word cleared (a range freed into the cache has it labelled so, see
/// `pagemeta::TAG_CACHED`; every free arena page's word is 0), freed with
/// its pages kept and labelled dirty (`dirty::free_cached_range`, purged
/// after the decay time as trimmed slabs are), uncharged (the import
/// charged it).
fn release_ranges(a: Option<&'static Arena<'static>>, pages: usize, items: &[*mut u8]) {
    let (Some(a), Some(kernel)) = (a, super::WIRING.arena()) else {
        return;
    };
    let bytes = pages * PAGE_SIZE;
    HELD.fetch_sub(items.len() * bytes, Ordering::Relaxed);
    for &p in items {
        crate::pagemeta::set_head(p as usize, 0);
        // SAFETY: a cached range nobody uses: whole pages that the cache
        // imported from `a`.
        unsafe { crate::dirty::free_cached_range(a, kernel, p as usize, bytes) };
    }
    crate::pressure::uncharge(items.len() * bytes);
}
