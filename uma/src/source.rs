//! Page sources: where a keg gets its slabs (FreeBSD `uk_allocf`/`uk_freef`).
//!
//! A [`SlabSource`] is the alloc/free pair of one page allocator. Every slab
//! records the source that produced it (`slab::Slab::source`), and
//! is given back through that same source's `free`, even if the keg's source
//! was changed since (the i386 "btalloc" hang of PR 248008 came from a slab
//! allocated with `vmem_xalloc` being freed with the default `kmem_free`).
//!
//! Two sources ship with the crate: [`MmapSource`] (anonymous `mmap`) and
//! [`TestSource`] (mmap with a byte limit, failure injection and counters).

use core::fmt;
use core::ptr::NonNull;

use crate::sync::unmodeled::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::Mutex;
use crate::Flags;

/// The host page size UMA assumes (bytes). Slabs are whole host pages.
pub const PAGE_SIZE: usize = 4096;

/// A page allocator a keg takes slabs from. This is a kmem hook: kmem
/// implements it over its kernel arena.
///
/// # Safety
///
/// Implementors promise, for `alloc(size, align, flags)`:
/// - the result, if any, is `size` bytes of readable and writable memory
///   aligned to `align` (a power of two, at least [`PAGE_SIZE`]; for slabs
///   `align == size`), disjoint from every other live allocation of any
///   source, and stays valid until passed to `free`;
/// - with [`Flags::ZERO`] the memory is zero-filled;
/// - it sleeps only when `flags` has [`Flags::WAITOK`]; it may fail even
///   then: for a `WAITOK` request UMA reclaims, waits (bounded backoff, or
///   until an item or slab comes back to the keg) and calls it again, so a
///   source need not loop on its own;
/// - it may recurse into UMA (allocate from or free to any zone, including
///   the zone whose keg called it: the btag zone does so with
///   `USE_RESERVE | NOVM | NOWAIT`). UMA calls `alloc` and `free` with **no
///   UMA lock held** (no zone, keg or registry lock), so recursion is safe.
///
/// `free(ptr, size, align)` receives exactly what one earlier `alloc`
/// returned; it may also recurse into UMA and is called with no UMA lock
/// held.
pub unsafe trait SlabSource: Sync {
    /// Allocates `size` bytes aligned to `align`, or `None`.
    fn alloc(&self, size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>>;

    /// Gives back memory from [`alloc`](Self::alloc).
    ///
    /// # Safety
    ///
    /// `ptr`, `size` and `align` are those of one earlier `alloc` of this
    /// source that was not freed since, and nothing uses the memory any more.
    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, align: usize);

    /// A short name for reports.
    fn name(&self) -> &'static str {
        "source"
    }
}

/// Anonymous `mmap` pages, aligned by over-mapping and trimming.
#[derive(Debug, Default, Clone, Copy)]
pub struct MmapSource;

/// The process-wide mmap source (the default source of [`crate::global`]).
pub static MMAP_SOURCE: MmapSource = MmapSource;

