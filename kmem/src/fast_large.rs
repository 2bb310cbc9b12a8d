//! The fast road of large blocks of up to 256 KiB: more than 32 KiB and at
//! most 64 KiB (the quantum cache's sizes), a thread's own cache of the
//! kernel arena's quantum-cache zone of the block's page count; above that,
//! of the cache zone of its large class (`classes::large_pages`; both in
//! `kernel::qcache`), taken and filled without the front doors' slow
//! roads. The front doors call it after their small-block fast paths
//! missed (`Kmem`'s `alloc_miss` and `dealloc_miss`, the C ABI's
//! `alloc_miss` and `free_slow`).

use core::ptr::NonNull;

use crate::fast::TlsAccess;
#[cfg(not(any(loom, feature = "invariants")))]
use crate::{
    classes::{
        large_class, large_class_exact, LARGE_CLASS_MAX, LARGE_CLASS_PAGES, MAX_CLASS_SIZE, NLARGE,
    },
    kernel::QCACHE_PAGES,
    os::PAGE_SIZE,
    pagemeta::{self, TAG_LARGE, TAG_MASK},
    sync::plain::{AtomicU32, Ordering},
};
#[cfg(not(any(loom, feature = "invariants")))]
use uma::FastSlot;

/// `QC_SLOTS[n]`: the cache slot of the kernel quantum cache's zone of
/// `n`-page ranges (`NONE` until published): large blocks of 32 KiB to
/// 64 KiB on the fast road ([`alloc_large`], [`free_large`]).
#[cfg(not(any(loom, feature = "invariants")))]
static QC_SLOTS: [AtomicU32; QCACHE_PAGES + 1] =
    [const { AtomicU32::new(FastSlot::NONE.to_bits()) }; QCACHE_PAGES + 1];

/// `LC_SLOTS[c]`: the cache slot of large class `c`'s cache zone (`NONE`
/// until published): large blocks of 64 KiB to 256 KiB on the fast road.
#[cfg(not(any(loom, feature = "invariants")))]
static LC_SLOTS: [AtomicU32; NLARGE] = [const { AtomicU32::new(FastSlot::NONE.to_bits()) }; NLARGE];

/// Fills [`QC_SLOTS`] and [`LC_SLOTS`] from the built kernel (with the
/// small-block tables, `fast::publish`).
#[cfg(not(any(loom, feature = "invariants")))]
pub(crate) fn publish() {
    for (n, e) in QC_SLOTS.iter().enumerate().skip(1) {
        if let Some(z) = crate::kernel::QCACHE.zone(n) {
            e.store(z.fast_slot().to_bits(), Ordering::Relaxed);
        }
    }
    for (c, e) in LC_SLOTS.iter().enumerate() {
        if let Some(z) = crate::kernel::lcache_zone(c) {
            e.store(z.fast_slot().to_bits(), Ordering::Relaxed);
        }
    }
}

/// The page count and cache slot of a large block of `n` pages: its
/// quantum-cache zone's up to 16 pages, its large class's above (`exact`:
/// only a block of exactly the class's pages, for a free).
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
fn slot_of(n: usize, exact: bool) -> Option<(usize, &'static AtomicU32)> {
    if n <= QCACHE_PAGES {
        // SAFETY: n <= QCACHE_PAGES.
        return Some((n, unsafe { QC_SLOTS.get_unchecked(n) }));
    }
    let c = if exact {
        large_class_exact(n)?
    } else {
        large_class(n)?
    };
    // SAFETY: a large class is below NLARGE.
    Some((LARGE_CLASS_PAGES[c], unsafe { LC_SLOTS.get_unchecked(c) }))
}

/// A large block of more than 32 KiB and at most 256 KiB, aligned to at
/// most a page, from the calling thread's cache of the quantum-cache zone
/// of its page count (up to 64 KiB) or of its large class's cache zone:
/// the pages a recent free of that size left. Labelled as [`large_alloc`]
/// does, without the front door's slow road (recursion guard, profiler,
/// class lookup, the arena's quantum-cache dispatch and the dirty labels,
/// which cached ranges do not have): a pair of 40 KiB `malloc` + `free`
/// cost about 1,050 instructions that way, one of 100 KB 2,738 (through
/// the arena's boundary tags and the dirty lists). No shared counter
/// either: the zone charged the range when it imported it (the limit
/// binds there) and counts its items itself. `None` (the slow road then)
/// on a miss, for any other request, while profiling and in debug mode.
#[inline(never)]
pub(crate) fn alloc_large<A: TlsAccess>(size: usize, align: usize) -> Option<NonNull<u8>> {
    #[cfg(not(any(loom, feature = "invariants")))]
    {
        if size <= MAX_CLASS_SIZE
            || size > LARGE_CLASS_MAX
            || align > PAGE_SIZE
            || crate::prof::on()
            || crate::debugmode::on()
        {
            return None;
        }
        let (n, slot) = slot_of(size.div_ceil(PAGE_SIZE), false)?;
        // SAFETY: the tables hold only `to_bits` of the page-cache zones'
        // slots (never destroyed).
        let p = unsafe {
            let slot = FastSlot::from_bits(slot.load(Ordering::Relaxed));
            slot.alloc_via::<A>().or_else(|| slot.alloc_swap_via::<A>())
        }?;
        // Charged and counted already (see `large_alloc`).
        pagemeta::set_head(p.as_ptr() as usize, pagemeta::large_word(n));
        Some(p)
    }
    #[cfg(any(loom, feature = "invariants"))]
    {
        let _ = core::marker::PhantomData::<A>;
        let _ = (size, align);
        None
    }
}

/// `free(ptr)` of a large block that [`alloc_large`] or `large_alloc`
/// took from a page cache: into the calling thread's cache of its zone,
/// where the slow road's free would put it, after claiming its head word
/// (one atomic step that labels it cached, so that a second free of the
/// block, even a racing one, finds that label and the slow road reports a
/// double free). False, with nothing done, for anything else (not a page
/// start, no such head word, over aligned, larger), when the cache has no
/// room, while the profiler may hold samples, and in debug mode.
///
/// # Safety
///
/// If `ptr` is a live kmem allocation, nothing uses it afterwards.
#[inline(never)]
pub(crate) unsafe fn free_large<A: TlsAccess>(ptr: *mut u8) -> bool {
    #[cfg(not(any(loom, feature = "invariants")))]
    {
        let addr = ptr as usize;
        if addr % PAGE_SIZE != 0 || crate::prof::tracking() || crate::debugmode::on() {
            return false;
        }
        let word = pagemeta::lookup(addr);
        if word & TAG_MASK != TAG_LARGE {
            return false;
        }
        let Some((_, slot)) = slot_of(word >> 3, true) else {
            return false;
        };
        if !pagemeta::claim(addr, word, pagemeta::cached_word(word >> 3)) {
            return false;
        }
        // SAFETY: the slot is of the zone of ranges of the block's pages,
        // and the block, a range of the arena that its owner gives up, is
        // an item of that zone (as `large_free` gives it to the arena's
        // quantum cache or its class's cache zone).
        let pushed = unsafe {
            FastSlot::from_bits(slot.load(Ordering::Relaxed))
                .free_via::<A>(NonNull::new_unchecked(ptr))
        };
        if !pushed {
            // No room: the head back, and the slow road frees it.
            pagemeta::set_head(addr, word);
        }
        pushed
    }
    #[cfg(any(loom, feature = "invariants"))]
    {
        let _ = core::marker::PhantomData::<A>;
        let _ = ptr;
        false
    }
}
