//! malloc(9): `malloc(size, type, flags)` over the size-class zones and
//! large page allocations, with per-type statistics (`vmstat -m`).
//!
//! The untyped core here is shared with [`Kmem`](crate::Kmem) (Rust's
//! `GlobalAlloc`) and the C ABI: a size class is a UMA zone; a request
//! above the largest class (or aligned beyond any class that fits) takes
//! whole pages from the kernel arena, its page count recorded as a cookie
//! in the page metadata so `free(ptr)` needs no size.
//!
//! ## Type tags (the `invariants` feature)
//!
//! With `invariants`, malloc(9) asks for [`MALLOC_TAG_BYTES`] (8) more
//! bytes than the caller and stores a tag, the allocating [`MallocType`]'s address
//! XOR a constant, in the last 8 bytes of the block's usable size (the
//! class size, or the page-rounded size of a large block, both known from
//! the page metadata). [`free`], [`zfree`], [`realloc`] and [`reallocf`]
//! compare the tag with the type they are given before touching the
//! block; a mismatch is reported as [`ReportKind::WrongType`] naming both
//! types, or as [`ReportKind::DoubleFree`] when UMA's debug bitset says
//! the small block is free already (a freed item's tag is overwritten by
//! UMA's trash fill). [`malloc_usable_size`] and realloc's copy leave the
//! tag out, so a caller writing every usable byte never reaches it.
//! Without the feature [`MALLOC_TAG_BYTES`] is 0 and the checks compile to
//! nothing.
//!
//! Only malloc(9) blocks carry a tag: [`Kmem`](crate::Kmem) and
//! [`raw`](crate::raw) blocks do not, and must not be mixed with the typed
//! calls. A typed free of an untyped block is reported (`WrongType`, no
//! type found in the tag); an untyped free of a typed block frees it (its
//! type's statistics keep counting it).

use core::fmt;
use core::ptr::{self, NonNull};

use crate::sync::plain::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use crossbeam_utils::{Backoff, CachePadded};

use crate::classes::{
    class_of, fits_large, large_class_exact, large_pages, CLASS_NAMES, CLASS_SIZES,
};
use crate::kernel::{arena_pages, built_class, class_geometry, kernel, lcache_zone, vflags};
use crate::kernel::{Kernel, QCACHE_MAX};
use crate::os::{round_page, PAGE_SIZE};
use crate::pagemeta::{self, TAG_CACHED, TAG_LARGE, TAG_LARGE_X, TAG_MASK, TAG_SLAB};
use crate::report::{report, Report, ReportKind};
use crate::Flags;

mod moves;
pub(crate) use moves::{grows_a_little, place_grown};
mod types;
pub use types::*;

// ---------------------------------------------------------------- ownership

/// What a pointer handed back to kmem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// An item of size class `c`.
    Class(usize),
    /// A large block of `n` pages.
    Large(usize),
}

impl Owner {
    /// Usable bytes.
    pub(crate) fn size(self) -> usize {
        match self {
            Owner::Class(c) => CLASS_SIZES[c],
            Owner::Large(n) => n * PAGE_SIZE,
        }
    }

    /// The zone name reports give: the class zone, or `"large"`.
    pub(crate) fn zone(self) -> &'static str {
        match self {
            Owner::Class(c) => CLASS_NAMES[c],
            Owner::Large(_) => "large",
        }
    }
}

/// Finds what `ptr` is from the page metadata (FreeBSD `vtoslab`), in
/// O(1). Reports and returns `None` for anything that is not the start of
/// a live allocation that can be proved cheaply.
pub(crate) fn owner_of(_k: &Kernel, ptr: usize, op: &'static str) -> Option<Owner> {
    let word = pagemeta::lookup(ptr);
    let bad = |kind, zone| {
        report(Report::new(kind, op, ptr, zone));
        None
    };
    match word & TAG_MASK {
        TAG_SLAB if word != 0 => {
            let c = pagemeta::slab_class(word);
            let ((slab, ipers), size) = (class_geometry(c), CLASS_SIZES[c]);
            let off = ptr & slab.wrapping_sub(1);
            if slab == 0 || off % size != 0 || off / size >= ipers {
                return bad(ReportKind::NotAllocationStart, Owner::Class(c).zone());
            }
            Some(Owner::Class(c))
        }
        TAG_LARGE | TAG_LARGE_X if ptr % PAGE_SIZE == 0 => Some(Owner::Large(word >> 3)),
        // A freed large block waiting in a page cache.
        TAG_CACHED if ptr % PAGE_SIZE == 0 => bad(ReportKind::DoubleFree, "large"),
        _ if word == pagemeta::WORD_INTERNAL => bad(ReportKind::InternalMemory, ""),
        // A page of a freed large block that still has its data (see
        // `dirty`): freed already, most likely by this same pointer.
        _ if word == 0 && pagemeta::is_dirty(ptr) => bad(ReportKind::DoubleFree, "large"),
        _ if pagemeta::is_ours(ptr) => bad(ReportKind::NotAllocationStart, ""),
        _ => bad(ReportKind::ForeignPointer, ""),
    }
}