fn round_page(n: usize) -> usize {
    (n + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// Maps `size` bytes (rounded up to pages) of fresh zero-filled anonymous
/// memory aligned to `align` (a power of two), by over-mapping and trimming
/// the ends; `noreserve` adds `MAP_NORESERVE`. `None` on bad arguments or if
/// the OS refuses. Shared by [`MmapSource`] and kmem's OS chunks.
///
/// The over-mapping needs `align - PAGE_SIZE` bytes of address space more
/// than it keeps, for a moment. Under an address-space limit
/// (`RLIMIT_AS`, `ulimit -v`) that slack may not fit where `size` does; the
/// over-mapping's failure is then followed by exact-size tries: a plain
/// mapping kept if the kernel placed it aligned, else the aligned
/// addresses on either side of it (`MAP_FIXED_NOREPLACE`, never over
/// another mapping). Each try holds no more than `size`.
pub fn map_aligned(size: usize, align: usize, noreserve: bool) -> Option<NonNull<u8>> {
    if size == 0 || !align.is_power_of_two() {
        return None;
    }
    let size = round_page(size);
    let align = align.max(PAGE_SIZE);
    let len = size.checked_add(align - PAGE_SIZE)?;
    let flags =
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if noreserve { libc::MAP_NORESERVE } else { 0 };
    let Some(start) = mmap_at(0, len, flags) else {
        return if len == size {
            None
        } else {
            map_exact_aligned(size, align, flags)
        };
    };
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = len - head - size;
    if head > 0 {
        // SAFETY: [start, aligned) is the unused head of our own mapping.
        unsafe { libc::munmap(start as *mut libc::c_void, head) };
    }
    if tail > 0 {
        // SAFETY: [aligned + size, start + len) is the unused tail of it.
        unsafe { libc::munmap((aligned + size) as *mut libc::c_void, tail) };
    }
    NonNull::new(aligned as *mut u8)
}

/// An anonymous read-write mapping of `len` bytes at `hint` (0: anywhere),
/// or `None`.
fn mmap_at(hint: usize, len: usize, flags: libc::c_int) -> Option<usize> {
    // SAFETY: an anonymous private mapping, no fd; with a hint, the caller
    // passes MAP_FIXED_NOREPLACE, which never replaces a mapping.
    let p = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

/// [`map_aligned`]'s exact-size tries (see there), after the over-mapping
/// failed.
fn map_exact_aligned(size: usize, align: usize, flags: libc::c_int) -> Option<NonNull<u8>> {
    let p = mmap_at(0, size, flags)?;
    if p & (align - 1) == 0 {
        return NonNull::new(p as *mut u8);
    }
    // SAFETY: our own mapping of `size` bytes, unused.
    unsafe { libc::munmap(p as *mut libc::c_void, size) };
    let down = p & !(align - 1);
    for hint in [down, down.wrapping_add(align)] {
        if hint == 0 || hint.checked_add(size).is_none() {
            continue;
        }
        let Some(q) = mmap_at(hint, size, flags | libc::MAP_FIXED_NOREPLACE) else {
            continue;
        };
        if q == hint {
            return NonNull::new(q as *mut u8);
        }
        // A kernel older than 4.17 takes the flag for a mere hint.
        // SAFETY: our own mapping of `size` bytes, unused.
        unsafe { libc::munmap(q as *mut libc::c_void, size) };
    }
    None
}

// SAFETY: the mapping is fresh (disjoint, zero-filled), trimmed to `align`,
// never sleeps, never calls UMA.
unsafe impl SlabSource for MmapSource {
    fn alloc(&self, size: usize, align: usize, _flags: Flags) -> Option<NonNull<u8>> {
        map_aligned(size, align, false)
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, _align: usize) {
        // SAFETY: the caller passes one mapping of ours of this size.
        unsafe { libc::munmap(ptr.as_ptr().cast(), round_page(size)) };
    }

    fn name(&self) -> &'static str {
        "mmap"
    }
}

const TRACK: usize = 1024;

struct Tracker {
    live: [(usize, usize); TRACK],
    n: usize,
    overflow: bool,
}

/// A test page source: mmap pages under a byte limit, with failure
/// injection, counters, and a record of the flags it was called with.
///
/// It never uses the global allocator, so it can back zones in the
/// no-global-allocator test. [`release_all`](Self::release_all) unmaps
/// whatever is still outstanding (used by the loom models to stay small).
pub struct TestSource {
    limit: AtomicUsize,
    in_use: AtomicUsize,
    allocs: AtomicU64,
    frees: AtomicU64,
    fails: AtomicU64,
    fail_next: AtomicUsize,
    flags_seen: AtomicUsize,
    last_flags: AtomicUsize,
    track: Mutex<Tracker>,
}

impl fmt::Debug for TestSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestSource")
            .field("in_use", &self.in_use())
            .field("allocs", &self.allocs())
            .field("frees", &self.frees())
            .finish()
    }
}

impl Default for TestSource {
    fn default() -> Self {
        Self::new()
    }
}

