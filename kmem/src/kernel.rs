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
//!   wholly free;
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

use crate::sync::plain::Mutex;
use crate::sync::plain::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

use uma::{SlabSource, Uma, Zone, ZoneArgs};
use vmem::{Arena, Constraints, TagSource};

use crate::classes::{class_align, CLASS_NAMES, CLASS_SIZES, NCLASSES};
use crate::os::{self, round_page, CHUNK_SIZE, PAGE_SIZE};
use crate::pagemeta::{self, WORD_INTERNAL};
use crate::Flags;

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
    /// One zone per malloc size class.
    pub(crate) classes: [&'static Zone; NCLASSES],
    /// Slab size and items per slab of each class (pointer validation).
    pub(crate) slab_size: [usize; NCLASSES],
    pub(crate) ipers: [usize; NCLASSES],
}

struct StaticCell<T>(UnsafeCell<MaybeUninit<T>>);
// SAFETY: written once by the initializing thread before it publishes the
// READY state (Release); read only after observing it (Acquire).
unsafe impl<T: Sync> Sync for StaticCell<T> {}

static KERNEL: StaticCell<Kernel> = StaticCell(UnsafeCell::new(MaybeUninit::uninit()));
static ARENA: StaticCell<Arena<'static>> = StaticCell(UnsafeCell::new(MaybeUninit::uninit()));
static META: StaticCell<Arena<'static>> = StaticCell(UnsafeCell::new(MaybeUninit::uninit()));

/// The kernel arena once built (null during the first boot steps): the
/// page sources switch from the boot chunk to it when it is set.
static ARENA_PTR: AtomicPtr<Arena<'static>> = AtomicPtr::new(ptr::null_mut());
/// The metadata arena once built (set with `ARENA_PTR`).
static META_PTR: AtomicPtr<Arena<'static>> = AtomicPtr::new(ptr::null_mut());
/// The btag zone once created.
static BTAG_ZONE: AtomicPtr<Zone> = AtomicPtr::new(ptr::null_mut());
/// The class zones, for the allocation fast path (null until ready).
pub(crate) static CLASS_ZONES: [AtomicPtr<Zone>; NCLASSES] =
    [const { AtomicPtr::new(ptr::null_mut()) }; NCLASSES];

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

std::thread_local! {
    static INITIALIZING: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
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
                INITIALIZING.with(|i| i.set(true));
                let ok = build();
                INITIALIZING.with(|i| i.set(false));
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
                if INITIALIZING.with(|i| i.get()) {
                    return None; // recursion from inside the bootstrap
                }
                backoff.snooze();
            }
        }
    }
}