// ---------------------------------------------------------------- untyped core

/// Whole pages from the kernel arena, labelled with their page count
/// ([`large_pages`]: a block of 64-256 KiB is rounded up to its large
/// class). Up to [`QCACHE_MAX`] bytes (page aligned) they come through the
/// arena's quantum cache and may hold old data, so `ZERO` clears them; a
/// large class's blocks come from its cache zone, but for `ZERO`; larger
/// blocks (and zero-filled ones of a class) are clean arena pages (zero
/// already) or dirty ones kept from a recent free, and `ZERO` clears only
/// the dirty ones (see `dirty`).
/// `WAITOK` sleeps at the memory limit (and in the arena) until memory is
/// freed.
pub(crate) fn large_alloc(
    k: &Kernel,
    size: usize,
    align: usize,
    flags: Flags,
) -> Option<NonNull<u8>> {
    let zero = flags.contains(Flags::ZERO);
    let vf = vflags(flags);
    let n = large_pages(size, align)?;
    let bytes = n * PAGE_SIZE;
    // No block larger than memory plus swap, and no alignment beyond 1 GiB
    // (an aligned import reserves twice the alignment of address space).
    if bytes > crate::os::max_request() || !align.is_power_of_two() || align > MAX_ALIGN {
        return None;
    }
    // A page cache's range (the quantum cache's, up to 64 KiB, or the
    // large class's): charged already, since its zone charges the ranges
    // it imports and keeps them charged while cached (`charge_cached`),
    // and counted by its zone. A zero-filled block of a class takes arena
    // pages instead (below): clean ones read as zero already, and its
    // class's range would have it write zeros over every page; so does a
    // request the cache cannot serve (the limit, no address space).
    // (From the zones, not through `Arena::alloc`, whose quantum cache
    // falls back to the arena on a miss: a range that was never charged.)
    let zone = if align > PAGE_SIZE {
        None
    } else if bytes <= QCACHE_MAX {
        crate::kernel::qcache_zone(k, n)
    } else if zero {
        None
    } else {
        large_class_exact(n).and_then(|c| crate::kernel::lcache_zone_for(k, c))
    };
    let cached = zone
        .and_then(|z| z.alloc(Flags::NOWAIT))
        .map(|p| p.as_ptr() as usize);
    if let Some(addr) = cached {
        // (Its dirty labels were cleared when its zone imported it.)
        if zero {
            // SAFETY: `bytes` bytes of ours, just allocated.
            unsafe { ptr::write_bytes(addr as *mut u8, 0, bytes) };
        }
        pagemeta::set_head(addr, pagemeta::large_word(n));
        // The page caches' zones have no slow-path hook (`build_cache`);
        // this is their slow road's, as `dirty::free_large` is the arena's.
        #[cfg(not(loom))]
        crate::timeout::tick();
        return NonNull::new(addr as *mut u8);
    }
    // Over-aligned or zero-filled: not through a page cache, nor back.
    let addr = arena_pages(k.arena, bytes, align.max(PAGE_SIZE), vf, 0, zero)?;
    large_handout(addr, n, pagemeta::direct_word(n))
}

/// Labels a large block of `n` pages just taken at `addr` from the kernel
/// arena with its head word and counts it: the last step of every large
/// allocation but a page cache's.
pub(crate) fn large_handout(addr: usize, n: usize, word: usize) -> Option<NonNull<u8>> {
    pagemeta::set_head(addr, word);
    LARGE_ALLOCS.fetch_add(1, Ordering::Relaxed);
    LARGE_PAGES.fetch_add(n as u64, Ordering::Relaxed);
    NonNull::new(addr as *mut u8)
}

/// Counts the free of a large block of `n` pages that goes back to the
/// kernel arena (the page caches' zones count theirs).
fn large_freed(n: usize) {
    LARGE_FREES.fetch_add(1, Ordering::Relaxed);
    LARGE_PAGES.fetch_sub(n as u64, Ordering::Relaxed);
}

/// The largest alignment a large block may ask for.
pub(crate) const MAX_ALIGN: usize = 1 << 30;

/// The allocations, frees and pages of the large blocks that the kernel
/// arena placed directly (typed or not; those of the page caches are
/// counted by their zones, with no shared counter on their roads): with
/// the page caches' zones, the large part of [`malloc_untyped_stats`].
static LARGE_ALLOCS: AtomicU64 = AtomicU64::new(0);
static LARGE_FREES: AtomicU64 = AtomicU64::new(0);
static LARGE_PAGES: AtomicU64 = AtomicU64::new(0);

