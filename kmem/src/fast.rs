//! The fast path of every front door: [`Kmem`](crate::Kmem) (Rust's
//! `GlobalAlloc`), [`raw`](crate::raw) and through it the C ABI (`malloc`,
//! `free`, `calloc`, `realloc`, the aligned family, `malloc_usable_size`,
//! C++ `operator new`/`delete`).
//!
//! A hit is a table lookup and one bucket pop or push in the calling
//! thread's cache of the request's size-class zone ([`uma::FastSlot`]): no
//! lock, no atomic read-modify-write, no `kernel()`, no class zone, no
//! recursion guard. Everything else (the first requests, which build the
//! allocator; an empty or full bucket; large blocks; zones whose items
//! need work on the way in or out) is a miss, and the caller takes its slow
//! road: [`alloc_slow`] here, or the C ABI's guarded one. Both first try
//! the swap road ([`alloc_swap`], [`free_swap`]): a miss that the
//! thread's own two buckets can serve (one empty, the other not) is
//! served by swapping them, with no lock and none of the slow road's
//! layers (about 400 instructions a miss, and most misses of a working
//! set that stays put are such swaps).
//!
//! | operation | lookup | then |
//! |---|---|---|
//! | alloc, size <= 1 KiB, align <= 8 | `SIZE_SLOTS[size]` | pop |
//! | alloc, size <= 1 KiB, align 16 (`malloc`) | `SIZE_SLOTS[A16 + size]` | pop |
//! | alloc, size <= 1 KiB, align 32 to 4096 | `SIZE_SLOTS[over_aligned_size(size, align)]` | pop |
//! | alloc, size <= 32 KiB, align <= 16 | `CLASS_SLOTS[class_of_small(size, align)]` | pop |
//! | dealloc with a layout (`Kmem`) | as alloc | push |
//! | free without a size (C) | page word (two loads) -> the class's check entry (the word is its offset), start-of-item check, the entry's slot | push |
//!
//! A class's entries are filled when its zone is built, by the first
//! request of the class ([`publish_class`]; the zones are built on first
//! use, see [`crate::kernel::class_zone`]), the large blocks' once by the
//! first slow-path call after the kernel is built ([`publish`]); until
//! then an entry is [`FastSlot::NONE`] (whose cache always misses) and
//! the class's start-of-item check fails, so its operations miss. Entries only ever go from
//! their empty value to their final one, each written once, so relaxed
//! loads do: an operation that sees a slot but not yet its check (or the
//! other way round) misses and takes the slow road, which validates
//! everything itself. Class zones are never destroyed, so their slots are
//! never given to another zone.
//!
//! With the `invariants` feature (and under loom) there are no tables:
//! every operation takes the zone's road, whose checks run per item.
//!
//! ## Double frees
//!
//! Every small block freed through a front door carries the double-free
//! key in its first 8 bytes ([`free_key`]), and every small block handed
//! out has that word cleared (glibc's tcache key). A free that finds the
//! key is the second free of a block: the fast path misses and the slow
//! road reports it ([`ReportKind::DoubleFree`], naming the pointer and the
//! size-class zone; by default the process aborts) and drops it, so a
//! double-freed block is never handed out twice. UMA never links items
//! through their own memory (buckets are arrays outside the items), so the
//! key cannot be confused with a free-list link, and it is written only
//! while the freeing thread still holds its cache
//! ([`uma::FastSlot::free_stamped_via`]), so nobody sees a cached block
//! without it. The key is the address of the start-of-item check table
//! (`CHECKS`): random per process where the loader randomizes addresses,
//! as glibc's key was from 2.29 to 2.33 (the thread's tcache address),
//! and never a value a program has reason to store. `free(p)` holds that
//! address in a register for the check it makes anyway, so the key costs
//! the pair four instructions: a compare and a branch and a store per
//! free, a store per allocation. Misses: a block freed, reallocated by the
//! program and freed again (no error), and a block whose first 8 bytes a
//! use-after-free overwrote before the second free. A program whose live
//! block's first word is the key would be reported; only a copy of a
//! freed block's first word (itself a use after free) makes that likely.
//! Blocks taken directly from a class zone ([`kmem::class_zone`]) carry no
//! key and must go back to it directly.
//!
//! [`ReportKind::DoubleFree`]: crate::ReportKind::DoubleFree
//! [`kmem::class_zone`]: crate::class_zone

#[cfg(not(any(loom, feature = "invariants")))]
use crate::sync::plain::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use core::ptr::NonNull;

#[cfg(not(any(loom, feature = "invariants")))]
use uma::FastSlot;
#[cfg(not(loom))]
pub(crate) use uma::{RustTls, TlsAccess, TlsDescriptor};

/// Under loom there are no per-thread tables to reach.
#[cfg(loom)]
pub(crate) trait TlsAccess {}
#[cfg(loom)]
pub(crate) enum RustTls {}
#[cfg(loom)]
pub(crate) enum TlsDescriptor {}
#[cfg(loom)]
impl TlsAccess for RustTls {}
#[cfg(loom)]
impl TlsAccess for TlsDescriptor {}

