//! Freed size-class slabs and the ranges the page caches give back: back
//! to their arena with their pages kept, as large blocks are, but tracked
//! by chunk instead of in the ring.

use vmem::Arena;

use super::{give_back, maintain, mark_dirty, note_before_free, now, purge_runs, DIRTY};
use crate::os::CHUNK_SIZE;
use crate::pagemeta;
use crate::sync::plain::{AtomicUsize, Ordering};

/// Bytes of slabs ever freed with their pages kept ([`free_slab`]).
pub(super) static SLABS_FREED: AtomicUsize = AtomicUsize::new(0);
/// Chunks stamped by [`free_slab`] and not yet purged (a hint: a pass
/// with none skips the walk of the chunks).
static SLAB_CHUNKS: AtomicUsize = AtomicUsize::new(0);

/// Frees a size-class slab its keg freed (a trim or a drain) to the arena
/// with its pages kept, labelled dirty, as
/// [`free_large`](super::free_large) frees a large block, so that the next
/// slab of any class, or a large block, reuses them instead of faulting
/// fresh pages in (`kernel::arena_free_slab`, which counts it out of the
/// slab bytes in use first).
///
/// Not listed in the ring: a trim frees slabs by the thousand, scattered,
/// and listed one by one they filled it, and the ring purged each one it
/// evicted, to be faulted back by the next class (a program cycling 600
/// MB through four size classes: 1.3M page faults against 0.22M). Their
/// chunk is stamped instead ([`pagemeta::note_slab_freed`], the first
/// free since the chunk's last purge), and a timeout pass purges the free
/// dirty pages of each chunk stamped longer than
/// [`DECAY_NS`](super::DECAY_NS) ago ([`purge_slab_chunks`]), whoever
/// freed them; a reclaim purges them all.
///
/// # Safety
///
/// `[addr, addr + bytes)` is a slab of the arena (whole pages, page words
/// cleared), unused from now on.
pub(crate) unsafe fn free_slab(arena: &Arena<'static>, addr: usize, bytes: usize) {
    SLABS_FREED.fetch_add(bytes, Ordering::Relaxed);
    // SAFETY: the caller's promise (a slab is a range of its arena).
    unsafe { free_cached_range(arena, arena, addr, bytes) };
}

/// Gives a page cache's range (`kernel::qcache`'s release: a trim or a
/// drain of the quantum cache or of a large class's cache) back to its
/// arena `to` with its pages kept, as [`free_slab`] gives a slab back:
/// the next import of any page cache, slab or large block takes them
/// without faulting. (Unbacked at once until 2026-12-08, a growth pass
/// could not trim the page caches: 1,000 buffers doubled in turn to 256
/// KiB, three rounds, faulted 276k pages against 152k. See `timeout`.)
/// Labelled dirty, the chunk stamped, given back to `to`; over the
/// budget, the kernel arena's purges run (those of the large classes'
/// arena too, see `purge_runs`).
///
/// # Safety
///
/// `[addr, addr + bytes)` is a range the page cache imported from `to`
/// (whole pages, head word cleared), unused from now on; `kernel` is the
/// kernel arena.
pub(crate) unsafe fn free_cached_range(
    to: &Arena<'static>,
    kernel: &Arena<'static>,
    addr: usize,
    bytes: usize,
) {
    let now = now();
    note_before_free(bytes, now);
    mark_dirty(addr, bytes);
    // Stamped before the arena has the pages: a purge that claims them
    // (the stamp just taken by a pass) must find them labelled.
    if pagemeta::note_slab_freed(addr, now) {
        SLAB_CHUNKS.fetch_add(1, Ordering::Relaxed);
    }
    give_back(to, addr, bytes);
    if DIRTY.load(Ordering::Relaxed) > super::dirty_budget() {
        // Over budget: the slabs' dirty pages go first, all of them (rare:
        // the budget follows the most memory in use lately).
        purge_slab_chunks(kernel, u64::MAX);
        maintain(kernel, now, false);
    }
}

/// Purges the free dirty pages of the chunks whose first kept slab was
/// freed at or before `cutoff` (see [`free_slab`]).
pub(super) fn purge_slab_chunks(arena: &Arena<'static>, cutoff: u64) {
    if SLAB_CHUNKS.load(Ordering::Relaxed) == 0 {
        return;
    }
    pagemeta::take_slab_stamps(cutoff, |base| {
        SLAB_CHUNKS.fetch_sub(1, Ordering::Relaxed);
        let _ = purge_runs(arena, base, CHUNK_SIZE);
    });
}

/// Drops the stamps of the chunks of a span about to be unmapped (their
/// dirty pages go with it).
pub(super) fn forget_chunks(addr: usize, size: usize) {
    if SLAB_CHUNKS.load(Ordering::Relaxed) != 0 {
        let n = pagemeta::clear_slab_stamps(addr, size);
        SLAB_CHUNKS.fetch_sub(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::PAGE_SIZE;

    /// A slab its keg frees goes back with its pages labelled dirty and
    /// its chunk stamped; a pass after the decay (here: any cutoff past
    /// the stamp) unbacks the pages that are still free and clears them.
    #[test]
    fn a_freed_slab_keeps_its_pages_until_its_chunk_is_purged() {
        let k = crate::kernel::kernel().expect("kmem");
        const SIZE: usize = 16 << 10;
        let word = pagemeta::slab_word(3);
        let flags = crate::Flags::NOWAIT;
        let addr = crate::kernel::arena_slab(k.arena, SIZE, SIZE, flags, word).expect("a slab");
        assert_eq!(pagemeta::lookup(addr), word);
        // SAFETY: the slab's pages, ours.
        unsafe { (addr as *mut u8).write_bytes(0x5a, SIZE) };
        let freed = SLABS_FREED.load(Ordering::Relaxed);
        // SAFETY: a slab of arena_slab, unused from now on.
        unsafe { crate::kernel::arena_free_slab(k.arena, addr, SIZE) };
        assert!(SLABS_FREED.load(Ordering::Relaxed) >= freed + SIZE);
        assert_eq!(
            pagemeta::lookup(addr),
            0,
            "a freed slab's words are cleared"
        );
        let pages = (0..SIZE / PAGE_SIZE).map(|i| addr + i * PAGE_SIZE);
        if !pages.clone().all(pagemeta::is_dirty) {
            // Taken again by a concurrent test already: nothing to show.
            return;
        }
        purge_slab_chunks(k.arena, u64::MAX);
        assert!(
            !pages.clone().any(pagemeta::is_dirty),
            "a purge left a freed slab's pages labelled (and resident)"
        );
    }
}