impl TestSource {
    /// An unlimited test source.
    pub fn new() -> Self {
        TestSource {
            limit: AtomicUsize::new(usize::MAX),
            in_use: AtomicUsize::new(0),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            fails: AtomicU64::new(0),
            fail_next: AtomicUsize::new(0),
            flags_seen: AtomicUsize::new(0),
            last_flags: AtomicUsize::new(0),
            track: Mutex::new(Tracker {
                live: [(0, 0); TRACK],
                n: 0,
                overflow: false,
            }),
        }
    }
    /// Caps the bytes outstanding; allocations beyond fail.
    pub fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::SeqCst);
    }
    /// Makes the next `n` allocations fail.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }
    /// Bytes outstanding.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::SeqCst)
    }
    /// Successful allocations so far.
    pub fn allocs(&self) -> u64 {
        self.allocs.load(Ordering::SeqCst)
    }
    /// Frees so far.
    pub fn frees(&self) -> u64 {
        self.frees.load(Ordering::SeqCst)
    }
    /// Failed allocations so far.
    pub fn fails(&self) -> u64 {
        self.fails.load(Ordering::SeqCst)
    }
    /// The union of all flags any `alloc` call received.
    pub fn flags_seen(&self) -> Flags {
        Flags::from_bits(self.flags_seen.load(Ordering::SeqCst) as u32)
    }
    /// The flags of the latest `alloc` call.
    pub fn last_flags(&self) -> Flags {
        Flags::from_bits(self.last_flags.load(Ordering::SeqCst) as u32)
    }
    /// Unmaps every allocation still outstanding and returns how many.
    ///
    /// # Safety
    ///
    /// Nothing uses memory from this source any more (every zone and `Uma`
    /// instance built on it is dead).
    pub unsafe fn release_all(&self) -> usize {
        let mut t = self.track.lock();
        let n = t.n;
        for i in 0..n {
            let (p, s) = t.live[i];
            // SAFETY: a live mapping of ours; the caller says it is unused.
            unsafe { libc::munmap(p as *mut libc::c_void, s) };
        }
        t.n = 0;
        self.in_use.store(0, Ordering::SeqCst);
        n
    }
}

// SAFETY: delegates to MmapSource (fresh, aligned, zeroed memory); never
// sleeps; never calls UMA.
unsafe impl SlabSource for TestSource {
    fn alloc(&self, size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
        self.flags_seen
            .fetch_or(flags.bits() as usize, Ordering::SeqCst);
        self.last_flags
            .store(flags.bits() as usize, Ordering::SeqCst);
        let size = round_page(size);
        let inject = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let over = self.in_use.fetch_add(size, Ordering::SeqCst) + size
            > self.limit.load(Ordering::SeqCst);
        if inject || over {
            self.in_use.fetch_sub(size, Ordering::SeqCst);
            self.fails.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        let Some(p) = MMAP_SOURCE.alloc(size, align, flags) else {
            self.in_use.fetch_sub(size, Ordering::SeqCst);
            self.fails.fetch_add(1, Ordering::SeqCst);
            return None;
        };
        self.allocs.fetch_add(1, Ordering::SeqCst);
        let mut t = self.track.lock();
        if t.n < TRACK {
            let n = t.n;
            t.live[n] = (p.as_ptr() as usize, size);
            t.n += 1;
        } else {
            t.overflow = true;
        }
        Some(p)
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, align: usize) {
        let size = round_page(size);
        {
            let mut t = self.track.lock();
            let n = t.n;
            if let Some(i) = (0..n).find(|&i| t.live[i].0 == ptr.as_ptr() as usize) {
                t.live[i] = t.live[n - 1];
                t.n -= 1;
            }
        }
        self.in_use.fetch_sub(size, Ordering::SeqCst);
        self.frees.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded from our caller's contract.
        unsafe { MMAP_SOURCE.free(ptr, size, align) };
    }

    fn name(&self) -> &'static str {
        "test"
    }
}