use crate::classes::class_of;
#[cfg(not(any(loom, feature = "invariants")))]
use crate::classes::{class_of_small, over_aligned_size, NCLASSES};
#[cfg(not(any(loom, feature = "invariants")))]
use crate::classes::{CLASS_SIZES, LUT_LEN};
/// The largest request the size tables serve.
#[cfg(not(any(loom, feature = "invariants")))]
const MAX_SMALL: usize = (LUT_LEN - 1) * 8;
use crate::kernel::kernel;
use crate::malloc::large_alloc;
#[cfg(not(any(loom, feature = "invariants")))]
use crate::pagemeta::{self, SLAB_SHIFT, TAG_MASK, TAG_SLAB};
use crate::Flags;

// ---------------------------------------------------------------- tables

/// The cache slots of the class zones of requests of at most 1 KiB, by
/// size, in two halves, one after the other:
///
/// - `SIZE_SLOTS[size]`: requests aligned to at most 8 (and, at the size
///   [`over_aligned_size`] gives, those aligned to 32 to 4096);
/// - `SIZE_SLOTS[A16 + size]`: requests aligned to 9 to 16 (C's `malloc`,
///   C++'s `new`), which take the 16-aligned classes only (sizes of 0 to
///   16 the 16-byte class, 17 to 32 the 32-byte one), so the index needs
///   no `max(size, align)`.
///
/// Indexed by the byte size itself, not by `(size + 7) / 8` as the class
/// table is: 8 KiB instead of 516 bytes (of which a program touches the
/// lines of the sizes it asks for), and two instructions (the add and the
/// shift) off every allocation. One array, not two: every road ends in the
/// same load from one base (two bases cost `Kmem`'s road a register move
/// or a jump). (32-bit entries: LLVM zero-extends a 16-bit atomic load
/// twice.)
#[cfg(not(any(loom, feature = "invariants")))]
static SIZE_SLOTS: [AtomicU32; 2 * A16] =
    [const { AtomicU32::new(FastSlot::NONE.to_bits()) }; 2 * A16];

/// Where the second half of [`SIZE_SLOTS`] starts.
#[cfg(not(any(loom, feature = "invariants")))]
const A16: usize = MAX_SMALL + 1;

/// `CLASS_SLOTS[c]`: the cache slot of size class `c`'s zone.
#[cfg(not(any(loom, feature = "invariants")))]
static CLASS_SLOTS: [AtomicU32; NCLASSES] =
    [const { AtomicU32::new(FastSlot::NONE.to_bits()) }; NCLASSES];

/// What `free(p)` needs to prove that `p`, in a slab page of class `c`, is
/// the start of one of the slab's items: `off = p & mask` (the offset in
/// the slab; slabs are aligned to their power-of-two size) must be
/// `q * size` with `q < ipers`. With `mul = floor(2^64 / size) + 1` and
/// `e = size * mul mod 2^64` (between 1 and `size`), that is exactly
/// `off * mul mod 2^64 < ipers * e`: a multiple `q * size` maps to
/// `q * e`, anything else to at least `mul`, which is above every `q * e`
/// of the slab (Lemire, Kaser and Kurz's divisibility test, "Faster
/// remainder by direct computation", 2019; it holds for any size, odd or
/// even, while `(slab + size) * size <= 2^64`, see [`check_holds`]). One
/// multiply and one compare, no division and no rotate. `mul` depends on
/// the class size only, so it is a constant (no atomic load: the compiler
/// folds it into the multiply); `limit` is 0 until published, so every
/// check fails before.
#[cfg(not(any(loom, feature = "invariants")))]
#[repr(C, align(64))]
struct ItemCheck {
    /// `floor(2^64 / size) + 1`, fixed at compile time (0 for `CHECKS[0]`).
    mul: u64,
    mask: AtomicU64,
    /// `ipers * e`: 0 until published.
    limit: AtomicU64,
    /// The class zone's cache slot (as `CLASS_SLOTS`), beside the check
    /// that `free(p)` makes just before it needs the slot.
    slot: AtomicU32,
}

/// `floor(2^64 / size) + 1`: the multiplier of the start-of-item check.
#[cfg(not(any(loom, feature = "invariants")))]
const fn check_mul(size: u64) -> u64 {
    ((1u128 << 64) / size as u128 + 1) as u64
}

/// The check's limit for `ipers` items of `size` bytes in a slab of
/// `slab` bytes, or `None` where the test would not be exact (it never is
/// for kmem's classes and slabs; see the unit test).
#[cfg(not(any(loom, feature = "invariants")))]
const fn check_limit(size: u64, slab: u64, ipers: u64) -> Option<u64> {
    if !check_holds(size, slab) || ipers.saturating_mul(size) > slab {
        return None;
    }
    Some(ipers * size.wrapping_mul(check_mul(size)))
}

/// Whether `off * mul < limit` decides "`off` is a multiple of `size`
/// below `ipers * size`" exactly for every `off < slab`: for `off = q *
/// size + r`, `off * mul mod 2^64 = q * e + r * mul`; with `r = 0` that is
/// `q * e` (below `ipers * e` iff `q < ipers`); with `r >= 1` it is at
/// least `mul > 2^64 / size` and, since `r * mul <= 2^64 - 2^64 / size +
/// size - 1`, it does not wrap while `slab + size - 1 <= 2^64 / size`;
/// and `ipers * e <= slab < mul`.
#[cfg(not(any(loom, feature = "invariants")))]
const fn check_holds(size: u64, slab: u64) -> bool {
    size >= 2 && slab.saturating_add(size) <= u64::MAX / size
}

