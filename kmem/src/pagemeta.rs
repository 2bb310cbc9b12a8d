//! Page metadata: address -> owner in O(1) (FreeBSD `vtoslab`).
//!
//! Every 2 MiB chunk of the kernel arena has a [`ChunkMeta`]: one word per
//! 4 KiB page saying what the page belongs to. A two-level radix table maps
//! an address to its chunk's metadata:
//!
//! ```text
//! addr bits: 47..36 -> ROOT[4096] -> leaf (32768 entries, 256 KiB, mapped on first use)
//!            35..21 -> leaf[i]    -> ChunkMeta (512 words, 4 KiB)
//!            20..12 -> page word
//! ```
//!
//! A lookup is three dependent loads and no lock. Leaves are never freed;
//! chunk metadata is recycled through a free list when the chunk goes back
//! to the OS, so a stale lookup (a foreign pointer racing a release) never
//! reads unmapped memory. It may read zeros, the free list's link (a
//! 4 KiB-aligned address: tag bits 0, rejected like a zero word), or the
//! words of the chunk the metadata was recycled for: a pointer into freed
//! memory may be misclassified, never dereferenced.
//!
//! Page words:
//!
//! | word | meaning |
//! |---|---|
//! | `0` | nothing of ours starts here (free, interior of a large block, or not ours) |
//! | `class << 3 \| 1` | a page of a slab of malloc size class `class` |
//! | `npages << 3 \| 2` | the first page of a large block of `npages` pages |
//! | `3` | an internal page (UMA's own zones, the btag zone, boot pages) |
//! | `4` | address space without memory (`kva_alloc`) |
//! | `5` | a free page that still holds old data (see `dirty`) |
//!
//! A free page whose word is not `5` reads as zero.

use crate::sync::plain::Mutex;
use crate::sync::plain::{AtomicPtr, AtomicUsize, Ordering};
use core::ptr;

use crate::os::{CHUNK_SIZE, PAGE_SIZE};

const ROOT_SHIFT: u32 = 36;
const CHUNK_SHIFT: u32 = 21;
const PAGE_SHIFT: u32 = 12;
const ROOT_ENTRIES: usize = 1 << (48 - ROOT_SHIFT);
const LEAF_ENTRIES: usize = 1 << (ROOT_SHIFT - CHUNK_SHIFT);
const PAGES_PER_CHUNK: usize = CHUNK_SIZE / PAGE_SIZE;

/// Word tags.
pub(crate) const TAG_MASK: usize = 7;
pub(crate) const TAG_SLAB: usize = 1;
pub(crate) const TAG_LARGE: usize = 2;
pub(crate) const WORD_INTERNAL: usize = 3;
pub(crate) const WORD_KVA: usize = 4;
pub(crate) const WORD_DIRTY: usize = 5;
/// The head of a large block of at most the quantum cache's size that was
/// taken from the arena directly (over-aligned), so that its free goes
/// back there and not into the quantum cache, whose allocations never ask
/// for such blocks (they piled up there: 520 MB of address space in a
/// `posix_memalign` churn).
pub(crate) const TAG_LARGE_X: usize = 6;

/// The page words of one chunk.
#[repr(C, align(4096))]
pub(crate) struct ChunkMeta {
    pages: [AtomicUsize; PAGES_PER_CHUNK],
}

type Leaf = [AtomicPtr<ChunkMeta>; LEAF_ENTRIES];

static ROOT: [AtomicPtr<Leaf>; ROOT_ENTRIES] =
    [const { AtomicPtr::new(ptr::null_mut()) }; ROOT_ENTRIES];