/// Bytes of the large blocks the kernel arena placed directly in use
/// (every front door's, typed or not): part of the dirty budget's measure
/// (the page caches' ranges are counted by `kernel::page_cache_bytes`).
pub(crate) fn large_bytes_in_use() -> usize {
    LARGE_PAGES.load(Ordering::Relaxed) as usize * PAGE_SIZE
}

/// Gives a large block back: small ones to the quantum cache, those of a
/// large class's pages to its cache zone, others to the arena with their
/// pages kept for reuse (all dirty; see `dirty`).
///
/// # Safety
///
/// `addr` is a live large block of `n` pages, unused from now on.
pub(crate) unsafe fn large_free(k: &Kernel, addr: usize, n: usize) {
    let bytes = n * PAGE_SIZE;
    let direct = pagemeta::lookup(addr) & TAG_MASK == TAG_LARGE_X;
    let lcache = match large_class_exact(n) {
        Some(c) if !direct => lcache_zone(c),
        _ => None,
    };
    if (bytes <= QCACHE_MAX && !direct) || lcache.is_some() {
        // Into a page cache (the quantum cache's or the class's), still
        // charged, counted by its zone; its head labelled cached (a
        // second free is then a double free).
        pagemeta::set(addr, 1, pagemeta::cached_word(n));
        match lcache {
            // SAFETY: the caller's promise: a live block of the class's
            // pages labelled `TAG_LARGE` (not direct), which only the
            // class's cache hands out: one of its ranges, given up, an
            // item of its zone.
            Some(z) => unsafe { z.free(NonNull::new_unchecked(addr as *mut u8)) },
            None => {
                if let Err(e) = k.arena.free(addr, bytes) {
                    crate::report::fatal(format_args!(
                        "kmem: freeing {bytes} bytes at {addr:#x}: {e}"
                    ));
                }
            }
        }
        // (As in `large_alloc`.)
        #[cfg(not(loom))]
        crate::timeout::tick();
        return;
    }
    // To the arena: its head cleared, as every free arena page's word is.
    large_freed(n);
    pagemeta::set(addr, 1, 0);
    // SAFETY: the caller's promise.
    unsafe { crate::dirty::free_large(k.arena, addr, bytes) };
    crate::pressure::uncharge(bytes);
}

/// Resizes the large block at `addr` (`n` pages) to `bytes` (whole pages)
/// where it lies: growing takes the free pages right after it
/// ([`vmem::Arena::xresize`], no copy), shrinking gives its tail back with
/// the pages kept for reuse. False (nothing changed) when the arena cannot
/// (busy neighbour, end of a span) or either size is the quantum cache's:
/// then the caller moves the block.
pub(crate) fn large_resize(k: &Kernel, addr: usize, n: usize, bytes: usize) -> bool {
    let old = n * PAGE_SIZE;
    if old <= QCACHE_MAX || bytes <= QCACHE_MAX || bytes % PAGE_SIZE != 0 {
        return false;
    }
    // A large class's range is its own arena's, not the kernel arena's.
    if pagemeta::lookup(addr) == pagemeta::large_word(n) && large_class_exact(n).is_some() {
        return false;
    }
    if bytes > old
        && !grows_a_little(old, bytes)
        && crate::dirty::held() >= bytes
        && !mostly_dirty(addr + old, (bytes - old) / PAGE_SIZE)
    {
        // A large step onto clean pages, and dirty pages to move to: cheaper
        // than faulting in the clean pages after the block (see
        // `grows_a_little`; random 4 KiB-8 MiB reallocs in 4 threads: 25.6 s
        // moving, 33 s growing in place). When the pages after the block
        // are dirty themselves (a freed block's, as where a `Vec` that
        // doubles was built and dropped before), growing onto them costs
        // neither a copy nor a fault: 60 rounds of a `Vec<u64>` pushed to
        // 8 MiB took 0.30 s moving, against glibc's 0.20 s (in place in
        // its heap).
        return false;
    }
    if bytes > old {
        let extra = bytes - old;
        if bytes > crate::os::max_request() || !crate::pressure::charge(extra, false, false) {
            return false;
        }
        if k.arena.xresize(addr, old, bytes).is_err() {
            crate::pressure::uncharge(extra);
            return false;
        }
        // Free arena pages: dirty ones are unlabelled (and no longer
        // listed); they are the block's now, contents unspecified.
        crate::dirty::taken(addr + old, extra / PAGE_SIZE, 0, false);
        LARGE_PAGES.fetch_add((extra / PAGE_SIZE) as u64, Ordering::Relaxed);
    } else if bytes < old {
        // SAFETY: a live large block of ours above the quantum cache (the
        // caller found its head word), as is its new size; its tail is not
        // used from now on (the caller asked for less).
        if !unsafe { crate::dirty::shrink_large(k.arena, addr, old, bytes) } {
            return false;
        }
        crate::pressure::uncharge(old - bytes);
        LARGE_PAGES.fetch_sub(((old - bytes) / PAGE_SIZE) as u64, Ordering::Relaxed);
    }
    // Resized in the arena: no page cache's range any more.
    pagemeta::set(addr, 1, pagemeta::direct_word(bytes / PAGE_SIZE));
    RESIZED.fetch_add(1, Ordering::Relaxed);
    true
}