/// `CHECKS[c + 1]`: class `c`'s check; `CHECKS[0]`, whose check always
/// fails, is where a zero page word leads. A slab page's word is the byte
/// offset of its class's entry (`(c + 1) << 6`, see `pagemeta`), so
/// `free(p)` goes from the word to the entry with no arithmetic.
#[cfg(not(any(loom, feature = "invariants")))]
static CHECKS: [ItemCheck; NCLASSES + 1] = {
    let mut t = [const {
        ItemCheck {
            mul: 0,
            mask: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            slot: AtomicU32::new(FastSlot::NONE.to_bits()),
        }
    }; NCLASSES + 1];
    let mut c = 0;
    while c < NCLASSES {
        t[c + 1].mul = check_mul(CLASS_SIZES[c] as u64);
        c += 1;
    }
    t
};

#[cfg(not(any(loom, feature = "invariants")))]
const _: () = assert!(core::mem::size_of::<ItemCheck>() == 1 << SLAB_SHIFT);

/// Set once the tables are filled.
#[cfg(not(any(loom, feature = "invariants")))]
static PUBLISHED: AtomicBool = AtomicBool::new(false);

/// Where the double-free key points when there is no `CHECKS` table
/// (loom and `invariants` builds): any address of ours will do.
#[cfg(any(loom, feature = "invariants"))]
static KEY_ANCHOR: u8 = 0;

/// The key every freed small block carries in its first 8 bytes (see the
/// module doc): the address of `CHECKS`, which `free(p)` has in a register
/// already. The same in every thread and after `fork`, and fixed from the
/// start (no "not chosen yet" value for racing first frees to disagree on).
#[inline(always)]
pub(crate) fn free_key() -> u64 {
    #[cfg(not(any(loom, feature = "invariants")))]
    let anchor = CHECKS.as_ptr() as usize;
    #[cfg(any(loom, feature = "invariants"))]
    let anchor = &KEY_ANCHOR as *const u8 as usize;
    anchor as u64
}

/// `CHECKS`' address as the C door's roads take it: with no GOT load (see
/// `static_addr!`). The base of [`check_word`]'s entries and, in the
/// unsized free, [`free_key`] itself (the same address), so that the two
/// share one register.
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
fn checks_base() -> *const u8 {
    static_addr!(CHECKS)
}

/// Whether the small block at `p` holds the key: freed already.
///
/// # Safety
///
/// `p` is the start of a small block of kmem (8 bytes at least, 8-aligned,
/// mapped).
#[inline(always)]
pub(crate) unsafe fn holds_key(p: *const u8, key: u64) -> bool {
    // SAFETY: the caller's promise.
    unsafe { p.cast::<u64>().read() == key }
}

/// A fresh item of class `c`'s zone, its double-free key cleared: every
/// front door's allocation through the zone itself (not the cache's fast
/// pop).
#[inline(always)]
pub(crate) fn class_alloc(
    k: &crate::kernel::Kernel,
    c: usize,
    flags: Flags,
) -> Option<NonNull<u8>> {
    let p = crate::kernel::class_zone(k, c)?.alloc(flags)?;
    // SAFETY: a fresh item of a class zone, ours.
    unsafe { clear_key(p) };
    Some(p)
}

/// Clears the key of a small block being handed out.
///
/// # Safety
///
/// `p` is a small block of kmem the caller now owns.
#[inline(always)]
pub(crate) unsafe fn clear_key(p: NonNull<u8>) {
    // SAFETY: the caller's promise: 8 bytes at least, 8-aligned.
    unsafe { p.cast::<u64>().as_ptr().write(0) }
}

/// Fills the tables from the built kernel: the large blocks' and those of
/// the class zones built so far (once; racing callers write the same
/// values; a class zone built later fills its own, [`publish_class`]).
/// Called from the slow roads, so every front door's first miss
/// publishes.
#[cfg(not(any(loom, feature = "invariants")))]
#[cold]
#[inline(never)]
fn publish() {
    if PUBLISHED.load(Ordering::Acquire) {
        return;
    }
    if kernel().is_none() || crate::debugmode::on() {
        // Not built yet; or debug mode, where every operation takes the
        // slow road (no tables).
        return;
    }
    for c in 0..NCLASSES {
        if let Some(z) = crate::kernel::built_class(c) {
            publish_class(c, z);
        }
    }
    crate::fast_large::publish();
    PUBLISHED.store(true, Ordering::Release);
}

