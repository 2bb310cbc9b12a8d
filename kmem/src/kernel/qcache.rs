//! The kernel arena's quantum cache (FreeBSD `qcache_*`) as UMA
//! cache-only zones.

use core::ptr::{self, NonNull};

use vmem::{Arena, Constraints};

use crate::classes::NLARGE;
use crate::os::{self, PAGE_SIZE};
use crate::sync::plain::{AtomicPtr, Ordering};
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
/// a reuse costs no page faults); a release (trim, drain) unbacks them
/// first. (`arena_free` unbacks and frees past the cache: nothing may
/// expect the cache's ranges to read as zero.)
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
    import_ranges(super::WIRING.arena(), class, &QCACHE_RANGE, true, store)
}

/// A page cache's import (the quantum cache's or a large class's): ranges
/// of `pages` pages from `a` into `store`, each charged first (a cached
/// range stays charged, see `charge_cached`), with `unlabel` its dirty
/// labels cleared; stops at the limit or when the arena has no more.
fn import_ranges(
    a: Option<&'static Arena<'static>>,
    pages: usize,
    c: &Constraints,
    unlabel: bool,
    store: &mut [*mut u8],
) -> usize {
    let Some(a) = a else { return 0 };
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
        if unlabel {
            crate::dirty::taken(addr, pages, 0, false);
        }
        *slot = addr as *mut u8;
        n += 1;
    }
    n
}

// ---------------------------------------------------------------- large classes

/// The large classes' arena ("kmem large classes"): the ranges of the
/// large classes' cache zones, in chunks of its own mapped from the OS
/// (registered in the page metadata as the kernel arena's are), unmapped
/// when wholly free.
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

/// The large classes' arena's import source: chunks mapped from the OS and
/// registered in the page metadata (`pagemeta::is_ours`), unregistered
/// and unmapped on release (the arena releases a span when it is wholly
/// free, that is when the caches gave every range of it back). Every free
/// page of the large classes' arena reads as zero: fresh, or unbacked by
/// the release of the range it was part of. Not charged (address space:
/// the class zones charge the ranges they import).
struct LcChunks;

impl vmem::Source for LcChunks {
    fn import(&self, size: usize, _flags: vmem::Flags) -> Option<usize> {
        super::pages::map_registered(size.checked_next_multiple_of(crate::os::CHUNK_SIZE)?)
    }

    fn release(&self, addr: usize, size: usize) {
        crate::dirty::unmap_span(addr, size);
    }
}

static LC_CHUNKS: LcChunks = LcChunks;

/// Builds the large classes' arena (tags from `tags`, the kernel arena's
/// source: the btag zone). False if it could not be built.
pub(crate) fn build_lc_arena(tags: &'static dyn vmem::TagSource) -> bool {
    let Ok(a) = Arena::builder("kmem large classes")
        .quantum(PAGE_SIZE)
        .source(&LC_CHUNKS, LC_IMPORT)
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
    import_ranges(lc_arena(), pages, &Constraints::NONE, false, store)
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
/// `pagemeta::TAG_CACHED`; every free arena page's word is 0), unbacked
/// (free arena pages read as zero), freed, uncharged (the import charged
/// it).
fn release_ranges(a: Option<&'static Arena<'static>>, pages: usize, items: &[*mut u8]) {
    let Some(a) = a else { return };
    for &p in items {
        crate::pagemeta::set_head(p as usize, 0);
        // SAFETY: a cached range nobody uses: whole pages of ours.
        unsafe { os::unback(p as usize, pages * PAGE_SIZE) };
        let _ = a.xfree(p as usize, pages * PAGE_SIZE);
    }
    crate::pressure::uncharge(items.len() * pages * PAGE_SIZE);
}