/// Whether at least half of the `npages` pages from `addr` are labelled
/// dirty (free, and backed by a freed block's memory). A snapshot: the
/// arena's resize decides whether they are free.
fn mostly_dirty(addr: usize, npages: usize) -> bool {
    let mut dirty = 0;
    pagemeta::dirty_runs(addr, npages, |_, len| dirty += len / PAGE_SIZE);
    dirty * 2 >= npages
}

/// Large blocks resized in place (counted for the statistics).
static RESIZED: AtomicU64 = AtomicU64::new(0);

/// Large blocks resized in place so far.
pub(crate) fn large_resized() -> u64 {
    RESIZED.load(Ordering::Relaxed)
}

/// `realloc` of a large block of `n` pages at `ptr` to a large request,
/// without moving it: kept as it is when [`large_keeps`], else
/// [`large_resize`]. False: the caller moves the block.
fn realloc_large_in_place(k: &Kernel, ptr: usize, n: usize, size: usize, align: usize) -> bool {
    large_want(ptr, size, align)
        .is_some_and(|want| keeps(n, size, align, want) || large_resize(k, ptr, n, want))
}

/// Whether `realloc` (with no size of the old block to honour: the C
/// ABI's) keeps a large block of `n` pages at `ptr`, as it is, for a
/// large request of `size` bytes aligned to `align`: its pages are the
/// request's or its large class's, or it shrinks by less than a quarter
/// (so a block that grows and shrinks around one size is not cut and
/// regrown every time, and a block moved with room to grow, see
/// `grows_a_little`, grows into that room without a call to the arena;
/// its usable size stays).
pub(crate) fn large_keeps(n: usize, ptr: usize, size: usize, align: usize) -> bool {
    large_want(ptr, size, align).is_some_and(|want| keeps(n, size, align, want))
}

/// The whole pages (in bytes) of a `realloc` of the block at `ptr` to
/// `size` bytes aligned to `align`, if that is a large request the block's
/// address serves.
fn large_want(ptr: usize, size: usize, align: usize) -> Option<usize> {
    if class_of(size, align).is_some() || ptr % align != 0 {
        return None;
    }
    round_page(size)
}

/// [`large_keeps`] for a large request of `want` whole pages' bytes.
fn keeps(n: usize, size: usize, align: usize, want: usize) -> bool {
    let old = n * PAGE_SIZE;
    fits_large(n, size, align) || (want <= old && want >= old - old / 4)
}

/// Frees a pointer whose owner is known.
///
/// # Safety
///
/// `ptr` is a live allocation of `owner`, unused from now on.
pub(crate) unsafe fn free_owned(
    k: &Kernel,
    ptr: NonNull<u8>,
    owner: Owner,
    op: &'static str,
) -> bool {
    match owner {
        // SAFETY: the caller's promise (the zone is built: the block is its).
        Owner::Class(c) => built_class(c).is_some_and(|z| unsafe { free_small(z, ptr, c, op) }),
        // SAFETY: the caller's promise: a live large block of n pages.
        Owner::Large(n) => unsafe {
            large_free(k, ptr.as_ptr() as usize, n);
            true
        },
    }
}

/// Frees a small block to its class zone off the fast path: a block that
/// holds the double-free key is reported and kept (false); any other gets
/// the key and goes to the zone.
///
/// # Safety
///
/// `ptr` is the start of a block of class `c`, whose zone is `zone`; if it
/// is live, nothing uses it afterwards.
pub(crate) unsafe fn free_small(
    zone: &uma::Zone,
    ptr: NonNull<u8>,
    c: usize,
    op: &'static str,
) -> bool {
    // SAFETY: the caller's promise: the start of a small block.
    if unsafe { freed_already(ptr.as_ptr(), Owner::Class(c), op) } {
        return false;
    }
    // SAFETY: as above; a live block of the zone: the key marks it freed
    // (see `fast`) before the zone, or anyone else, can see it. (With
    // `invariants` UMA's debug bitset catches double frees and its trash
    // fill covers the item: a key written into an item freed already would
    // spoil that trash.)
    unsafe {
        #[cfg(not(feature = "invariants"))]
        ptr.cast::<u64>().as_ptr().write(crate::fast::free_key());
        zone.free(ptr);
    }
    true
}