/// Fills class `c`'s entries of the tables from its zone `z`, just built
/// (zones are built on first use, see [`crate::kernel::class_zone`]):
/// its start-of-item check, its slot, and the size table's entries of
/// the sizes it serves. Until then those requests miss, and their slow
/// road builds the zone. Racing callers write the same values.
#[cfg(not(any(loom, feature = "invariants")))]
pub(crate) fn publish_class(c: usize, z: &uma::Zone) {
    if crate::debugmode::on() {
        // Debug mode: every operation takes the slow road (no tables).
        return;
    }
    let (slab, ipers) = crate::kernel::class_geometry(c);
    let size = CLASS_SIZES[c] as u64;
    let e = &CHECKS[c + 1];
    e.mask.store(slab as u64 - 1, Ordering::Relaxed);
    // Last, with release: a check that sees `limit` sees the mask. A
    // geometry the test is not exact for (none of kmem's) keeps the
    // limit 0: its frees take the slow road, which proves them there.
    let slot = z.fast_slot().to_bits();
    e.slot.store(slot, Ordering::Relaxed);
    CLASS_SLOTS[c].store(slot, Ordering::Relaxed);
    if let Some(limit) = check_limit(size, slab as u64, ipers as u64) {
        e.limit.store(limit, Ordering::Release);
    }
    let (any, a16) = SIZE_SLOTS.split_at(A16);
    for e in &any[sizes_of_class(c, |s| class_of_small(s.max(1), 1))] {
        e.store(slot, Ordering::Relaxed);
    }
    for e in &a16[sizes_of_class(c, |s| class_of_small(s, 16))] {
        e.store(slot, Ordering::Relaxed);
    }
}

/// The sizes of `0..A16` whose class by `class` is `c`: one range, as a
/// request's class is the smallest (allowed) class that holds it, so it
/// does not go down as the size goes up. Two binary searches: filling a
/// class's entries is part of every process's start (each class is built
/// by its first request), and a scan of the table's 1,025 sizes per class
/// cost 30 us a process.
#[cfg(not(any(loom, feature = "invariants")))]
fn sizes_of_class(c: usize, class: impl Fn(usize) -> Option<usize>) -> core::ops::Range<usize> {
    // Larger than any class: a size no class holds sorts last.
    let key = |s: usize| class(s).unwrap_or(usize::MAX);
    let first_at_least = |c: usize| {
        let (mut lo, mut hi) = (0, A16);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key(mid) < c {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    };
    first_at_least(c)..first_at_least(c + 1)
}

/// Without tables there is nothing to publish.
#[cfg(any(loom, feature = "invariants"))]
pub(crate) fn publish_class(_c: usize, _z: &uma::Zone) {}

/// Fills the page caches' entries of the large blocks' tables from the
/// zones built so far: after one is built (on first use, see
/// [`crate::kernel::qcache_zone`]). Not in debug mode.
pub(crate) fn publish_caches() {
    #[cfg(not(any(loom, feature = "invariants")))]
    if !crate::debugmode::on() {
        crate::fast_large::publish();
    }
}

// ---------------------------------------------------------------- lookups

/// The slot of the class zone of a request of at most 1 KiB (maybe
/// `NONE`), or `None` for any other request. A request aligned to more
/// than 16 (at most a page) is looked up as the size whose class is its
/// class ([`over_aligned_size`]).
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
fn small_slot(size: usize, align: usize) -> Option<FastSlot> {
    let i = if align <= 8 {
        // Most requests (Rust's, through `Kmem`): sizes below the
        // alignment take the 8-byte class as their own size does, so the
        // size itself is the index, without `max(size, align)`.
        if size > MAX_SMALL {
            return None;
        }
        size
    } else if align <= 16 {
        if size > MAX_SMALL {
            return None;
        }
        A16 + size
    } else {
        let s = over_aligned_size(size, align)?;
        if s > MAX_SMALL {
            return None;
        }
        s
    };
    // SAFETY: i < 2 * A16; the table holds only `to_bits` of slots.
    Some(unsafe { FastSlot::from_bits(SIZE_SLOTS.get_unchecked(i).load(Ordering::Relaxed)) })
}

/// The slot of the class zone of a request of at most 32 KiB (maybe
/// `NONE`), or `None` for any other request. Meant for 1 KiB to 32 KiB,
/// whose class is computed, not looked up.
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
fn mid_slot(size: usize, align: usize) -> Option<FastSlot> {
    let c = class_of(size, align)?;
    // SAFETY: a class number is below NCLASSES; the table holds only
    // `to_bits` of slots.
    Some(unsafe { FastSlot::from_bits(CLASS_SLOTS.get_unchecked(c).load(Ordering::Relaxed)) })
}

/// The check entry of the small block starting at `ptr`, if the page
/// metadata says `ptr` is the start of an item of a class slab (and the
/// tables are published); `None` for anything else, which the slow road
/// then sorts out (null, large blocks, foreign or interior pointers,
/// reports).
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
fn item_check(ptr: *const u8) -> Option<&'static ItemCheck> {
    check_word(ptr, pagemeta::lookup(ptr as usize))
}

/// [`item_check`] for `free`, whose next step reads the block: a pointer
/// with any of bits 48..63 set may get another page's word here, and then
/// that read faults (see [`pagemeta::lookup_fast`]).
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
fn item_check_free(ptr: *const u8) -> Option<&'static ItemCheck> {
    check_word(ptr, pagemeta::lookup_fast(ptr as usize))
}

