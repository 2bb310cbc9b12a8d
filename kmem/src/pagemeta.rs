//! Page metadata: address -> owner in O(1) (FreeBSD `vtoslab`).
//!
//! One word per 4 KiB page says what the page belongs to. A one-level
//! radix table of leaves maps an address to its page word:
//!
//! ```text
//! addr bits: 47..32 -> ROOT[65536] -> leaf (2^20 words, 8 MiB of address space, mapped on first use)
//!            31..12 -> page word
//! ```
//!
//! A lookup is two dependent loads and no lock (`free(p)`'s fast path
//! makes one per call). Leaves are reserved whole (`MAP_NORESERVE`, no
//! huge pages) and touched only where chunks of the kernel arena live: the
//! 512 words of a 2 MiB chunk are exactly one 4 KiB page of its leaf, so
//! the table costs 4 KiB of memory per chunk in use, and a chunk that goes
//! back to the OS gives its page of words back too (`MADV_DONTNEED`).
//! Leaves are never unmapped, so a stale lookup (a foreign pointer racing
//! a release) never reads unmapped memory: it reads the words as they are,
//! zeros after a release. A pointer into freed memory may be
//! misclassified, never dereferenced.
//!
//! Which chunks belong to the kernel arena is a bit per chunk in its leaf
//! ([`is_ours`]), beside the words; which free pages still hold old data
//! (see `dirty`) is a bit per page, in the leaf too ([`is_dirty`]), so
//! that labelling a large block's pages dirty or clean is an atomic
//! operation per 64 pages, not a word per page (the words of a large
//! block's pages are not touched at all, but for its head).
//!
//! Page words:
//!
//! | word | meaning |
//! |---|---|
//! | `0` | nothing of ours starts here (free, interior of a large block, or not ours) |
//! | `(class + 1) << 6` (tag bits 0) | a page of a slab of malloc size class `class` |
//! | `npages << 3 \| 2` | the first page of a large block of `npages` pages |
//! | `3` | an internal page (UMA's own zones, the btag zone, boot pages) |
//! | `4` | address space without memory (`kva_alloc`) |
//! | `npages << 3 \| 6` | as `2`, taken from the arena directly ([`TAG_LARGE_X`]) |
//! | `npages << 3 \| 5` | the first page of a freed large block of `npages` pages in a page cache ([`TAG_CACHED`]) |
//!
//! A slab word's tag bits are 0, as a zero word's: `free(p)` tells a slab
//! page by one test of the tag bits, and finds its class's check entry at
//! `word` bytes past the entry before class 0 (whose check fails, so a
//! zero word needs no test of its own; see `fast`). Every free page of the
//! kernel arena has word 0; it reads as zero unless its dirty bit is set.

use crate::sync::plain::Mutex;
use crate::sync::plain::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use core::ptr;

use crate::os::{CHUNK_SIZE, PAGE_SIZE};

const ROOT_SHIFT: u32 = 32;
const CHUNK_SHIFT: u32 = 21;
const PAGE_SHIFT: u32 = 12;
const ROOT_ENTRIES: usize = 1 << (48 - ROOT_SHIFT);
const LEAF_WORDS: usize = 1 << (ROOT_SHIFT - PAGE_SHIFT);
const LEAF_CHUNKS: usize = 1 << (ROOT_SHIFT - CHUNK_SHIFT);
const PAGES_PER_CHUNK: usize = CHUNK_SIZE / PAGE_SIZE;

/// Word tags.
pub(crate) const TAG_MASK: usize = 7;
/// The tag of a slab word (see the table above): its class is in the bits
/// above [`SLAB_SHIFT`], plus one.
pub(crate) const TAG_SLAB: usize = 0;
/// Where a slab word's class (plus one) starts.
pub(crate) const SLAB_SHIFT: u32 = 6;
pub(crate) const TAG_LARGE: usize = 2;
pub(crate) const WORD_INTERNAL: usize = 3;
pub(crate) const WORD_KVA: usize = 4;
/// The head of a large block of at most a page cache's size (the quantum
/// cache's or a large class's, 256 KiB) that was taken from the arena
/// directly (over-aligned, zero-filled, placed by `realloc`, resized in
/// place), so that its free goes back there and not into a page cache:
/// the caches hold only the ranges they imported. A large class's cache
/// gives its ranges back to the large classes' arena, not to the kernel
/// arena (`kernel::qcache`): a kernel-arena block in it would be lost.
/// Over-aligned blocks piled up in the quantum cache, whose allocations
/// never ask for such blocks (520 MB of address space in a
/// `posix_memalign` churn).
pub(crate) const TAG_LARGE_X: usize = 6;
/// The head of a large block freed into a page cache (the quantum cache
/// or a large class's cache zone), where it waits, still a range taken
/// from the arena, for the next request of its size: a second free of
/// the block finds this word and is reported as a double free. Its
/// handout writes the live head over it; a cache's release to the arena
/// clears it.
pub(crate) const TAG_CACHED: usize = 5;