/// Whether the small block at `ptr` holds the double-free key (see
/// `fast`); if so, reports the double free (or the use of a freed block,
/// for `op`).
///
/// # Safety
///
/// `ptr` is the start of a small block of kmem (`owner`, a class).
pub(crate) unsafe fn freed_already(ptr: *const u8, owner: Owner, op: &'static str) -> bool {
    // SAFETY: the caller's promise.
    if !unsafe { crate::fast::holds_key(ptr, crate::fast::free_key()) } {
        return false;
    }
    report(Report::new(
        ReportKind::DoubleFree,
        op,
        ptr as usize,
        owner.zone(),
    ));
    true
}

/// Frees a pointer of unknown size (`free(3)`): looked up, validated,
/// reported if bad. Null is a no-op.
///
/// # Safety
///
/// If `ptr` is a live kmem allocation, nothing uses it afterwards.
/// Anything else is detected where the page metadata can tell (see
/// [`owner_of`]).
pub(crate) unsafe fn free_untyped(ptr: *mut u8, op: &'static str) -> Option<Owner> {
    let p = NonNull::new(ptr)?;
    let k = kernel()?;
    let owner = owner_of(k, ptr as usize, op)?;
    // With `invariants`, a second free of a small block is told here, from
    // UMA's debug bitset, so that the caller learns nothing was freed (UMA
    // would report and drop it too, but `free` could not say so). A check,
    // then the free: two racing frees of one block may both pass it, and
    // UMA's own check (under the keg lock) then reports and drops the
    // second, which returns true; the keg lock is taken twice per free.
    // Debug builds only.
    #[cfg(feature = "invariants")]
    if let Owner::Class(c) = owner {
        if crate::kernel::item_is_free(c, ptr) {
            let zone = owner.zone();
            report(Report::new(ReportKind::DoubleFree, op, ptr as usize, zone));
            return None;
        }
    }
    // SAFETY: validated as an allocation start of `owner`.
    unsafe { free_owned(k, p, owner, op) }.then_some(owner)
}

/// The usable size of a kmem allocation, 0 (after a report) if `ptr` is
/// not one.
pub(crate) fn usable_size_untyped(ptr: *const u8, op: &'static str) -> usize {
    if ptr.is_null() {
        return 0;
    }
    match kernel() {
        Some(k) => owner_of(k, ptr as usize, op).map_or(0, Owner::size),
        None => 0,
    }
}

/// Whether a request of `size` bytes aligned to `align` is served by the
/// block of `owner` at `ptr` as it is (same class, or same page count).
fn fits_in_place(owner: Owner, size: usize, align: usize, ptr: usize) -> bool {
    match (owner, class_of(size, align)) {
        (Owner::Class(c), Some(n)) => c == n,
        (Owner::Large(n), None) => fits_large(n, size, align) && ptr % align == 0,
        _ => false,
    }
}

/// Resizes: in place when the class (or the page count) is unchanged,
/// else allocate, copy, free. On failure the old block is untouched.
///
/// # Safety
///
/// `ptr` is null or a live kmem allocation (validated as `free_untyped`).
pub(crate) unsafe fn realloc_untyped(
    ptr: *mut u8,
    size: usize,
    align: usize,
    flags: Flags,
) -> Option<NonNull<u8>> {
    let Some(old) = NonNull::new(ptr) else {
        return crate::fast::alloc_slow(size, align, flags);
    };
    let k = kernel()?;
    let owner = owner_of(k, ptr as usize, "realloc")?;
    // SAFETY: `owner_of` proved `ptr` the start of a block of `owner`.
    if matches!(owner, Owner::Class(_)) && unsafe { freed_already(ptr, owner, "realloc") } {
        return None;
    }
    // With `invariants` freed items carry UMA's trash, not the key: ask
    // UMA's debug bitset (as `free_untyped` does).
    #[cfg(feature = "invariants")]
    if let Owner::Class(c) = owner {
        if crate::kernel::item_is_free(c, ptr) {
            let zone = owner.zone();
            report(Report::new(
                ReportKind::DoubleFree,
                "realloc",
                ptr as usize,
                zone,
            ));
            return None;
        }
    }
    if fits_in_place(owner, size, align, ptr as usize) {
        return Some(old);
    }
    let mut ask = size;
    let mut room = None;
    if let Owner::Large(n) = owner {
        if realloc_large_in_place(k, ptr as usize, n, size, align) {
            return Some(old);
        }
        if grows_a_little(n * PAGE_SIZE, size) {
            // Growing a little, and the pages after it are taken: move it
            // with a quarter more room, so that a block grown a little at a
            // time is copied a bounded number of times (its usable size
            // says so; the room is pages nobody touches until it grows),
            // and where as much again is free after it to grow into (not
            // through the profiler's sampling, which must see it). A larger
            // step moves as any allocation (see `grows_a_little`).
            ask = size.saturating_add(size / 4);
            room = Some(ask.saturating_mul(2));
        }
    }
    let roomy = if size > owner.size() {
        place_grown(k, ask, room, align, flags)
    } else {
        None
    };
    let new = match roomy.or_else(|| crate::fast::alloc_slow(ask, align, flags)) {
        Some(p) => p,
        None if ask != size => crate::fast::alloc_slow(size, align, flags)?,
        None => return None,
    };
    // SAFETY: both live and distinct; copy what both hold.
    unsafe {
        ptr::copy_nonoverlapping(ptr, new.as_ptr(), owner.size().min(size));
        free_owned(k, old, owner, "realloc");
    }
    Some(new)
}