/// The check entry that the page word `word` of `ptr`'s page leads to, if
/// `ptr` passes its start-of-item check.
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
fn check_word(ptr: *const u8, word: usize) -> Option<&'static ItemCheck> {
    if word & TAG_MASK != TAG_SLAB {
        return None;
    }
    // SAFETY: a word with the slab tag is 0 or a slab word, `(c + 1) << 6`
    // for a class c: the byte offset of CHECKS[0] or CHECKS[c + 1].
    let e = unsafe { &*checks_base().add(word).cast::<ItemCheck>() };
    // First, with acquire (a plain load on x86-64): 0 until published, and
    // once seen, the mask is the published one (`mul` is a constant).
    let limit = e.limit.load(Ordering::Acquire);
    let off = ptr as u64 & e.mask.load(Ordering::Relaxed);
    (off.wrapping_mul(e.mul) < limit).then_some(e)
}

/// The class of a published check entry (never `CHECKS[0]`, whose check
/// fails): its index less one.
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
fn class_of_check(e: &ItemCheck) -> usize {
    (e as *const ItemCheck as usize - CHECKS.as_ptr() as usize) / core::mem::size_of::<ItemCheck>()
        - 1
}

/// The size class of the small block starting at `ptr` (see
/// [`item_check`]).
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
pub(crate) fn class_of_ptr(ptr: *const u8) -> Option<usize> {
    let e = item_check(ptr)?;
    Some(class_of_check(e))
}

/// For the profiler's gated frees (`prof::gated`): the class and the slot
/// of the small block starting at `ptr` (as
/// [`item_check`] proves it), or `None`.
#[cfg(not(any(loom, feature = "invariants")))]
#[inline]
pub(crate) fn block_slot(ptr: *const u8) -> Option<(usize, FastSlot)> {
    let e = item_check(ptr)?;
    let c = class_of_check(e);
    // SAFETY: the table holds only `to_bits` of slots.
    let slot = unsafe { FastSlot::from_bits(e.slot.load(Ordering::Relaxed)) };
    Some((c, slot))
}

/// For the profiler's gated frees: the class and slot of a request of at
/// most 32 KiB (published), or `None`.
#[cfg(not(any(loom, feature = "invariants")))]
#[inline]
pub(crate) fn layout_slot(size: usize, align: usize) -> Option<(usize, FastSlot)> {
    let c = class_of(size, align)?;
    // SAFETY: a class number is below NCLASSES; the table holds only
    // `to_bits` of slots.
    let slot = unsafe { FastSlot::from_bits(CLASS_SLOTS.get_unchecked(c).load(Ordering::Relaxed)) };
    (slot != FastSlot::NONE).then_some((c, slot))
}

/// No tables: every lookup misses.
#[cfg(any(loom, feature = "invariants"))]
#[inline(always)]
pub(crate) fn class_of_ptr(_ptr: *const u8) -> Option<usize> {
    None
}

// ---------------------------------------------------------------- hits

/// The fast free of every front door: a block holding `key` (the
/// double-free key) was freed already (the slow road reports it); any
/// other goes into the cache with the key stamped. False on a miss
/// (nothing written).
///
/// # Safety
///
/// `ptr` is a live item of `slot`'s zone (a kmem class, 8 bytes at least),
/// not used afterwards.
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
unsafe fn stamped_free<A: TlsAccess>(slot: FastSlot, ptr: NonNull<u8>, key: u64) -> bool {
    // SAFETY: the caller's promise.
    unsafe { !holds_key(ptr.as_ptr(), key) && slot.free_stamped_via::<A>(ptr, key) }
}

/// The fast allocation of every front door: an item from the calling
/// thread's cache of `slot`'s zone with its double-free key cleared, or
/// `None` on a miss.
///
/// # Safety
///
/// `slot` is a class zone's (never destroyed).
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
unsafe fn pop_cleared<A: TlsAccess>(slot: FastSlot) -> Option<NonNull<u8>> {
    // SAFETY: the caller's promise; the item is ours once popped.
    unsafe {
        let p = slot.alloc_via::<A>()?;
        clear_key(p);
        Some(p)
    }
}

/// An item from the calling thread's cache for a request of at most 1 KiB
/// aligned to at most 16, or `None` on a miss and for any other request
/// (then [`alloc_mid`], [`alloc_slow`] or the front door's own slow road).
/// `A` is how the thread's cache table is reached (see
/// [`uma::TlsAccess`]).
#[inline(always)]
pub(crate) fn alloc<A: TlsAccess>(size: usize, align: usize) -> Option<NonNull<u8>> {
    #[cfg(not(any(loom, feature = "invariants")))]
    {
        // SAFETY: the slot of a class zone, never destroyed.
        unsafe { pop_cleared::<A>(small_slot(size, align)?) }
    }
    #[cfg(any(loom, feature = "invariants"))]
    {
        let _ = core::marker::PhantomData::<A>;
        let _ = (size, align);
        None
    }
}