/// The words of 4 GiB of address space, which of its chunks are the
/// kernel arena's, and which of its pages are dirty.
#[repr(C)]
struct Leaf {
    words: [AtomicUsize; LEAF_WORDS],
    chunks: [AtomicU64; LEAF_CHUNKS / 64],
    /// A bit per page: a free page that still holds old data (see
    /// `dirty`). A chunk's 512 bits are 64 bytes of their own.
    dirty: [AtomicU64; LEAF_WORDS / 64],
    /// A word per chunk: when a slab of it was first freed with its pages
    /// kept (`dirty::free_slab`) since its last purge; 0: none.
    slabs_freed: [AtomicU64; LEAF_CHUNKS],
}

static ROOT: [AtomicPtr<Leaf>; ROOT_ENTRIES] =
    [const { AtomicPtr::new(ptr::null_mut()) }; ROOT_ENTRIES];

/// The lowest and highest root entries with a leaf (leaves are never
/// unmapped, so the range only widens): [`for_each_chunk`] walks these,
/// not the 65,536 entries (half a million instructions a walk, and a
/// timeout pass makes one).
static ROOT_LO: AtomicUsize = AtomicUsize::new(usize::MAX);
static ROOT_HI: AtomicUsize = AtomicUsize::new(0);

/// Serializes leaf creation and chunk (un)registration.
static POOL: Mutex<()> = Mutex::new(());
/// Leaves mapped (their address space is reserved, not their memory).
static LEAVES: AtomicUsize = AtomicUsize::new(0);
/// Leaf reservations the OS refused (see [`refused_leaves`]).
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// Chunks registered: each has a page of words in use.
static CHUNKS: AtomicUsize = AtomicUsize::new(0);