// ---------------------------------------------------------------- type tags

/// Bytes at the end of every [`malloc`] block that hold its type tag: 8
/// with the `invariants` feature, 0 (no tag, no check) without.
///
/// With `invariants`, malloc asks its zone for `size + 8` bytes and writes
/// the tag (the [`MallocType`]'s address XOR a constant) into the last 8
/// bytes of the block's usable size; [`free`], [`zfree`], [`realloc`] and
/// [`reallocf`] check it against the type they are given and report a
/// mismatch ([`ReportKind::WrongType`](crate::ReportKind::WrongType)), or
/// a double free when UMA says the small block is free already.
/// [`malloc_usable_size`] is this much less than the block, so the tag is
/// never among the bytes a caller may write. Blocks of
/// [`Kmem`](crate::Kmem) and [`raw`](crate::raw) carry no tag.
pub const MALLOC_TAG_BYTES: usize = if cfg!(feature = "invariants") { 8 } else { 0 };

/// XORed into a type's address to make its tag ("kmemtype"), so that a
/// block holding a pointer to a type at its end does not pass for a tag.
#[cfg(feature = "invariants")]
const TAG_MAGIC: u64 = 0x6b6d_656d_7479_7065;

#[cfg(feature = "invariants")]
fn tag_of(ty: &'static MallocType) -> u64 {
    (ty as *const MallocType as usize as u64) ^ TAG_MAGIC
}

/// What malloc(9) asks the zones for to serve `size` bytes: room for the
/// tag behind them (with `invariants`; `size` itself without).
#[inline(always)]
pub(crate) fn typed_request(size: usize) -> Option<usize> {
    if MALLOC_TAG_BYTES == 0 {
        Some(size)
    } else {
        size.max(1).checked_add(MALLOC_TAG_BYTES)
    }
}

/// Writes `ty`'s tag into the block (with `invariants`; nothing without).
///
/// # Safety
///
/// `p` is a live block of `owner`, owned by the caller.
#[inline(always)]
unsafe fn tag_set(p: NonNull<u8>, owner: Owner, ty: &'static MallocType) {
    #[cfg(feature = "invariants")]
    // SAFETY: the block has `owner.size() >= MALLOC_TAG_BYTES` bytes (the
    // request included them) and is the caller's; an unaligned write
    // needs no alignment.
    unsafe {
        p.as_ptr()
            .add(owner.size() - MALLOC_TAG_BYTES)
            .cast::<u64>()
            .write_unaligned(tag_of(ty));
    }
    #[cfg(not(feature = "invariants"))]
    let _ = (p, owner, ty);
}

/// Checks the block's tag against `ty` (with `invariants`; always true
/// without). False after a report (`WrongType` or `DoubleFree`): the
/// operation must be dropped.
#[inline(always)]
fn tag_check(
    _k: &Kernel,
    p: NonNull<u8>,
    owner: Owner,
    ty: &'static MallocType,
    op: &'static str,
) -> bool {
    #[cfg(feature = "invariants")]
    {
        // SAFETY: `owner` came from `owner_of(p)`: the page metadata labels
        // the pages of `p`'s block as a live slab or large block of kmem,
        // so its `owner.size()` bytes are mapped (labels are cleared
        // before pages go back to the arena). The read may see a freed
        // item's trash, never unmapped memory.
        let found = unsafe {
            p.as_ptr()
                .add(owner.size() - MALLOC_TAG_BYTES)
                .cast::<u64>()
                .read_unaligned()
        };
        if found != tag_of(ty) {
            tag_mismatch(p.as_ptr() as usize, owner, ty, found, op);
            return false;
        }
    }
    #[cfg(not(feature = "invariants"))]
    let _ = (p, owner, ty, op);
    true
}