/// [`alloc`] for a request aligned to exactly 16 (C's `malloc`, C++'s
/// `operator new`): the same hit, two instructions shorter.
#[inline(always)]
pub(crate) fn alloc_align16<A: TlsAccess>(size: usize) -> Option<NonNull<u8>> {
    #[cfg(not(any(loom, feature = "invariants")))]
    {
        if size > MAX_SMALL {
            return None;
        }
        // SAFETY: size <= MAX_SMALL; the table holds only `to_bits` of
        // class zones' slots (never destroyed).
        unsafe {
            let table = static_addr!(SIZE_SLOTS).cast::<AtomicU32>();
            let bits = (*table.add(A16 + size)).load(Ordering::Relaxed);
            pop_cleared::<A>(FastSlot::from_bits(bits))
        }
    }
    #[cfg(any(loom, feature = "invariants"))]
    {
        let _ = core::marker::PhantomData::<A>;
        let _ = size;
        None
    }
}

/// Puts a block of a request of at most 1 KiB aligned to at most 16 back in
/// the calling thread's cache; false on a miss and for any other request
/// (then [`free_mid`] or the slow road).
///
/// # Safety
///
/// `ptr` came from kmem for a request of exactly this size and alignment
/// (so from that class zone) and is not used afterwards.
#[inline(always)]
pub(crate) unsafe fn free_sized<A: TlsAccess>(ptr: NonNull<u8>, size: usize, align: usize) -> bool {
    #[cfg(not(any(loom, feature = "invariants")))]
    {
        match small_slot(size, align) {
            // SAFETY: the caller's promise: a live item of this slot's zone
            // (8 bytes at least).
            Some(slot) => unsafe { stamped_free::<A>(slot, ptr, free_key()) },
            None => false,
        }
    }
    #[cfg(any(loom, feature = "invariants"))]
    {
        let _ = core::marker::PhantomData::<A>;
        let _ = (ptr, size, align);
        false
    }
}

/// [`alloc`] for requests of 1 KiB to 32 KiB aligned to at most 16 (`None`
/// for others, and on a miss). Out of line and called after [`alloc`]
/// missed, so that the small path stays straight.
#[inline(never)]
pub(crate) fn alloc_mid<A: TlsAccess>(size: usize, align: usize) -> Option<NonNull<u8>> {
    #[cfg(not(any(loom, feature = "invariants")))]
    {
        // SAFETY: the slot of a class zone, never destroyed.
        unsafe { pop_cleared::<A>(mid_slot(size, align)?) }
    }
    #[cfg(any(loom, feature = "invariants"))]
    {
        let _ = core::marker::PhantomData::<A>;
        let _ = (size, align);
        None
    }
}

/// [`free_sized`] for requests of 1 KiB to 32 KiB aligned to at most 16,
/// out of line.
///
/// # Safety
///
/// As [`free_sized`].
#[inline(never)]
pub(crate) unsafe fn free_mid<A: TlsAccess>(ptr: NonNull<u8>, size: usize, align: usize) -> bool {
    #[cfg(not(any(loom, feature = "invariants")))]
    {
        match mid_slot(size, align) {
            // SAFETY: the caller's promise: a live item of this slot's zone.
            Some(slot) => unsafe { stamped_free::<A>(slot, ptr, free_key()) },
            None => false,
        }
    }
    #[cfg(any(loom, feature = "invariants"))]
    {
        let _ = core::marker::PhantomData::<A>;
        let _ = (ptr, size, align);
        false
    }
}

/// Puts an item of size class `c` back in the calling thread's cache;
/// false on a miss.
///
/// # Safety
///
/// `ptr` is a live item of class `c`'s zone (e.g. proved by
/// [`class_of_ptr`]), not used afterwards.
#[inline(always)]
pub(crate) unsafe fn free_class<A: TlsAccess>(ptr: NonNull<u8>, c: usize) -> bool {
    #[cfg(not(any(loom, feature = "invariants")))]
    {
        // SAFETY: c < NCLASSES by the caller's promise; the table holds
        // only `to_bits` of slots; the item is of that slot's zone.
        unsafe {
            let bits = CLASS_SLOTS.get_unchecked(c).load(Ordering::Relaxed);
            stamped_free::<A>(FastSlot::from_bits(bits), ptr, free_key())
        }
    }
    #[cfg(any(loom, feature = "invariants"))]
    {
        let _ = core::marker::PhantomData::<A>;
        let _ = (ptr, c);
        false
    }
}

/// `free(p)` without a size: the page word gives the class, then as
/// [`free_class`]. False on a miss (null, not a small item start, bucket
/// full, tables not yet published, ...): then the slow road, which
/// validates and reports.
///
/// # Safety
///
/// If `ptr` is a live kmem allocation, nothing uses it afterwards.
#[inline(always)]
pub(crate) unsafe fn free<A: TlsAccess>(ptr: *mut u8) -> bool {
    #[cfg(not(any(loom, feature = "invariants")))]
    {
        let Some(e) = item_check_free(ptr) else {
            return false;
        };
        // SAFETY: the page metadata proves `ptr` the start of an item of
        // the class whose slot this is (a slab word is only set while the
        // slab is the class zone's); the caller promises it is live and
        // unused from now on. The table holds only `to_bits` of slots.
        unsafe {
            stamped_free::<A>(
                FastSlot::from_bits(e.slot.load(Ordering::Relaxed)),
                NonNull::new_unchecked(ptr),
                checks_base() as u64,
            )
        }
    }
    #[cfg(any(loom, feature = "invariants"))]
    {
        let _ = core::marker::PhantomData::<A>;
        let _ = ptr;
        false
    }
}