fn ncpu() -> usize {
    // SAFETY: sysconf has no preconditions. (std's available_parallelism
    // may read cgroup files through the global allocator.)
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

// ---------------------------------------------------------------- boot chunk

/// The first chunk: boot pages are bump-allocated from its start until the
/// kernel arena exists; then the rest of it becomes the arena's first span.
struct Boot {
    base: usize,
    next: usize,
    end: usize,
    /// Boot pages UMA gave back (they stay here: FreeBSD's boot pages are
    /// never freed either).
    returned: usize,
}

static BOOT: Mutex<Boot> = Mutex::new(Boot {
    base: 0,
    next: 0,
    end: 0,
    returned: 0,
});

fn boot_alloc(size: usize, align: usize) -> Option<NonNull<u8>> {
    let mut b = BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let size = round_page(size)?;
    let align = align.max(PAGE_SIZE);
    let start = b.next.checked_add(align - 1)? & !(align - 1);
    let end = start.checked_add(size)?;
    if b.base == 0 || end > b.end {
        return None;
    }
    b.next = end;
    pagemeta::set(start, size / PAGE_SIZE, WORD_INTERNAL);
    NonNull::new(start as *mut u8)
}

/// Whether `addr` is a boot page (below the split, in the boot chunk).
fn in_boot(addr: usize) -> bool {
    let base = BOOT_BASE.load(Ordering::Acquire);
    base != 0 && addr >= base && addr < BOOT_SPLIT.load(Ordering::Acquire)
}

fn boot_free(size: usize) {
    BOOT.lock().unwrap_or_else(|e| e.into_inner()).returned += size;
}

/// The boot-chunk lock, held for a fork (see `fork`); unlocks on drop.
#[cfg(not(loom))]
pub(crate) struct BootLock(#[allow(dead_code)] crate::sync::plain::MutexGuard<'static, Boot>);

/// Takes the boot-chunk lock for a fork. It is a leaf of the lock order
/// (held only around the bump and the page-metadata words, which take no
/// lock).
#[cfg(not(loom))]
pub(crate) fn fork_lock_boot() -> BootLock {
    BootLock(BOOT.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Boot pages in use and given back (bytes).
pub(crate) fn boot_usage() -> (usize, usize) {
    let b = BOOT.lock().unwrap_or_else(|e| e.into_inner());
    (b.next.saturating_sub(b.base), b.returned)
}

// ---------------------------------------------------------------- page sources

fn arena() -> Option<&'static Arena<'static>> {
    let a = ARENA_PTR.load(Ordering::Acquire);
    // SAFETY: set once to the initialized ARENA cell, never cleared.
    (!a.is_null()).then(|| unsafe { &*a })
}

fn meta() -> Option<&'static Arena<'static>> {
    let a = META_PTR.load(Ordering::Acquire);
    // SAFETY: set once to the initialized META cell, never cleared.
    (!a.is_null()).then(|| unsafe { &*a })
}

/// uma flags -> vmem flags for a page allocation.
pub(crate) fn vflags(flags: Flags) -> vmem::Flags {
    if flags.contains(Flags::WAITOK) {
        vmem::Flags::WAITOK
    } else {
        vmem::Flags::NOWAIT
    }
}

/// Allocates pages from the kernel arena and labels them (`kmem_back`).
/// With `zero` they are zero-filled: free arena pages read as zero except
/// those labelled dirty (see `dirty`), which are cleared here.
pub(crate) fn arena_pages(
    arena: &Arena<'static>,
    size: usize,
    align: usize,
    vf: vmem::Flags,
    word: usize,
    zero: bool,
) -> Option<usize> {
    let c = if align > PAGE_SIZE {
        Constraints::new().align(align)
    } else {
        Constraints::NONE
    };
    let force = vf.contains(vmem::Flags::USE_RESERVE);
    let addr = charged(size, vf, |first| {
        // Large requests first look for pages a recent free left dirty.
        if first && size > QCACHE_MAX && align <= PAGE_SIZE && !force {
            if let Some(a) = crate::dirty::reuse(arena, size) {
                return Ok(a);
            }
        }
        arena.xalloc(size, &c, vf)
    })?;
    crate::dirty::taken(addr, size / PAGE_SIZE, word, zero);
    Some(addr)
}

/// Runs `alloc` for `size` bytes of the kernel arena under the memory
/// limit (pressure.rs): charges first (boundary-tag slabs, `USE_RESERVE`,
/// are charged but never refused; `WAITOK` sleeps at the limit until memory
/// is freed), retries once after a reclaim pass if the arena fails (reclaim
/// before failure, seed 003; `alloc` gets `false` then), and uncharges on
/// failure. A failure, at the limit or in the arena (out of address
/// space), is counted as a pressure failure: the program's request gets
/// null (see [`charged_meta`] for the allocator's own).
pub(crate) fn charged(
    size: usize,
    vf: vmem::Flags,
    alloc: impl FnMut(bool) -> Result<usize, vmem::Error>,
) -> Option<usize> {
    charged_as(size, vf, crate::pressure::Failure::Program, alloc)
}

/// As [`charged`] for the allocator's own pages (the metadata arena): a
/// failure there is counted apart (a bucket that could not be had is not
/// a null for anyone).
pub(crate) fn charged_meta(
    size: usize,
    vf: vmem::Flags,
    alloc: impl FnMut(bool) -> Result<usize, vmem::Error>,
) -> Option<usize> {
    charged_as(size, vf, crate::pressure::Failure::Meta, alloc)
}

fn charged_as(
    size: usize,
    vf: vmem::Flags,
    what: crate::pressure::Failure,
    mut alloc: impl FnMut(bool) -> Result<usize, vmem::Error>,
) -> Option<usize> {
    let force = vf.contains(vmem::Flags::USE_RESERVE);
    if !crate::pressure::charge(size, vf.contains(vmem::Flags::WAITOK), force) {
        crate::pressure::count_failure(what);
        return None;
    }
    let addr = match alloc(true) {
        Ok(a) => Ok(a),
        Err(_) if crate::pressure::reclaim_for_retry() => alloc(false),
        Err(e) => Err(e),
    };
    if addr.is_err() {
        crate::pressure::uncharge(size);
        crate::pressure::count_failure(what);
    }
    addr.ok()
}

/// Unlabels, unbacks and frees pages to the kernel arena.
///
/// # Safety
///
/// `[addr, addr + size)` came from [`arena_pages`] and nothing uses it.
pub(crate) unsafe fn arena_free(arena: &Arena<'static>, addr: usize, size: usize) {
    pagemeta::set(addr, size / PAGE_SIZE, 0);
    // SAFETY: the caller's promise.
    unsafe { os::unback(addr, size) };
    if let Err(e) = arena.xfree(addr, size) {
        crate::report::fatal(format_args!(
            "kmem: freeing {size} bytes at {addr:#x} to the kernel arena: {e}"
        ));
    }
    crate::pressure::uncharge(size);
}

std::thread_local! {
    /// Set while this thread tries the boot chunk alone: the metadata
    /// arena's import then declines.
    static META_NO_IMPORT: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Allocates zero-filled pages of the metadata arena, labelled internal,
/// under the memory limit (as [`arena_pages`]; its free pages are never
/// dirty: they are unbacked when freed, and [`MetaChunks`] cleans what it
/// imports). The boot chunk first (it is never given back), then best fit
/// over the imported chunks, so the metadata that outlives a burst sits in
/// the boot chunk and in few chunks, and the others go back whole.
fn meta_pages(meta: &Arena<'static>, size: usize, align: usize, vf: vmem::Flags) -> Option<usize> {
    let vf = vf
        .without(vmem::Flags::FIRSTFIT)
        .without(vmem::Flags::NEXTFIT)
        .with(vmem::Flags::BESTFIT);
    let c = if align > PAGE_SIZE {
        Constraints::new().align(align)
    } else {
        Constraints::NONE
    };
    let (lo, hi) = (
        BOOT_SPLIT.load(Ordering::Acquire),
        BOOT_BASE.load(Ordering::Acquire) + CHUNK_SIZE,
    );
    let addr = charged_meta(size, vf, |first| {
        if first && lo < hi {
            let boot = c.range(lo, hi - 1);
            let quick = vf.without(vmem::Flags::WAITOK).with(vmem::Flags::NOWAIT);
            let _ = META_NO_IMPORT.try_with(|f| f.set(true));
            let r = meta.xalloc(size, &boot, quick);
            let _ = META_NO_IMPORT.try_with(|f| f.set(false));
            if r.is_ok() {
                return r;
            }
        }
        meta.xalloc(size, &c, vf)
    })?;
    pagemeta::set(addr, size / PAGE_SIZE, WORD_INTERNAL);
    Some(addr)
}

/// The page source of UMA's internal zones and of the malloc class zones:
/// boot pages before the arenas exist, then the metadata arena (`meta`)
/// or the kernel arena. Each slab is labelled in the page metadata with
/// `word`.
pub(crate) struct KernelPages {
    word: usize,
    meta: bool,
    name: &'static str,
}

/// UMA's internal zones ("UMA Zones", "UMA Kegs", buckets, ...) and zones
/// created without a page source: the metadata arena.
pub(crate) static INTERNAL_PAGES: KernelPages = KernelPages {
    word: WORD_INTERNAL,
    meta: true,
    name: "kernel-internal",
};

/// One source per size class, so slabs are labelled with their class.
pub(crate) static CLASS_PAGES: [KernelPages; NCLASSES] = {
    let mut t = [const {
        KernelPages {
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

// SAFETY: boot pages and arena pages are disjoint, page aligned, aligned to
// `align` (bump alignment / xalloc constraint), zero-filled (fresh mappings,
// pages unbacked on free, or dirty pages cleared by `arena_pages`); it sleeps only for WAITOK (vmem's WAITOK); it
// calls no UMA function with a UMA lock held (it holds none: the arena's
// tag source may recurse into the btag zone, which UMA allows).
unsafe impl SlabSource for KernelPages {
    fn alloc(&self, size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
        let size = round_page(size)?;
        let addr = match (arena(), meta()) {
            (Some(_), Some(m)) if self.meta => meta_pages(m, size, align, vflags(flags))?,
            (Some(a), _) => arena_pages(a, size, align, vflags(flags), self.word, true)?,
            _ => return boot_alloc(size, align),
        };
        NonNull::new(addr as *mut u8)
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, _align: usize) {
        let Some(size) = round_page(size) else { return };
        let addr = ptr.as_ptr() as usize;
        if in_boot(addr) {
            boot_free(size);
            return;
        }
        let target = if self.meta { meta() } else { arena() };
        match target {
            // SAFETY: UMA gives back exactly a slab we allocated, from this
            // arena (the source of each slab is recorded: free matches alloc).
            Some(a) => unsafe { arena_free(a, addr, size) },
            None => boot_free(size),
        }
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

/// The boot chunk's base, and where the boot bump stopped when the rest of
/// the chunk went to the arena (addresses at or above it are arena memory).
static BOOT_BASE: AtomicUsize = AtomicUsize::new(0);
static BOOT_SPLIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The btag zone's page source (FreeBSD `vmem_bt_alloc`): pages from the
/// metadata arena, which imports chunks from the kernel arena, with
/// `USE_RESERVE | NOVM | NOWAIT | BESTFIT`, so the tags those allocations
/// need come from the btag zone's reserve, and the new slab refills it.
pub(crate) struct BtPages;
pub(crate) static BT_PAGES: BtPages = BtPages;

// SAFETY: as for KernelPages; `alloc` never sleeps except a 1 ms pause for
// WAITOK callers after a lost race (FreeBSD's `pause("btalloc", 1)`).
unsafe impl SlabSource for BtPages {
    fn alloc(&self, size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
        let size = round_page(size)?;
        let (Some(_), Some(m)) = (arena(), meta()) else {
            return boot_alloc(size, align);
        };
        let vf = vmem::Flags::NOWAIT
            .with(vmem::Flags::NOVM)
            .with(vmem::Flags::USE_RESERVE)
            .with(vmem::Flags::BESTFIT);
        // Nested inside a kernel-arena allocation (seed 002): no reclaim
        // pass from in here.
        let nested = crate::pressure::NestGuard::btag();
        let got = meta_pages(m, size, align, vf);
        drop(nested);
        match got {
            Some(addr) => NonNull::new(addr as *mut u8),
            None => {
                // Out of address space or lost a fill race.
                if flags.contains(Flags::WAITOK) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                None
            }
        }
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, align: usize) {
        // SAFETY: same contract; the matching free of `alloc`.
        unsafe { INTERNAL_PAGES.free(ptr, size, align) }
    }

    fn name(&self) -> &'static str {
        "vmem-bt"
    }
}

/// The kernel arena's tag source: the btag zone.
pub(crate) struct BtTags;
static BT_TAGS: BtTags = BtTags;

fn btag_zone() -> Option<&'static Zone> {
    let z = BTAG_ZONE.load(Ordering::Acquire);
    // SAFETY: set once to a zone that is never destroyed.
    (!z.is_null()).then(|| unsafe { &*z })
}

// SAFETY: items of the btag zone are TAG_SIZE bytes aligned to TAG_ALIGN
// (its ZoneArgs), owned by the caller until freed. With NOVM the zone does
// not allocate a slab (so no arena call, no sleep); without NOVM the zone
// may call BtPages, which calls the kernel arena; it sleeps only for
// WAITOK.
unsafe impl TagSource for BtTags {
    fn alloc_tag(&self, flags: vmem::Flags) -> Option<NonNull<u8>> {
        let z = btag_zone()?;
        let mut f = if flags.contains(vmem::Flags::WAITOK) {
            Flags::WAITOK
        } else {
            Flags::NOWAIT
        };
        if flags.contains(vmem::Flags::NOVM) {
            f = f.with(Flags::NOVM);
        }
        if flags.contains(vmem::Flags::USE_RESERVE) {
            f = f.with(Flags::USE_RESERVE);
        }
        z.alloc(f)
    }

    unsafe fn free_tag(&self, tag: NonNull<u8>) {
        if let Some(z) = btag_zone() {
            // SAFETY: the tag came from this zone (alloc_tag).
            unsafe { z.free(tag) }
        }
    }
}

/// The kernel arena's import source: 2 MiB-aligned chunks from `mmap`,
/// registered in the page metadata; released spans are kept mapped for a
/// while and reused by later imports, then unmapped (see `dirty`).
pub(crate) struct OsChunks;
static OS_CHUNKS: OsChunks = OsChunks;

impl vmem::Source for OsChunks {
    fn import(&self, size: usize, _flags: vmem::Flags) -> Option<usize> {
        let size = size.checked_next_multiple_of(CHUNK_SIZE)?;
        if let Some(base) = crate::dirty::take_span(size) {
            return Some(base);
        }
        let base = os::map_chunks(size)?;
        if !pagemeta::register(base, size) {
            // SAFETY: just mapped, unused.
            unsafe { os::unmap(base, size) };
            return None;
        }
        Some(base)
    }

    fn release(&self, addr: usize, size: usize) {
        // vmem releases a span only when it is wholly free.
        if !crate::dirty::retain_span(addr, size) {
            crate::dirty::unmap_span(addr, size);
        }
    }
}

/// The metadata arena's import source: whole chunks of the kernel arena
/// (FreeBSD `kva_import_domain`), best fit, with the importing call's
/// wait and reserve flags (the btag recursion passes `USE_RESERVE | NOVM`
/// down). Not charged against the memory limit: it is address space; the
/// pages the metadata arena hands out are charged one by one.
pub(crate) struct MetaChunks;
static META_CHUNKS: MetaChunks = MetaChunks;

/// The metadata arena imports this much at a time.
pub(crate) const META_IMPORT: usize = CHUNK_SIZE;

impl vmem::Source for MetaChunks {
    fn import(&self, size: usize, flags: vmem::Flags) -> Option<usize> {
        if META_NO_IMPORT.try_with(|f| f.get()).unwrap_or(false) {
            return None;
        }
        let a = arena()?;
        let keep = vmem::Flags::NOWAIT
            .with(vmem::Flags::WAITOK)
            .with(vmem::Flags::NOVM)
            .with(vmem::Flags::USE_RESERVE);
        let vf = (flags & keep).with(vmem::Flags::BESTFIT);
        let addr = a.xalloc(size, &Constraints::NONE, vf).ok()?;
        // Free metadata pages read as zero: clean what a freed large block
        // left dirty here.
        crate::dirty::taken_clean(addr, size / PAGE_SIZE);
        Some(addr)
    }

    fn release(&self, addr: usize, size: usize) {
        // A wholly free chunk: each of its pages was unbacked when it was
        // freed to the metadata arena (or never touched).
        if let Err(e) = arena().map(|a| a.xfree(addr, size)).unwrap_or(Ok(())) {
            crate::report::fatal(format_args!(
                "kmem: returning metadata chunk {addr:#x} to the kernel arena: {e}"
            ));
        }
    }
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

// ---------------------------------------------------------------- quantum cache

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
    zones: [AtomicPtr<Zone>; QCACHE_PAGES + 1],
}

static QCACHE: KernelQCache = KernelQCache {
    zones: [const { AtomicPtr::new(ptr::null_mut()) }; QCACHE_PAGES + 1],
};

const QCACHE_NAMES: [&str; QCACHE_PAGES + 1] = [
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

/// The quantum-cache zones that exist.
pub(crate) fn qcache_zones() -> impl Iterator<Item = &'static Zone> {
    (1..=QCACHE_PAGES).filter_map(|c| QCACHE.zone(c))
}

impl KernelQCache {
    fn zone(&self, class: usize) -> Option<&'static Zone> {
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
                let _ = arena.xfree(addr, class * PAGE_SIZE);
            }
        }
    }

    fn drain(&self, _arena: &Arena<'_>) {
        for class in 1..=QCACHE_PAGES {
            if let Some(z) = self.zone(class) {
                z.reclaim(uma::Reclaim::Drain);
            }
        }
    }
}

/// The quantum-cache contract's constraint on cached ranges.
const QCACHE_RANGE: Constraints = Constraints::new().range(vmem::QCACHE_MIN_ADDR, usize::MAX);

/// Cache-zone import: `class`-page ranges straight from the arena, with
/// the quantum-cache contract's constraint (never address 0).
fn qcache_import(class: usize, store: &mut [*mut u8], _flags: Flags) -> usize {
    let Some(a) = arena() else { return 0 };
    let mut n = 0;
    for slot in store.iter_mut() {
        match a.xalloc(class * PAGE_SIZE, &QCACHE_RANGE, vmem::Flags::NOWAIT) {
            Ok(addr) => {
                // Cached ranges are dirty anyway; just unlabel them.
                crate::dirty::taken(addr, class, 0, false);
                *slot = addr as *mut u8;
                n += 1;
            }
            Err(_) => break,
        }
    }
    n
}

/// Cache-zone release: unback (free arena pages read as zero) and free.
fn qcache_release(class: usize, items: &[*mut u8]) {
    let Some(a) = arena() else { return };
    for &p in items {
        // SAFETY: a cached range nobody uses: whole pages of ours.
        unsafe { os::unback(p as usize, class * PAGE_SIZE) };
        let _ = a.xfree(p as usize, class * PAGE_SIZE);
    }
}

// ---------------------------------------------------------------- bootstrap

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
    {
        let mut b = BOOT.lock().unwrap_or_else(|e| e.into_inner());
        b.base = base;
        b.next = base;
        b.end = base + CHUNK_SIZE;
    }
    BOOT_BASE.store(base, Ordering::Release);
    // 2. UMA, from boot pages.
    let Some(uma) = Uma::bootstrap(&INTERNAL_PAGES) else {
        return false;
    };
    // 3. The btag zone (its first slab from boot pages too).
    let btag_args = ZoneArgs::new("vmem btag", vmem::TAG_SIZE)
        .align(vmem::TAG_ALIGN)
        .flags(uma::ZoneFlags::VM)
        .source(&BT_PAGES);
    let Some(btag) = uma.create_zone(&btag_args) else {
        return false;
    };
    BTAG_ZONE.store(btag as *const Zone as *mut Zone, Ordering::Release);
    // 4. The kernel arena, its tags from the btag zone.
    let arena = match Arena::builder("kernel arena")
        .quantum(PAGE_SIZE)
        .source(&OS_CHUNKS, IMPORT_QUANTUM)
        .import_growth(IMPORT_GROWTH_MAX)
        .tag_source(&BT_TAGS)
        .tag_reserve(true)
        .qcache(QCACHE_MAX, &QCACHE)
        .reclaim(&crate::pressure::arena_reclaim)
        .build()
    {
        Ok(a) => a,
        Err(_) => return false,
    };
    // SAFETY: single initializing thread; published below.
    let arena: &'static Arena<'static> = unsafe { (*ARENA.0.get()).write(arena) };
    // 4b. The metadata arena, importing chunks from the kernel arena.
    //     Its boundary tags come from vmem's standalone pool, not from the
    //     btag zone: a tag of the btag zone describing a btag slab would
    //     keep another btag slab alive (see the module doc).
    //     (Under loom there is no standalone pool: the btag zone.)
    #[cfg(not(loom))]
    let meta_tags: &'static dyn TagSource = &vmem::STANDALONE_TAGS;
    #[cfg(loom)]
    let meta_tags: &'static dyn TagSource = &BT_TAGS;
    let meta = match Arena::builder("kmem meta")
        .quantum(PAGE_SIZE)
        .source(&META_CHUNKS, META_IMPORT)
        .tag_source(meta_tags)
        .build()
    {
        Ok(a) => a,
        Err(_) => return false,
    };
    // SAFETY: single initializing thread; published below.
    let meta: &'static Arena<'static> = unsafe { (*META.0.get()).write(meta) };
    // 5. The switch: the rest of the boot chunk becomes the metadata
    //    arena's first (static) span, and the page sources move to the
    //    arenas.
    let rest = {
        let mut b = BOOT.lock().unwrap_or_else(|e| e.into_inner());
        let rest = b.next;
        b.end = rest; // no more boot allocations
        rest
    };
    BOOT_SPLIT.store(rest, Ordering::Release);
    META_PTR.store(meta as *const _ as *mut _, Ordering::Release);
    ARENA_PTR.store(arena as *const _ as *mut _, Ordering::Release);
    if rest < base + CHUNK_SIZE
        && meta
            .add(rest, base + CHUNK_SIZE - rest, vmem::Flags::NOWAIT)
            .is_err()
    {
        return false;
    }
    // 6. The reserve that breaks the recursion: enough tags for every CPU
    //    to be inside a btag slab allocation at once (2 * BT_MAXALLOC per
    //    CPU, FreeBSD vmem_startup), and filled now.
    let reserve = 2 * vmem::BT_MAXALLOC * ncpu();
    btag.reserve(reserve);
    btag.prealloc(reserve);
    // 7. The malloc zones.
    let mut classes = [btag; NCLASSES];
    let mut slab_size = [0; NCLASSES];
    let mut ipers = [0; NCLASSES];
    for c in 0..NCLASSES {
        let args = ZoneArgs::new(CLASS_NAMES[c], CLASS_SIZES[c])
            .align(class_align(c).max(8))
            .source(&CLASS_PAGES[c]);
        let Some(z) = uma.create_zone(&args) else {
            return false;
        };
        let Some(info) = z.keg_info() else {
            return false;
        };
        classes[c] = z;
        slab_size[c] = info.layout.slab_size;
        ipers[c] = info.layout.ipers;
    }
    // 8. The quantum cache zones (until they exist, arena.alloc falls
    //    through to xalloc and arena.free to xfree).
    for (class, name) in QCACHE_NAMES.iter().enumerate().skip(1) {
        let Some(z) = uma.create_cache(&uma::CacheArgs {
            name,
            size: class * PAGE_SIZE,
            import: qcache_import,
            release: qcache_release,
            arg: class,
            ctor: None,
            dtor: None,
            flags: uma::ZoneFlags::NONE,
            bucket_size: None,
        }) else {
            return false;
        };
        QCACHE.zones[class].store(z as *const Zone as *mut Zone, Ordering::Release);
    }
    // 9. The memory limit from the environment (BSDALLOC_LIMIT).
    crate::pressure::init_from_env(arena);
    // SAFETY: single initializing thread; READY is published by the caller.
    unsafe {
        (*KERNEL.0.get()).write(Kernel {
            arena,
            meta,
            uma,
            btag,
            btag_reserve: reserve,
            classes,
            slab_size,
            ipers,
        });
    }
    for (c, z) in classes.iter().enumerate() {
        CLASS_ZONES[c].store(*z as *const Zone as *mut Zone, Ordering::Release);
        // The lazy timeout (`timeout` module) runs from their slow paths.
        #[cfg(not(loom))]
        z.set_slow_hook(crate::timeout::tick);
    }
    true
}