/// Reports a tag that is not the given type's: a double free if UMA's
/// debug bitset says the item is free, else a wrong type.
#[cfg(feature = "invariants")]
#[cold]
#[inline(never)]
fn tag_mismatch(ptr: usize, owner: Owner, ty: &'static MallocType, found: u64, op: &'static str) {
    let r = Report {
        mtype: ty.name,
        ..Report::new(ReportKind::WrongType, op, ptr, owner.zone())
    };
    if let Owner::Class(c) = owner {
        if crate::kernel::item_is_free(c, ptr as *const u8) {
            report(Report {
                kind: ReportKind::DoubleFree,
                ..r
            });
            return;
        }
    }
    // The tag names a type if some linked type has that address (a type
    // is linked before its first block is handed out).
    let want = found ^ TAG_MAGIC;
    let mut actual = "";
    for_each_malloc_type(|t| {
        if t as *const MallocType as usize as u64 == want {
            actual = t.name;
        }
    });
    report(Report {
        actual_type: actual,
        ..r
    });
}

/// A malloc(9) block handed back with type `ty`: looked up (reported if it
/// is not an allocation start) and, with `invariants`, its tag checked.
/// `None` (after any report) when it must be left alone.
#[inline]
fn typed_owner(
    ptr: *mut u8,
    ty: &'static MallocType,
    op: &'static str,
) -> Option<(&'static Kernel, NonNull<u8>, Owner)> {
    let p = NonNull::new(ptr)?;
    let k = kernel()?;
    let owner = owner_of(k, ptr as usize, op)?;
    // SAFETY: `owner_of` proved `ptr` the start of a block of `owner`.
    if matches!(owner, Owner::Class(_)) && unsafe { freed_already(ptr, owner, op) } {
        return None;
    }
    tag_check(k, p, owner, ty, op).then_some((k, p, owner))
}

// ---------------------------------------------------------------- malloc(9)

/// Allocates `size` bytes accounted to `ty` (FreeBSD `malloc(9)`).
///
/// `size == 0` returns a minimum (8-byte) allocation. Small sizes are
/// aligned to their class (power-of-two classes naturally); large blocks
/// are page aligned. With the `invariants` feature the block is 8 bytes
/// longer than asked (rounded to its class) and ends with the type tag
/// that [`free`] checks. [`Flags::ZERO`] zeroes; [`Flags::NOWAIT`] fails with
/// `None` when memory cannot be had at once; [`Flags::WAITOK`] may sleep
/// (on a zone limit or a page shortage).
pub fn malloc(size: usize, ty: &'static MallocType, flags: Flags) -> Option<NonNull<u8>> {
    malloc_aligned(size, 1, ty, flags)
}

/// [`malloc`] with an alignment (a power of two; FreeBSD `malloc_aligned`).
pub fn malloc_aligned(
    size: usize,
    align: usize,
    ty: &'static MallocType,
    flags: Flags,
) -> Option<NonNull<u8>> {
    if !align.is_power_of_two() {
        return None;
    }
    let k = kernel()?;
    let req = typed_request(size)?;
    let (p, owner) = match class_of(req, align) {
        Some(c) => (crate::fast::class_alloc(k, c, flags)?, Owner::Class(c)),
        None => {
            let p = large_alloc(k, req, align, flags)?;
            (p, Owner::Large(large_pages(req, align)?))
        }
    };
    ty.account_alloc(owner);
    // SAFETY: a fresh block of `owner`, ours until returned.
    unsafe { tag_set(p, owner, ty) };
    Some(p)
}

/// Frees `ptr` (FreeBSD `free(9)`); null is a no-op. A pointer kmem did not
/// hand out, or not the start of an allocation, is reported (see
/// [`set_report_hook`](crate::set_report_hook)), never trusted.
///
/// `ty` must be the type `ptr` was allocated with. Without the
/// `invariants` feature that is trusted (it only moves statistics); with
/// it, a wrong type is reported as
/// [`ReportKind::WrongType`](crate::ReportKind::WrongType) and a second
/// free of a small block as
/// [`ReportKind::DoubleFree`](crate::ReportKind::DoubleFree), and the
/// free is dropped.
///
/// # Safety
///
/// If `ptr` is a live allocation, nothing uses it afterwards.
pub unsafe fn free(ptr: *mut u8, ty: &'static MallocType) {
    let Some((k, p, owner)) = typed_owner(ptr, ty, "free") else {
        return;
    };
    // SAFETY: validated as a live allocation start of `owner`; the
    // caller's promise that nothing uses it afterwards.
    if unsafe { free_owned(k, p, owner, "free") } {
        ty.account_free(owner);
    }
}