// ---------------------------------------------------------------- swaps

/// After a fast allocation of at most 32 KiB aligned to at most 16
/// missed, the first step of the zone's miss road alone: the thread's
/// alloc bucket is empty and its free bucket is not, so the two swap and
/// an item comes out ([`uma::FastSlot::alloc_swap_via`]: no lock, no call
/// out of UMA). Most misses of a working set that stays put are this, and
/// the whole slow road of a front door (profiler, debug mode, recursion
/// guard, class lookup, zone) cost them about 400 instructions. `None`
/// when it does not serve (then the slow road). While profiling, the
/// sampler's countdown counts the swap's allocation and looks at the
/// bucket it brought, as the slow road's visit does
/// ([`crate::prof::alloc_swap`]); the picked allocation, a stand-in, a
/// class's first visit and a gated class take the slow road.
#[inline(never)]
pub(crate) fn alloc_swap<A: TlsAccess>(size: usize, align: usize) -> Option<NonNull<u8>> {
    #[cfg(not(any(loom, feature = "invariants")))]
    {
        let p = if crate::prof::on() {
            crate::prof::alloc_swap::<A>(size, align)?
        } else {
            let slot = match small_slot(size, align) {
                Some(s) => s,
                None => mid_slot(size, align)?,
            };
            // SAFETY: the slot of a class zone, never destroyed.
            unsafe { slot.alloc_swap_via::<A>()? }
        };
        // SAFETY: the item is ours once popped.
        unsafe { clear_key(p) };
        Some(p)
    }
    #[cfg(any(loom, feature = "invariants"))]
    {
        let _ = core::marker::PhantomData::<A>;
        let _ = (size, align);
        None
    }
}

/// As [`alloc_swap`] for a free whose fast push missed (the alloc bucket
/// full, the free bucket with room): `ptr`, the start of a small block
/// (proved by the page metadata when `layout` is `None`; promised by the
/// caller's layout otherwise), goes in stamped with the double-free key.
/// False, with nothing done, when it does not serve, and for a block that
/// holds the key (the slow road reports it). While profiling, the C ABI's
/// swaps are followed by the sampler's look that the slow road's free
/// makes ([`crate::prof::free_swap`]); `Kmem`'s are refused (its frees are
/// all gated then).
///
/// # Safety
///
/// If `ptr` is a live kmem allocation (of `layout`, if given), nothing uses
/// it afterwards.
#[inline(never)]
pub(crate) unsafe fn free_swap<A: TlsAccess>(ptr: *mut u8, layout: Option<(usize, usize)>) -> bool {
    #[cfg(not(any(loom, feature = "invariants")))]
    {
        if crate::prof::on() {
            // (`Kmem`'s frees are all gated while profiling: its zones'
            // swaps refuse them.)
            // SAFETY: the caller's promise.
            return layout.is_none() && unsafe { crate::prof::free_swap::<A>(ptr) };
        }
        let key = free_key();
        let slot = match layout {
            None => match block_slot(ptr) {
                Some((_, slot)) => slot,
                None => return false,
            },
            Some((size, align)) => match mid_slot(size, align) {
                Some(slot) => slot,
                None => return false,
            },
        };
        // SAFETY: `ptr` is the start of an item of the slot's zone (proved,
        // or the caller's promise), 8 bytes at least; the caller gives it
        // up.
        unsafe {
            !holds_key(ptr, key)
                && slot.free_swap_stamped_via::<A>(NonNull::new_unchecked(ptr), key)
        }
    }
    #[cfg(any(loom, feature = "invariants"))]
    {
        let _ = core::marker::PhantomData::<A>;
        let _ = (ptr, layout);
        false
    }
}

// ---------------------------------------------------------------- slow road

/// Everything but a hit: the first requests (which build the allocator and
/// publish the tables), small requests through their class zone (the
/// thread's cache refills there), large and over-aligned ones through the
/// kernel arena. `None` when memory cannot be had (or the request is
/// absurd).
#[cfg_attr(not(feature = "invariants"), cold)]
#[inline(never)]
pub(crate) fn alloc_slow(size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
    if let Some(p) = alloc_swap::<TlsDescriptor>(size, align) {
        if flags.contains(Flags::ZERO) {
            // SAFETY: a fresh item of at least `size` bytes, ours.
            unsafe { core::ptr::write_bytes(p.as_ptr(), 0, size) };
        }
        return Some(p);
    }
    if crate::debugmode::decide() != crate::debugmode::DebugFlags::NONE {
        return crate::debugmode::alloc(size, align, flags, alloc_plain);
    }
    if let Some(p) = crate::prof::alloc_gated::<TlsDescriptor>(size, align) {
        if flags.contains(Flags::ZERO) {
            // SAFETY: a fresh item of at least `size` bytes, ours.
            unsafe { core::ptr::write_bytes(p.as_ptr(), 0, size) };
        }
        return Some(p);
    }
    if let Some(p) = alloc_mid::<TlsDescriptor>(size, align) {
        // (Its key is cleared.)
        if flags.contains(Flags::ZERO) {
            // SAFETY: a fresh item of at least `size` bytes, ours.
            unsafe { core::ptr::write_bytes(p.as_ptr(), 0, size) };
        }
        return Some(p);
    }
    alloc_missed(size, align, flags)
}