/// Recycled chunk metadata (an intrusive list through the first word) and
/// the serialization of leaf creation.
struct Pool {
    free: *mut ChunkMeta,
}
// SAFETY: the list is only touched under the mutex.
unsafe impl Send for Pool {}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: ptr::null_mut(),
});
static META_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The metadata pool lock, held for a fork (see `fork`); unlocks on drop.
#[cfg(not(loom))]
pub(crate) struct PoolLock(#[allow(dead_code)] crate::sync::plain::MutexGuard<'static, Pool>);

/// Takes the metadata pool lock for a fork: the last lock of the order
/// (held only around `mmap` and the radix table's atomics).
#[cfg(not(loom))]
pub(crate) fn fork_lock_pool() -> PoolLock {
    PoolLock(POOL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Bytes mapped for page metadata (leaves and chunk pages).
pub(crate) fn meta_bytes() -> usize {
    META_BYTES.load(Ordering::Relaxed)
}

fn map_meta(bytes: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    META_BYTES.fetch_add(bytes, Ordering::Relaxed);
    p.cast()
}

#[inline]
fn split(addr: usize) -> Option<(usize, usize, usize)> {
    if addr >> 48 != 0 {
        return None;
    }
    Some((
        addr >> ROOT_SHIFT,
        (addr >> CHUNK_SHIFT) & (LEAF_ENTRIES - 1),
        (addr >> PAGE_SHIFT) & (PAGES_PER_CHUNK - 1),
    ))
}

/// Makes `[base, base + size)` (whole chunks) known to the table, with all
/// page words 0. Returns false if metadata memory could not be mapped (the
/// caller then gives the chunks back).
pub(crate) fn register(base: usize, size: usize) -> bool {
    debug_assert!(base % CHUNK_SIZE == 0 && size % CHUNK_SIZE == 0);
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let mut chunk = base;
    while chunk < base + size {
        let Some((r, l, _)) = split(chunk) else {
            drop(pool);
            unregister(base, chunk - base);
            return false;
        };
        let mut leaf = ROOT[r].load(Ordering::Acquire);
        if leaf.is_null() {
            leaf = map_meta(core::mem::size_of::<Leaf>()).cast();
            if leaf.is_null() {
                drop(pool);
                unregister(base, chunk - base);
                return false;
            }
            ROOT[r].store(leaf, Ordering::Release);
        }
        let meta = if pool.free.is_null() {
            map_meta(core::mem::size_of::<ChunkMeta>()).cast::<ChunkMeta>()
        } else {
            let m = pool.free;
            // SAFETY: pool entries are ChunkMeta pages we own; the first word
            // links the list.
            pool.free = unsafe { (*m).pages[0].swap(0, Ordering::Relaxed) } as *mut ChunkMeta;
            m
        };
        if meta.is_null() {
            drop(pool);
            unregister(base, chunk - base);
            return false;
        }
        // SAFETY: leaves are never freed; index in range by `split`.
        unsafe { (*leaf)[l].store(meta, Ordering::Release) };
        chunk += CHUNK_SIZE;
    }
    true
}

/// Forgets `[base, base + size)` (whole chunks) and recycles their
/// metadata, zeroed.
pub(crate) fn unregister(base: usize, size: usize) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let mut chunk = base;
    while chunk < base + size {
        if let Some((r, l, _)) = split(chunk) {
            let leaf = ROOT[r].load(Ordering::Acquire);
            if !leaf.is_null() {
                // SAFETY: as in `register`.
                let meta = unsafe { (*leaf)[l].swap(ptr::null_mut(), Ordering::AcqRel) };
                if !meta.is_null() {
                    // SAFETY: our metadata page, no longer reachable.
                    unsafe {
                        for w in (*meta).pages.iter() {
                            w.store(0, Ordering::Relaxed);
                        }
                        (*meta).pages[0].store(pool.free as usize, Ordering::Relaxed);
                    }
                    pool.free = meta;
                }
            }
        }
        chunk += CHUNK_SIZE;
    }
}

#[inline]
fn word_ref(addr: usize) -> Option<&'static AtomicUsize> {
    let (r, l, p) = split(addr)?;
    let leaf = ROOT[r].load(Ordering::Acquire);
    if leaf.is_null() {
        return None;
    }
    // SAFETY: leaves are never freed; indices in range by `split`.
    let meta = unsafe { (*leaf)[l].load(Ordering::Acquire) };
    if meta.is_null() {
        return None;
    }
    // SAFETY: metadata pages are never unmapped (recycled only).
    Some(unsafe { &(*meta).pages[p] })
}

/// The page word for `addr`: 0 if the page is not ours or nothing of ours
/// starts there.
#[inline]
pub(crate) fn lookup(addr: usize) -> usize {
    word_ref(addr).map_or(0, |w| w.load(Ordering::Acquire))
}

/// Whether `addr` lies in a chunk of the kernel arena.
pub(crate) fn is_ours(addr: usize) -> bool {
    word_ref(addr).is_some()
}

/// Sets the words of `npages` pages from `addr` to `word`.
pub(crate) fn set(addr: usize, npages: usize, word: usize) {
    replace(addr, npages, word, |_| {});
}

/// Sets the words of `npages` pages from `addr` to `word`, calling
/// `on_dirty(page)` for each page whose word was [`WORD_DIRTY`]. Walks the
/// radix table once per chunk, not once per page.
///
/// Every caller owns the pages it labels (just allocated from the arena,
/// claimed in it, about to be freed to it, or out of it for good), so no
/// other thread writes these words meanwhile, only reads them: a load and
/// a release store do what a swap would, without a locked instruction per
/// page (a 1 MiB block has 256).
pub(crate) fn replace(addr: usize, npages: usize, word: usize, mut on_dirty: impl FnMut(usize)) {
    let mut page = addr;
    let end = addr.saturating_add(npages * PAGE_SIZE);
    while page < end {
        let chunk_end = (page & !(CHUNK_SIZE - 1))
            .saturating_add(CHUNK_SIZE)
            .min(end);
        if let Some(first) = word_ref(page) {
            let n = (chunk_end - page) / PAGE_SIZE;
            // SAFETY: the words of one chunk are contiguous, and `n` pages
            // from `page` stay inside its chunk.
            let words = unsafe { core::slice::from_raw_parts(first as *const AtomicUsize, n) };
            for (i, w) in words.iter().enumerate() {
                // Most words already hold `word` on the quantum-cache path:
                // a load, no store.
                let old = w.load(Ordering::Acquire);
                if old != word {
                    w.store(word, Ordering::Release);
                    if old == WORD_DIRTY {
                        on_dirty(page + i * PAGE_SIZE);
                    }
                }
            }
        }
        page = chunk_end;
    }
}

/// Calls `f(start, len)` for each maximal run of [`WORD_DIRTY`] pages in
/// `[addr, addr + npages pages)` (a snapshot: words may change meanwhile).
pub(crate) fn dirty_runs(addr: usize, npages: usize, mut f: impl FnMut(usize, usize)) {
    let mut run: Option<(usize, usize)> = None;
    for i in 0..npages {
        let page = addr + i * PAGE_SIZE;
        if lookup(page) == WORD_DIRTY {
            run = match run {
                Some((s, l)) => Some((s, l + PAGE_SIZE)),
                None => Some((page, PAGE_SIZE)),
            };
        } else if let Some((s, l)) = run.take() {
            f(s, l);
        }
    }
    if let Some((s, l)) = run {
        f(s, l);
    }
}

/// Calls `f(base)` for every chunk known to the table (a snapshot: chunks
/// may come and go meanwhile). Walks every leaf: for reclaims, not for
/// hot paths.
pub(crate) fn for_each_chunk(mut f: impl FnMut(usize)) {
    for (r, root) in ROOT.iter().enumerate() {
        let leaf = root.load(Ordering::Acquire);
        if leaf.is_null() {
            continue;
        }
        // SAFETY: leaves are never freed.
        for (l, meta) in unsafe { (*leaf).iter() }.enumerate() {
            if !meta.load(Ordering::Acquire).is_null() {
                f((r << ROOT_SHIFT) | (l << CHUNK_SHIFT));
            }
        }
    }
}

/// A slab page word for `class`.
#[inline]
pub(crate) const fn slab_word(class: usize) -> usize {
    (class << 3) | TAG_SLAB
}

/// A large-block head word for `npages`.
#[inline]
pub(crate) const fn large_word(npages: usize) -> usize {
    (npages << 3) | TAG_LARGE
}

/// A large-block head word for `npages` taken from the arena directly
/// ([`TAG_LARGE_X`]).
#[inline]
pub(crate) const fn large_word_x(npages: usize) -> usize {
    (npages << 3) | TAG_LARGE_X
}

/// Whether `word` is the head of a large block (either kind).
#[inline]
pub(crate) const fn is_large(word: usize) -> bool {
    matches!(word & TAG_MASK, TAG_LARGE | TAG_LARGE_X)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lookup_unregister() {
        let base = crate::os::map_chunks(2 * CHUNK_SIZE).unwrap();
        assert!(!is_ours(base));
        assert!(register(base, 2 * CHUNK_SIZE));
        assert!(is_ours(base + CHUNK_SIZE + 5));
        assert_eq!(lookup(base + 3 * PAGE_SIZE), 0);
        set(base + CHUNK_SIZE - PAGE_SIZE, 2, slab_word(7));
        assert_eq!(lookup(base + CHUNK_SIZE - 1), slab_word(7));
        assert_eq!(lookup(base + CHUNK_SIZE + 100), slab_word(7));
        assert_eq!(lookup(base + CHUNK_SIZE + PAGE_SIZE), 0);
        unregister(base, 2 * CHUNK_SIZE);
        assert!(!is_ours(base));
        assert_eq!(lookup(base + CHUNK_SIZE), 0);
        // Recycled metadata comes back zeroed.
        assert!(register(base, CHUNK_SIZE));
        assert_eq!(lookup(base + CHUNK_SIZE - PAGE_SIZE), 0);
        unregister(base, CHUNK_SIZE);
        // SAFETY: mapped above, unused.
        unsafe { crate::os::unmap(base, 2 * CHUNK_SIZE) };
    }

    #[test]
    fn foreign_addresses_are_not_ours() {
        let x = 5u64;
        assert!(!is_ours(&x as *const u64 as usize));
        assert_eq!(lookup(usize::MAX), 0);
        assert_eq!(lookup(0), 0);
    }
}