/// Zeroes the allocation's usable bytes, then frees it (FreeBSD `zfree`).
/// Checked as [`free`] before anything is written.
///
/// # Safety
///
/// As [`free`].
pub unsafe fn zfree(ptr: *mut u8, ty: &'static MallocType) {
    let Some((k, p, owner)) = typed_owner(ptr, ty, "zfree") else {
        return;
    };
    // SAFETY: `ptr` is a live allocation of `owner.size()` bytes (the tag
    // too: it is not needed after the check); volatile so the zeroing is
    // not optimized away before the free. Then freed as in `free`.
    unsafe {
        for i in 0..owner.size() {
            ptr::write_volatile(ptr.add(i), 0);
        }
        free_owned(k, p, owner, "zfree");
    }
    ty.account_free(owner);
}

/// Why a typed realloc failed.
enum ReallocError {
    /// `ptr` was reported (bad pointer, wrong type, double free) and left
    /// alone.
    Refused,
    /// No memory for the new block; `ptr` is untouched and still live.
    NoMemory,
}

/// [`realloc`]'s body, telling a refused pointer from a lack of memory.
///
/// # Safety
///
/// As [`realloc`].
unsafe fn realloc_typed(
    ptr: *mut u8,
    size: usize,
    ty: &'static MallocType,
    flags: Flags,
    op: &'static str,
) -> Result<NonNull<u8>, ReallocError> {
    let flags = flags.without(Flags::ZERO);
    if ptr.is_null() {
        return malloc(size, ty, flags).ok_or(ReallocError::NoMemory);
    }
    let (k, old, owner) = typed_owner(ptr, ty, op).ok_or(ReallocError::Refused)?;
    let req = typed_request(size).ok_or(ReallocError::NoMemory)?;
    if fits_in_place(owner, req, 1, ptr as usize) {
        // Same usable size: the tag stays where it is, and is `ty`'s.
        return Ok(old);
    }
    let new = malloc(size, ty, flags).ok_or(ReallocError::NoMemory)?;
    // SAFETY: both live and distinct; copy the bytes the caller could use
    // in both (never the old block's tag); then the old block goes as in
    // `free` (validated above).
    unsafe {
        ptr::copy_nonoverlapping(
            ptr,
            new.as_ptr(),
            (owner.size() - MALLOC_TAG_BYTES).min(size),
        );
        free_owned(k, old, owner, op);
    }
    ty.account_free(owner);
    Ok(new)
}

/// Resizes (FreeBSD `realloc(9)`): null `ptr` allocates; in place when the
/// size class (or page count) is unchanged; otherwise a new block with the
/// contents copied. On failure returns `None` and `ptr` is still valid.
/// `ptr` is checked as by [`free`] (with `invariants`, its type too); a
/// refused `ptr` gives `None` after the report.
///
/// # Safety
///
/// `ptr` is null or a live allocation of `ty`; on success it must not be
/// used again unless it was returned.
pub unsafe fn realloc(
    ptr: *mut u8,
    size: usize,
    ty: &'static MallocType,
    flags: Flags,
) -> Option<NonNull<u8>> {
    // SAFETY: the caller's promise.
    unsafe { realloc_typed(ptr, size, ty, flags, "realloc") }.ok()
}

/// Like [`realloc`], but frees `ptr` when there is no memory for the new
/// block (FreeBSD `reallocf`). A `ptr` that was reported (not a kmem
/// allocation start, wrong type, freed already) is left alone.
///
/// # Safety
///
/// As [`realloc`]; after a failure `ptr` is freed.
pub unsafe fn reallocf(
    ptr: *mut u8,
    size: usize,
    ty: &'static MallocType,
    flags: Flags,
) -> Option<NonNull<u8>> {
    // SAFETY: the caller's promise.
    match unsafe { realloc_typed(ptr, size, ty, flags, "reallocf") } {
        Ok(p) => Some(p),
        Err(ReallocError::Refused) => None,
        Err(ReallocError::NoMemory) => {
            // SAFETY: realloc failed for lack of memory and left `ptr` live.
            unsafe { free(ptr, ty) };
            None
        }
    }
}

/// Usable bytes of a malloc(9) allocation (FreeBSD `malloc_usable_size`):
/// at least the size asked for. 0 for null; a pointer that is not a kmem
/// allocation start is reported. With `invariants` the type tag at the
/// block's end is not counted (the result is [`MALLOC_TAG_BYTES`] less
/// than the block), so the bytes reported are all the caller may write.
pub fn malloc_usable_size(ptr: *const u8) -> usize {
    usable_size_untyped(ptr, "malloc_usable_size").saturating_sub(MALLOC_TAG_BYTES)
}