/// [`alloc_slow`] for a caller that tried the profiler's gate and both
/// cache lookups already (the C ABI's slow road): debug mode, or the zone
/// or the pages. (The zone's own allocation pops the thread's cache
/// first, so a caller that did not try it loses nothing but time.)
#[cfg_attr(not(feature = "invariants"), cold)]
#[inline(never)]
pub(crate) fn alloc_missed(size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
    if crate::debugmode::decide() != crate::debugmode::DebugFlags::NONE {
        return crate::debugmode::alloc(size, align, flags, alloc_plain);
    }
    alloc_plain(size, align, flags)
}

/// [`alloc_slow`] without debug mode: a size-class item through its zone,
/// or pages.
pub(crate) fn alloc_plain(size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
    let k = kernel()?;
    ensure_published();
    crate::prof::poll_start();
    if crate::prof::on() {
        return crate::prof::alloc(k, size, align, flags);
    }
    match class_of(size, align) {
        Some(c) => class_alloc(k, c, flags),
        None => large_alloc(k, size, align, flags),
    }
}

/// [`publish`] unless done: one load.
#[inline(always)]
pub(crate) fn ensure_published() {
    #[cfg(not(any(loom, feature = "invariants")))]
    if !PUBLISHED.load(Ordering::Relaxed) {
        publish();
    }
}

#[cfg(all(test, not(any(loom, feature = "invariants"))))]
mod tests {
    use super::*;

    /// The check against `%` and `/` at every offset of a slab, for every
    /// class, with the geometry of the built kernel and of a few others
    /// (full slabs, slabs with a header's worth of items missing).
    #[test]
    fn the_item_check_accepts_item_starts_and_nothing_else() {
        let k = kernel().expect("kernel");
        for (c, &size) in CLASS_SIZES.iter().enumerate() {
            crate::kernel::class_zone(k, c).expect("class zone");
            let built = crate::kernel::class_geometry(c);
            let mut geometries = vec![built];
            for slab in [size.next_power_of_two(), 1 << 16, 1 << 17] {
                if slab >= size {
                    geometries.push((slab, slab / size));
                    geometries.push((slab, slab / size - 1));
                }
            }
            for (slab, ipers) in geometries {
                let limit = check_limit(size as u64, slab as u64, ipers as u64)
                    .unwrap_or_else(|| panic!("class {c} size {size} slab {slab}: not exact"));
                let mul = check_mul(size as u64);
                assert_eq!(
                    mul,
                    ((1u128 << 64) / size as u128 + 1) as u64,
                    "size {size}"
                );
                for off in 0..slab {
                    let want = off % size == 0 && off / size < ipers;
                    let got = (off as u64).wrapping_mul(mul) < limit;
                    assert_eq!(got, want, "class {c} size {size} slab {slab} off {off}");
                }
            }
        }
    }

    /// The binary searches find exactly the sizes a scan of the whole
    /// table finds, for every class and both halves.
    #[test]
    fn each_class_owns_one_range_of_sizes() {
        type ClassFn = fn(usize) -> Option<usize>;
        let halves: [ClassFn; 2] = [|s| class_of_small(s.max(1), 1), |s| class_of_small(s, 16)];
        for class in halves {
            let mut covered = 0;
            for c in 0..NCLASSES {
                let r = sizes_of_class(c, class);
                let scan: Vec<usize> = (0..A16).filter(|&s| class(s) == Some(c)).collect();
                assert_eq!(r.clone().collect::<Vec<_>>(), scan, "class {c}");
                covered += r.len();
            }
            assert_eq!(covered, A16, "every size of the table has a class");
        }
    }

    /// The published table holds the constants and the kernel's geometry.
    #[test]
    fn the_published_checks_are_the_kernels() {
        ensure_published();
        let k = kernel().expect("kernel");
        if crate::debugmode::on() {
            return;
        }
        for c in 0..NCLASSES {
            let z = crate::kernel::class_zone(k, c).expect("class zone");
            let (slab, ipers) = crate::kernel::class_geometry(c);
            let e = &CHECKS[c + 1];
            assert_eq!(e.mul, check_mul(CLASS_SIZES[c] as u64));
            assert_eq!(e.mask.load(Ordering::Relaxed), slab as u64 - 1);
            assert_eq!(
                Some(e.limit.load(Ordering::Relaxed)),
                check_limit(CLASS_SIZES[c] as u64, slab as u64, ipers as u64)
            );
            assert_eq!(e.slot.load(Ordering::Relaxed), z.fast_slot().to_bits());
        }
        assert_eq!(CHECKS[0].limit.load(Ordering::Relaxed), 0);
    }

    /// Where the test would not be exact, `check_limit` says so.
    #[test]
    fn the_item_check_refuses_geometries_it_cannot_decide() {
        assert_eq!(check_limit(1, 1 << 12, 4096), None);
        assert_eq!(check_limit(1 << 33, 1 << 34, 2), None);
        assert_eq!(check_limit(48, 4096, 86), None, "more items than fit");
        assert!(check_limit(48, 4096, 85).is_some());
    }
}