/// The metadata lock, held for a fork (see `fork`); unlocks on drop.
#[cfg(not(loom))]
pub(crate) struct PoolLock(#[allow(dead_code)] crate::sync::plain::MutexGuard<'static, ()>);

/// Takes the metadata lock for a fork: the last lock of the order (held
/// only around `mmap`, `madvise` and the radix table's atomics).
#[cfg(not(loom))]
pub(crate) fn fork_lock_pool() -> PoolLock {
    PoolLock(POOL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Bytes of memory the page metadata holds: a page of words, 64 bytes of
/// dirty bits and a slab stamp per registered chunk, and each leaf's chunk
/// bits (the leaves' untouched address space is not counted; the root is
/// in `.bss`, touched where leaves are).
pub(crate) fn meta_bytes() -> usize {
    CHUNKS.load(Ordering::Relaxed) * (PAGE_SIZE + PAGES_PER_CHUNK / 8 + 8)
        + LEAVES.load(Ordering::Relaxed) * PAGE_SIZE
}

/// Address space the leaves reserve (their memory is what
/// [`meta_bytes`] counts): about 8 MiB per 4 GiB of address space kmem has
/// touched. It counts against `RLIMIT_AS` (`ulimit -v`), which is why
/// [`crate::OsStats`] reports it.
pub(crate) fn reserved_bytes() -> usize {
    LEAVES.load(Ordering::Relaxed) * core::mem::size_of::<Leaf>()
}

/// Leaf reservations the OS refused so far (under `RLIMIT_AS`): each
/// time, the chunks just mapped lay in 4 GiB of address space without a
/// leaf, and went back. While that lasts, the arena can use no address
/// space the kernel hands out there: the leaf's 8 MiB come first.
pub(crate) fn refused_leaves() -> usize {
    REFUSED.load(Ordering::Relaxed)
}

/// Reserves a leaf: address space only, its pages zero until written.
fn map_leaf() -> *mut Leaf {
    let bytes = core::mem::size_of::<Leaf>();
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        return ptr::null_mut();
    }
    // A huge page would make a chunk's 4 KiB of words cost 2 MiB. (Advice:
    // its failure changes nothing we rely on.)
    // SAFETY: our own fresh mapping.
    let _ = unsafe { libc::madvise(p, bytes, libc::MADV_NOHUGEPAGE) };
    LEAVES.fetch_add(1, Ordering::Relaxed);
    p.cast()
}

/// The root index and the word index in its leaf, for a user-space
/// address.
#[inline(always)]
fn split(addr: usize) -> Option<(usize, usize)> {
    let r = addr >> ROOT_SHIFT;
    if r >= ROOT_ENTRIES {
        return None;
    }
    Some((r, (addr >> PAGE_SHIFT) & (LEAF_WORDS - 1)))
}

/// The leaf of a user-space address, if it has one, and the address's
/// page index in it.
#[inline(always)]
fn leaf_of(addr: usize) -> Option<(&'static Leaf, usize)> {
    let (r, i) = split(addr)?;
    let leaf = ROOT[r].load(Ordering::Acquire);
    // SAFETY: a non-null root entry points to a leaf that is never
    // unmapped, and a leaf is atomics only: shared references are fine.
    (!leaf.is_null()).then(|| (unsafe { &*leaf }, i))
}

/// The chunk's bit in its leaf: (word, mask).
#[inline]
fn chunk_bit(addr: usize) -> (usize, u64) {
    let c = (addr >> CHUNK_SHIFT) & (LEAF_CHUNKS - 1);
    (c / 64, 1u64 << (c % 64))
}

/// Makes `[base, base + size)` (whole chunks) known to the table, with all
/// page words 0. Returns false if a leaf could not be mapped (the caller
/// then gives the chunks back).
pub(crate) fn register(base: usize, size: usize) -> bool {
    debug_assert!(base % CHUNK_SIZE == 0 && size % CHUNK_SIZE == 0);
    let pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let mut chunk = base;
    while chunk < base + size {
        let Some((r, _)) = split(chunk) else {
            drop(pool);
            unregister(base, chunk - base);
            return false;
        };
        let mut leaf = ROOT[r].load(Ordering::Acquire);
        if leaf.is_null() {
            leaf = map_leaf();
            if leaf.is_null() {
                drop(pool);
                unregister(base, chunk - base);
                return false;
            }
            ROOT[r].store(leaf, Ordering::Release);
            // Before the chunk bit below: a walk that finds the bit finds
            // the leaf in its range.
            ROOT_LO.fetch_min(r, Ordering::Release);
            ROOT_HI.fetch_max(r, Ordering::Release);
        }
        let (w, bit) = chunk_bit(chunk);
        // SAFETY: leaves are never unmapped; `w` in range by `chunk_bit`.
        let old = unsafe { (*leaf).chunks[w].fetch_or(bit, Ordering::AcqRel) };
        if old & bit == 0 {
            CHUNKS.fetch_add(1, Ordering::Relaxed);
        }
        chunk += CHUNK_SIZE;
    }
    true
}

/// Forgets `[base, base + size)` (whole chunks): their words read zero
/// from now on, and their pages of words go back to the OS.
pub(crate) fn unregister(base: usize, size: usize) {
    let _pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let mut chunk = base;
    while chunk < base + size {
        if let Some((r, i)) = split(chunk) {
            let leaf = ROOT[r].load(Ordering::Acquire);
            if !leaf.is_null() {
                let (w, bit) = chunk_bit(chunk);
                // SAFETY: leaves are never unmapped; indices in range.
                let old = unsafe { (*leaf).chunks[w].fetch_and(!bit, Ordering::AcqRel) };
                if old & bit != 0 {
                    CHUNKS.fetch_sub(1, Ordering::Relaxed);
                    // Its dirty bits are clear (`dirty::unmap_span` cleans
                    // a span before it goes); cleared all the same, so
                    // that a chunk registered here again starts clean.
                    for k in 0..PAGES_PER_CHUNK / 64 {
                        // SAFETY: leaves are never unmapped; the chunk's
                        // bits are 8 words from `i / 64` (`i` is a
                        // multiple of 512).
                        unsafe { (*leaf).dirty[i / 64 + k].store(0, Ordering::Relaxed) };
                    }
                    // SAFETY: the chunk's 512 words: one page of the leaf
                    // (a chunk-aligned address's first word index is a
                    // multiple of 512, and leaves are page-aligned),
                    // written by nobody once the chunk is going back.
                    unsafe {
                        let words = (*leaf).words.as_ptr().add(i);
                        if libc::madvise(words as *mut libc::c_void, PAGE_SIZE, libc::MADV_DONTNEED)
                            != 0
                        {
                            for k in 0..PAGES_PER_CHUNK {
                                (*words.add(k)).store(0, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        }
        chunk += CHUNK_SIZE;
    }
}

#[inline(always)]
fn word_ref(addr: usize) -> Option<&'static AtomicUsize> {
    leaf_of(addr).map(|(leaf, i)| &leaf.words[i])
}

/// Sets the word of the one page at `addr` (a large block's head), as
/// `set(addr, 1, word)` does, without its loop over chunks.
#[inline]
pub(crate) fn set_head(addr: usize, word: usize) {
    if let Some(w) = word_ref(addr) {
        w.store(word, Ordering::Release);
    }
}

/// Replaces the page word of `addr` with `new` if it is `word`, in one
/// atomic step: true if this call did. A large block's free on the fast
/// road claims its head so (`new` its [`cached_word`]), and a second free
/// of the block, even one racing it, finds the new word (and the slow
/// road reports it).
#[cfg(not(any(loom, feature = "invariants")))]
#[inline]
pub(crate) fn claim(addr: usize, word: usize, new: usize) -> bool {
    word_ref(addr).is_some_and(|w| {
        w.compare_exchange(word, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

/// The page word for `addr`: 0 if the page is not ours or nothing of ours
/// starts there.
#[inline(always)]
pub(crate) fn lookup(addr: usize) -> usize {
    word_ref(addr).map_or(0, |w| w.load(Ordering::Acquire))
}

/// [`lookup`] for the fast free, whose next step reads the block: the root
/// index is bits 32..47 of `addr`, whatever bits 48..63 hold (two
/// instructions fewer than [`lookup`]'s range check). No kmem block has
/// any of those bits set, so an address with one set gets the word of
/// another page, at worst of one of ours. Then the caller's first access
/// to the address itself, a read, faults: with 4-level paging no such
/// address is canonical (it is also none of ours with 5-level paging,
/// where Linux maps above 2^47 only on request). Everything but the fast
/// free uses [`lookup`].
#[cfg(not(any(loom, feature = "invariants")))]
#[inline(always)]
pub(crate) fn lookup_fast(addr: usize) -> usize {
    let r = (addr >> ROOT_SHIFT) & (ROOT_ENTRIES - 1);
    // SAFETY: `r` is masked into the root.
    let leaf =
        unsafe { (*static_addr!(ROOT).cast::<AtomicPtr<Leaf>>().add(r)).load(Ordering::Acquire) };
    if leaf.is_null() {
        return 0;
    }
    // SAFETY: leaves are never unmapped; the index is masked to the leaf.
    unsafe { (*leaf).words[(addr >> PAGE_SHIFT) & (LEAF_WORDS - 1)].load(Ordering::Acquire) }
}

/// Whether `addr` lies in a chunk of the kernel arena.
pub(crate) fn is_ours(addr: usize) -> bool {
    leaf_of(addr).is_some_and(|(leaf, _)| {
        let (w, bit) = chunk_bit(addr);
        leaf.chunks[w].load(Ordering::Acquire) & bit != 0
    })
}

/// Sets the words of `npages` pages from `addr` to `word`. Walks the
/// radix table once per chunk, not once per page.
///
/// Every caller owns the pages it labels (just allocated from the arena,
/// about to be freed to it, or out of it for good), so no other thread
/// writes these words meanwhile, only reads them: a release store does.
/// Words that already hold `word` are only read.
pub(crate) fn set(addr: usize, npages: usize, word: usize) {
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
            for w in words {
                if w.load(Ordering::Acquire) != word {
                    w.store(word, Ordering::Release);
                }
            }
        }
        page = chunk_end;
    }
}

// ---------------------------------------------------------------- dirty bits

/// A mask of bits `lo..hi` (`lo < hi <= 64`).
#[inline(always)]
fn bits(lo: usize, hi: usize) -> u64 {
    (u64::MAX >> (64 - (hi - lo))) << lo
}

/// Calls `f(word, mask, base)` for each 64-bit word of dirty bits that
/// pages of `[addr, addr + npages pages)` have bits in, in address order:
/// `mask` selects the range's bits, `base` is the page of bit 0. Pages
/// without a leaf have no bits (they are no arena's).
#[inline(always)]
fn dirty_words(addr: usize, npages: usize, mut f: impl FnMut(&AtomicU64, u64, usize)) {
    let mut page = addr & !(PAGE_SIZE - 1);
    let end = addr.saturating_add(npages * PAGE_SIZE);
    while page < end {
        let Some((r, first)) = split(page) else {
            return;
        };
        let leaf_end = (r + 1) << ROOT_SHIFT;
        let stop = end.min(leaf_end);
        let leaf = ROOT[r].load(Ordering::Acquire);
        if !leaf.is_null() {
            let last = first + (stop - page) / PAGE_SIZE;
            let mut i = first;
            while i < last {
                let w = i / 64;
                let hi = last.min((w + 1) * 64) - w * 64;
                // SAFETY: leaves are never unmapped; `w < LEAF_WORDS / 64`
                // since `i < last <= LEAF_WORDS`.
                let word = unsafe { &(*leaf).dirty[w] };
                f(
                    word,
                    bits(i % 64, hi),
                    (r << ROOT_SHIFT) | ((w * 64) << PAGE_SHIFT),
                );
                i = w * 64 + hi;
            }
        }
        page = stop;
    }
}

/// Whether the page of `addr` is dirty (a free page holding old data).
pub(crate) fn is_dirty(addr: usize) -> bool {
    leaf_of(addr)
        .is_some_and(|(leaf, i)| leaf.dirty[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0)
}

/// Marks `npages` pages from `addr` dirty; returns how many were not yet.
/// (Other threads own the other pages of a word: one atomic OR a word.)
pub(crate) fn mark_dirty(addr: usize, npages: usize) -> usize {
    let mut n = 0;
    dirty_words(addr, npages, |w, mask, _| {
        n += (mask & !w.fetch_or(mask, Ordering::AcqRel)).count_ones() as usize;
    });
    n
}

/// Marks `npages` pages from `addr` clean; returns how many were dirty.
/// Words with none of the range's bits set are only read.
pub(crate) fn clean(addr: usize, npages: usize) -> usize {
    let mut n = 0;
    dirty_words(addr, npages, |w, mask, _| {
        if w.load(Ordering::Acquire) & mask != 0 {
            n += (mask & w.fetch_and(!mask, Ordering::AcqRel)).count_ones() as usize;
        }
    });
    n
}

/// Calls `f(start, len)` for each maximal run of dirty pages in `[addr,
/// addr + npages pages)`, in address order, and, with `take`, marks them
/// clean first (each run is then the caller's to clear); without, a
/// snapshot (bits may change meanwhile).
fn runs(addr: usize, npages: usize, take: bool, mut f: impl FnMut(usize, usize)) {
    fn close(run: &mut (usize, usize), f: &mut impl FnMut(usize, usize)) {
        if run.1 != 0 {
            f(run.0, run.1);
            *run = (0, 0);
        }
    }
    let mut run = (0usize, 0usize);
    dirty_words(addr, npages, |w, mask, base| {
        let cur = w.load(Ordering::Acquire) & mask;
        let set = if take && cur != 0 {
            w.fetch_and(!mask, Ordering::AcqRel) & mask
        } else {
            cur
        };
        // A run of set bits at a time, not a bit at a time (a 17 MiB
        // block is 4,352 pages). A run that does not start where the open
        // one ends (a clean page between them, in this word or an earlier
        // one) closes it.
        let mut bits = set;
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            let ones = (bits >> b).trailing_ones() as usize;
            let page = base + b * PAGE_SIZE;
            if run.1 != 0 && run.0 + run.1 == page {
                run.1 += ones * PAGE_SIZE;
            } else {
                close(&mut run, &mut f);
                run = (page, ones * PAGE_SIZE);
            }
            bits &= !((u64::MAX >> (64 - ones)) << b);
        }
    });
    close(&mut run, &mut f);
}

/// Calls `f(start, len)` for each maximal run of dirty pages in
/// `[addr, addr + npages pages)` (a snapshot: bits may change meanwhile).
pub(crate) fn dirty_runs(addr: usize, npages: usize, f: impl FnMut(usize, usize)) {
    runs(addr, npages, false, f);
}

/// Marks the dirty pages of `[addr, addr + npages pages)` clean and calls
/// `f(start, len)` for each maximal run of them, for the caller (who owns
/// the pages) to clear.
pub(crate) fn take_dirty_runs(addr: usize, npages: usize, f: impl FnMut(usize, usize)) {
    runs(addr, npages, true, f);
}

/// Calls `f(base)` for every chunk known to the table (a snapshot: chunks
/// may come and go meanwhile). Walks every leaf: for reclaims and timeout
/// passes, not for hot paths.
pub(crate) fn for_each_chunk(mut f: impl FnMut(usize)) {
    let (lo, hi) = (
        ROOT_LO.load(Ordering::Acquire),
        ROOT_HI.load(Ordering::Acquire),
    );
    if lo > hi {
        return; // no leaf yet
    }
    for (r, root) in ROOT.iter().enumerate().take(hi + 1).skip(lo) {
        let leaf = root.load(Ordering::Acquire);
        if leaf.is_null() {
            continue;
        }
        // SAFETY: leaves are never unmapped.
        for (w, bits) in unsafe { (*leaf).chunks.iter() }.enumerate() {
            let mut b = bits.load(Ordering::Acquire);
            while b != 0 {
                let c = w * 64 + b.trailing_zeros() as usize;
                b &= b - 1;
                f((r << ROOT_SHIFT) | (c << CHUNK_SHIFT));
            }
        }
    }
}

/// Notes that a slab of the chunk holding `addr` was freed with its pages
/// kept, at `now` (nonzero): the chunk's stamp, unless it has an older
/// one. Returns whether the chunk had none (the caller counts it).
pub(crate) fn note_slab_freed(addr: usize, now: u64) -> bool {
    slab_stamp(addr).is_some_and(|w| {
        w.load(Ordering::Relaxed) == 0
            && w.compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    })
}

/// The slab stamp of the chunk holding `addr`, if a leaf covers it.
fn slab_stamp(addr: usize) -> Option<&'static AtomicU64> {
    leaf_of(addr).map(|(leaf, _)| &leaf.slabs_freed[(addr >> CHUNK_SHIFT) & (LEAF_CHUNKS - 1)])
}

/// Clears the stamps of [`note_slab_freed`] of the whole chunks from
/// `base` to `base + size`, about to be unregistered (a chunk registered
/// again starts with none); returns how many there were.
pub(crate) fn clear_slab_stamps(base: usize, size: usize) -> usize {
    (base..base.saturating_add(size))
        .step_by(CHUNK_SIZE)
        .filter_map(slab_stamp)
        .filter(|w| w.swap(0, Ordering::Relaxed) != 0)
        .count()
}

/// Calls `f(base)` for each chunk with a stamp of [`note_slab_freed`] at
/// or before `cutoff`, after clearing it (a slab freed meanwhile stamps it
/// again).
pub(crate) fn take_slab_stamps(cutoff: u64, mut f: impl FnMut(usize)) {
    for_each_chunk(|base| {
        let Some(w) = slab_stamp(base) else { return };
        let stamp = w.load(Ordering::Relaxed);
        if stamp != 0
            && stamp <= cutoff
            && w.compare_exchange(stamp, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            f(base);
        }
    });
}

/// A slab page word for `class`.
#[inline]
pub(crate) const fn slab_word(class: usize) -> usize {
    ((class + 1) << SLAB_SHIFT) | TAG_SLAB
}

/// Whether `word` is a slab page's.
#[inline(always)]
pub(crate) const fn is_slab(word: usize) -> bool {
    word & TAG_MASK == TAG_SLAB && word != 0
}

/// The size class of a slab page's `word`.
#[inline(always)]
pub(crate) const fn slab_class(word: usize) -> usize {
    (word >> SLAB_SHIFT) - 1
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

/// The head word of a freed large block of `npages` in a page cache
/// ([`TAG_CACHED`]).
#[inline]
pub(crate) const fn cached_word(npages: usize) -> usize {
    (npages << 3) | TAG_CACHED
}

/// The head word of a large block of `npages` taken from the arena
/// directly: [`TAG_LARGE_X`] up to the page caches' largest blocks, a
/// plain large word above (no cache serves those).
#[inline]
pub(crate) const fn direct_word(npages: usize) -> usize {
    if npages <= crate::classes::LARGE_MAX_PAGES {
        large_word_x(npages)
    } else {
        large_word(npages)
    }
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
    fn dirty_bits_count_and_make_runs() {
        let base = crate::os::map_chunks(2 * CHUNK_SIZE).unwrap();
        assert!(register(base, 2 * CHUNK_SIZE));
        let page = |i: usize| base + i * PAGE_SIZE;
        // Runs across a word boundary (bit 63 to 64) and a chunk boundary.
        assert_eq!(mark_dirty(page(60), 10), 10);
        assert_eq!(mark_dirty(page(65), 3), 0);
        assert_eq!(mark_dirty(page(510), 4), 4);
        assert_eq!(mark_dirty(page(200), 1), 1);
        assert!(is_dirty(page(63)) && is_dirty(page(64)) && is_dirty(page(512)));
        assert!(!is_dirty(page(59)) && !is_dirty(page(70)) && !is_dirty(page(514)));
        let mut seen = Vec::new();
        dirty_runs(base, 2 * PAGES_PER_CHUNK, |s, l| seen.push((s, l)));
        assert_eq!(
            seen,
            [
                (page(60), 10 * PAGE_SIZE),
                (page(200), PAGE_SIZE),
                (page(510), 4 * PAGE_SIZE)
            ]
        );
        assert_eq!(clean(page(62), 3), 3);
        let mut taken = Vec::new();
        take_dirty_runs(page(0), 300, |s, l| taken.push((s, l)));
        assert_eq!(
            taken,
            [
                (page(60), 2 * PAGE_SIZE),
                (page(65), 5 * PAGE_SIZE),
                (page(200), PAGE_SIZE)
            ]
        );
        assert!(!is_dirty(page(60)) && !is_dirty(page(200)) && is_dirty(page(511)));
        assert_eq!(clean(base, 2 * PAGES_PER_CHUNK), 4);
        // The words were never touched.
        assert_eq!(lookup(page(60)), 0);
        unregister(base, 2 * CHUNK_SIZE);
        // SAFETY: mapped above, unused.
        unsafe { crate::os::unmap(base, 2 * CHUNK_SIZE) };
    }

    /// Runs of whole words (64 set bits at once) and of single bits
    /// between clean pages, as `runs` finds them a run of bits at a time.
    #[test]
    fn dirty_runs_span_whole_words() {
        let base = crate::os::map_chunks(CHUNK_SIZE).unwrap();
        assert!(register(base, CHUNK_SIZE));
        let page = |i: usize| base + i * PAGE_SIZE;
        assert_eq!(mark_dirty(page(64), 192), 192);
        assert_eq!(mark_dirty(page(257), 1), 1);
        assert_eq!(mark_dirty(page(259), 2), 2);
        assert_eq!(mark_dirty(page(320), 64), 64);
        let mut seen = Vec::new();
        dirty_runs(base, PAGES_PER_CHUNK, |s, l| seen.push((s, l)));
        assert_eq!(
            seen,
            [
                (page(64), 192 * PAGE_SIZE),
                (page(257), PAGE_SIZE),
                (page(259), 2 * PAGE_SIZE),
                (page(320), 64 * PAGE_SIZE)
            ]
        );
        let mut taken = Vec::new();
        take_dirty_runs(page(100), 240, |s, l| taken.push((s, l)));
        assert_eq!(
            taken,
            [
                (page(100), 156 * PAGE_SIZE),
                (page(257), PAGE_SIZE),
                (page(259), 2 * PAGE_SIZE),
                (page(320), 20 * PAGE_SIZE)
            ]
        );
        assert_eq!(clean(base, PAGES_PER_CHUNK), 36 + 44);
        unregister(base, CHUNK_SIZE);
        // SAFETY: mapped above, unused.
        unsafe { crate::os::unmap(base, CHUNK_SIZE) };
    }

    #[test]
    fn foreign_addresses_are_not_ours() {
        let x = 5u64;
        assert!(!is_ours(&x as *const u64 as usize));
        assert_eq!(lookup(usize::MAX), 0);
        assert_eq!(lookup(0), 0);
    }
}
