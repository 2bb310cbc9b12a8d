//! Boundary tags (`struct vmem_btag`) and where they come from.
//!
//! A boundary tag describes one segment of an arena: a span (space the
//! arena manages), a free or busy (allocated) range within it, or the
//! next-fit cursor. Every tag is on the arena's address-ordered segment
//! list, and on one more list according to its kind: a free tag on the
//! freelist of its order, a busy tag on its hash chain, a spare tag on the
//! arena's tag cache.
//!
//! Tags come from a [`TagSource`]. In the kernel that is a UMA zone (the
//! "btag zone"), and allocating a tag may need a new slab, whose pages need
//! boundary tags from the kernel arena: the recursion that `kmem` breaks with
//! a reserve. Alone, vmem uses [`StandaloneTags`], which carves tags from
//! pages it maps itself.

#[cfg(feature = "std")]
use crate::sync::Mutex;
use crate::Flags;
use core::alloc::Layout;
use core::ptr::NonNull;

/// What a segment is (`BT_TYPE_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum SegmentKind {
    /// A span imported from the arena's source (released when wholly free).
    Span = 1,
    /// A span added with `add` or at creation (never released).
    StaticSpan = 2,
    /// Free space.
    Free = 3,
    /// Allocated space.
    Busy = 4,
    /// The next-fit cursor (no space of its own).
    Cursor = 5,
}

impl SegmentKind {
    /// Spans describe managed space; free and busy segments partition it.
    pub fn is_span(self) -> bool {
        matches!(self, SegmentKind::Span | SegmentKind::StaticSpan)
    }
}

/// One boundary tag. 56 bytes on 64-bit targets, like FreeBSD's.
#[repr(C)]
pub(crate) struct Bt {
    // Address-ordered segment list (`bt_seglist`).
    seg_next: Option<Tag>,
    seg_prev: Option<Tag>,
    // Freelist, hash chain or tag-cache link (`bt_u`), by kind.
    link_next: Option<Tag>,
    link_prev: Option<Tag>,
    start: usize,
    size: usize,
    kind: SegmentKind,
    /// A busy tag held by an [`Allocation`](crate::Allocation) handle
    /// instead of the busy hash.
    owned: bool,
    /// The freelist a free tag is on (its bin when inserted).
    bin: u16,
}

/// Size of one boundary tag: what a [`TagSource`] hands out.
pub const TAG_SIZE: usize = core::mem::size_of::<Bt>();
/// Alignment of one boundary tag.
pub const TAG_ALIGN: usize = core::mem::align_of::<Bt>();
/// The layout a [`TagSource`] allocates.
pub const TAG_LAYOUT: Layout = Layout::new::<Bt>();

// `Tag::set_holder` keeps a pointer in an `Option<Tag>` slot.
const _: () = assert!(
    core::mem::size_of::<Option<Tag>>() == core::mem::size_of::<*const ()>()
        && core::mem::align_of::<Option<Tag>>() == core::mem::align_of::<*const ()>()
);

/// A handle to a boundary tag owned by an arena.
///
/// This is a crate-private raw handle. Its accessors are safe functions on
/// the strength of one invariant that the `arena` module upholds: a `Tag`
/// is only created from memory a [`TagSource`] handed to an arena, it is
/// only used while holding that arena's lock (all handles are reached
/// through the locked `State`), and it is not used after the tag is given
/// back to the source. One exception: an [`Allocation`](crate::Allocation)
/// reads its busy tag's start, size, kind, mark (`owned`) and holder without
/// the lock, which no one writes while the tag is busy and held by a handle
/// ([`Arena::xresize`](crate::Arena::xresize) changes the size of busy
/// tags, under the lock, but only of those in the busy hash).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag(NonNull<Bt>);

macro_rules! field {
    ($get:ident, $set:ident, $t:ty) => {
        #[inline]
        pub(crate) fn $get(self) -> $t {
            // SAFETY: by the type invariant the tag is live and its arena's
            // lock is held, so no one else accesses it concurrently.
            unsafe { (*self.0.as_ptr()).$get }
        }
        #[inline]
        pub(crate) fn $set(self, value: $t) {
            // SAFETY: as for the getter.
            unsafe { (*self.0.as_ptr()).$get = value }
        }
    };
}

impl Tag {
    /// Turns fresh tag memory into a tag (a free segment of size 0 on no
    /// list).
    ///
    /// # Safety
    /// `mem` must be valid for writes of [`TAG_LAYOUT`], exclusively owned by
    /// the caller, and from then on used only through the returned handle.
    pub(crate) unsafe fn init(mem: NonNull<u8>) -> Tag {
        let p = mem.cast::<Bt>();
        // SAFETY: the caller guarantees `mem` is valid and unaliased.
        unsafe {
            p.as_ptr().write(Bt {
                seg_next: None,
                seg_prev: None,
                link_next: None,
                link_prev: None,
                start: 0,
                size: 0,
                kind: SegmentKind::Free,
                owned: false,
                bin: 0,
            });
        }
        Tag(p)
    }

    /// The memory behind the tag, for returning it to its source.
    pub(crate) fn into_raw(self) -> NonNull<u8> {
        self.0.cast()
    }

    field!(seg_next, set_seg_next, Option<Tag>);
    field!(seg_prev, set_seg_prev, Option<Tag>);
    field!(link_next, set_link_next, Option<Tag>);
    field!(link_prev, set_link_prev, Option<Tag>);
    field!(start, set_start, usize);
    field!(size, set_size, usize);
    field!(kind, set_kind, SegmentKind);
    field!(owned, set_owned, bool);
    field!(bin, set_bin, u16);

    /// Records the arena whose [`Allocation`](crate::Allocation) handle
    /// holds this busy tag: an identity, compared and never dereferenced,
    /// kept in `link_next`, which a busy tag outside the busy hash does not
    /// use (it is on no list). Written under the lock when the tag becomes
    /// busy, before the handle exists; `insfree` or `bt_free` overwrite it
    /// when the segment is freed.
    #[inline]
    pub(crate) fn set_holder(self, arena: *const ()) {
        // SAFETY: as for the field setters; `Option<Tag>` has the size and
        // alignment of a pointer (`None` is null), so the slot holds a
        // `*const ()` as well.
        unsafe {
            core::ptr::addr_of_mut!((*self.0.as_ptr()).link_next)
                .cast::<*const ()>()
                .write(arena)
        }
    }

    /// The arena recorded by [`set_holder`](Self::set_holder). Read without
    /// the lock by [`Arena::free_handle`](crate::Arena::free_handle), as
    /// [`Allocation`](crate::Allocation) reads the start and size: on a busy
    /// tag held by a handle it is not written while the handle lives.
    #[inline]
    pub(crate) fn holder(self) -> *const () {
        // SAFETY: as for `set_holder`; any pointer value, null included, is
        // a valid `*const ()`.
        unsafe {
            core::ptr::addr_of!((*self.0.as_ptr()).link_next)
                .cast::<*const ()>()
                .read()
        }
    }

    /// The last address of the segment (`BT_END`).
    #[inline]
    pub(crate) fn end(self) -> usize {
        self.start() + (self.size() - 1)
    }

    /// The tag's address, for diagnostics.
    pub(crate) fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }
}

/// Where an arena gets its boundary tags (FreeBSD: `uma_zalloc(vmem_bt_zone)`).
///
/// # Safety
/// Implementors promise:
/// - `alloc_tag` returns memory valid for reads and writes of
///   [`TAG_LAYOUT`] (size [`TAG_SIZE`], alignment [`TAG_ALIGN`]), used by no
///   one else until it is passed to `free_tag`;
/// - when `flags` contains [`Flags::NOVM`], `alloc_tag` neither sleeps nor
///   calls into any vmem arena: the caller may hold an arena lock;
/// - without `NOVM` the caller holds no arena lock: `alloc_tag` may call into
///   arenas (the calling one included, which is how a btag zone grows) and
///   may sleep only if `flags` contains [`Flags::WAITOK`];
/// - `free_tag` is called without arena locks held and may call into arenas.
///
/// [`Flags::USE_RESERVE`] is passed only by arenas built with
/// [`crate::ArenaBuilder::tag_reserve`]: the source may then dip into a
/// reserve held for breaking the tag/page recursion.
pub unsafe trait TagSource: Sync {
    /// Allocates one tag, or `None`.
    fn alloc_tag(&self, flags: Flags) -> Option<NonNull<u8>>;

    /// Returns a tag.
    ///
    /// # Safety
    /// `tag` must come from this source's `alloc_tag` and not be used again.
    unsafe fn free_tag(&self, tag: NonNull<u8>);

    /// Memory for a busy-hash table of `bytes` bytes (a multiple of the
    /// page size, 4 KiB or more), zeroed and aligned to 4 KiB, or `None` (the
    /// table then keeps its size; frees get slower as chains grow). Called
    /// without arena locks held; may call into arenas and may not sleep.
    ///
    /// The default maps anonymous memory from the OS with `std` (tables of
    /// 2 MiB and more on transparent huge pages, as [`StandaloneTags`]), and
    /// declines without it: a `no_std` user who wants the hash to grow with
    /// the number of busy segments supplies pages here.
    fn alloc_table(&self, bytes: usize) -> Option<NonNull<u8>> {
        #[cfg(feature = "std")]
        {
            if bytes % crate::os::HUGE == 0 {
                crate::os::map_huge(bytes)
            } else {
                crate::os::map(bytes)
            }
        }
        #[cfg(not(feature = "std"))]
        {
            let _ = bytes;
            None
        }
    }

    /// Returns a table from [`alloc_table`](Self::alloc_table). Called
    /// without arena locks held.
    ///
    /// # Safety
    /// `table` and `bytes` must be exactly a table returned by this
    /// source's `alloc_table` that is no longer used.
    unsafe fn free_table(&self, table: NonNull<u8>, bytes: usize) {
        #[cfg(feature = "std")]
        {
            // SAFETY: the default `alloc_table` mapped it; the caller
            // returns the whole mapping, unused.
            unsafe { crate::os::unmap(table, bytes) }
        }
        #[cfg(not(feature = "std"))]
        {
            let _ = (table, bytes);
        }
    }
}

/// A freed tag of a [`StandaloneTags`], on its free list: the link is
/// kept in the tag's first word.
#[cfg(feature = "std")]
struct Link {
    next: Option<NonNull<Link>>,
}

/// The spare tags of a [`StandaloneTags`]: those freed (a list threaded
/// through their first word), and the rest of the newest chunk, not yet
/// carved (handed out in address order, so a chunk's pages are touched
/// only as its tags are first used).
#[cfg(feature = "std")]
struct Pool {
    free: Option<NonNull<Link>>,
    /// Tags on `free`.
    nfree: usize,
    /// The next uncarved slot of the newest chunk, and its end.
    carve: usize,
    carve_end: usize,
    mapped: usize,
}

#[cfg(feature = "std")]
impl Pool {
    const EMPTY: Pool = Pool {
        free: None,
        nfree: 0,
        carve: 0,
        carve_end: 0,
        mapped: 0,
    };

    /// Spare tags: freed ones and the newest chunk's uncarved slots.
    fn spare(&self) -> usize {
        self.nfree + (self.carve_end - self.carve) / StandaloneTags::STRIDE
    }
}

// SAFETY: the pointers in `Pool` are to tag memory owned by the pool, only
// touched under the pool's mutex.
#[cfg(feature = "std")]
unsafe impl Send for Pool {}

/// A tag source with no dependencies: tags are carved from chunks it maps
/// from the OS, one at a time as they are asked for (so a chunk's pages
/// are faulted in as its tags are first used, not when it is mapped), and
/// freed tags are kept for reuse, ahead of fresh ones (the chunks are never
/// unmapped). Each tag has a 64-byte cache line to itself. The first 2 MiB
/// come in 64 KiB chunks; after that each chunk is a 2 MiB transparent huge
/// page (`MADV_HUGEPAGE`, 32,768 tags), so that
/// an arena of a million segments reaches its tags through a few dozen TLB
/// entries instead of thousands (an alloc+free pair at 10^5 live segments
/// touches some ten tags at random). It never uses the global allocator, never sleeps and never
/// calls into an arena, so it is safe under any flags.
#[cfg(feature = "std")]
pub struct StandaloneTags {
    pool: Mutex<Pool>,
}

#[cfg(feature = "std")]
impl core::fmt::Debug for StandaloneTags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let pool = self.pool.lock();
        f.debug_struct("StandaloneTags")
            .field("spare", &pool.spare())
            .field("mapped_bytes", &pool.mapped)
            .finish()
    }
}

#[cfg(feature = "std")]
impl StandaloneTags {
    const CHUNK: usize = 64 << 10;
    /// One tag per 64-byte cache line: a 56-byte tag packed at 56-byte
    /// intervals straddles two lines three times out of four, and the
    /// operations read most of a tag when they touch it (per random-size
    /// alloc+free pair at 10^4 live segments: 10.4 -> 8.5 L1 misses).
    const STRIDE: usize = 64;

    /// An empty source; maps its first chunk on first use.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        StandaloneTags {
            pool: Mutex::new(Pool::EMPTY),
        }
    }

    /// An empty source; maps its first chunk on first use.
    #[cfg(loom)]
    pub fn new() -> Self {
        StandaloneTags {
            pool: Mutex::new(Pool::EMPTY),
        }
    }

    /// Bytes mapped from the OS so far.
    pub fn mapped_bytes(&self) -> usize {
        self.pool.lock().mapped
    }

    /// Takes the pool lock for a fork (`pthread_atfork` prepare). An arena
    /// calls its tag source with its own lock held, so this comes after the
    /// locks of the arenas using this source.
    ///
    /// # Safety
    ///
    /// As [`Arena::fork_prepare`](crate::Arena::fork_prepare): exactly one of
    /// [`fork_parent`](Self::fork_parent) or [`fork_child`](Self::fork_child)
    /// follows in this thread, which does not hold the lock already.
    #[cfg(all(not(loom), feature = "std"))]
    pub unsafe fn fork_prepare(&self) {
        self.pool.force_lock();
    }

    /// Releases the pool lock in the parent after a fork.
    ///
    /// # Safety
    ///
    /// [`fork_prepare`](Self::fork_prepare) was called by this thread and
    /// not yet undone.
    #[cfg(all(not(loom), feature = "std"))]
    pub unsafe fn fork_parent(&self) {
        // SAFETY: taken by fork_prepare in this thread.
        unsafe { self.pool.force_unlock() };
    }

    /// Releases the pool lock in the child after a fork (the pool is only
    /// changed under the lock, so it is consistent).
    ///
    /// # Safety
    ///
    /// Called in the child, by the thread that forked, after
    /// [`fork_prepare`](Self::fork_prepare) in the prepare handler.
    #[cfg(all(not(loom), feature = "std"))]
    pub unsafe fn fork_child(&self) {
        // SAFETY: taken by fork_prepare in the forking thread, this one.
        unsafe { self.pool.force_unlock() };
    }
}

#[cfg(feature = "std")]
impl Default for StandaloneTags {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every tag handed out is a distinct TAG_SIZE-aligned slot of a
// private mapping, owned by the caller until freed; the source never sleeps
// and never calls into an arena, whatever the flags.
#[cfg(feature = "std")]
unsafe impl TagSource for StandaloneTags {
    fn alloc_tag(&self, _flags: Flags) -> Option<NonNull<u8>> {
        const { assert!(core::mem::size_of::<Link>() <= TAG_SIZE) };
        const { assert!(TAG_SIZE <= Self::STRIDE && Self::STRIDE % TAG_ALIGN == 0) };
        let mut pool = self.pool.lock();
        if let Some(link) = pool.free {
            // SAFETY: `link` is a freed tag of ours holding its list link
            // in its first word, written by `free_tag`.
            pool.free = unsafe { (*link.as_ptr()).next };
            pool.nfree -= 1;
            return Some(link.cast());
        }
        if pool.carve == pool.carve_end {
            // Small chunks first; once the pool holds a huge page's worth,
            // huge pages (see `StandaloneTags`). What is left of the old
            // chunk is less than one slot.
            let (chunk, bytes) = if pool.mapped >= crate::os::HUGE {
                (crate::os::map_huge(crate::os::HUGE)?, crate::os::HUGE)
            } else {
                (crate::os::map(Self::CHUNK)?, Self::CHUNK)
            };
            pool.mapped += bytes;
            pool.carve = chunk.as_ptr() as usize;
            pool.carve_end = pool.carve + bytes;
        }
        let slot = pool.carve;
        pool.carve += Self::STRIDE;
        // A mapping is page aligned, so every slot is aligned for a tag.
        NonNull::new(slot as *mut u8)
    }

    unsafe fn free_tag(&self, tag: NonNull<u8>) {
        let mut pool = self.pool.lock();
        let link = tag.cast::<Link>();
        // SAFETY: the caller returns a tag of ours that it no longer uses;
        // tag memory is large and aligned enough for a link.
        unsafe { link.as_ptr().write(Link { next: pool.free }) };
        pool.free = Some(link);
        pool.nfree += 1;
    }
}

/// The process-wide standalone tag source, the default for arenas built
/// without [`crate::ArenaBuilder::tag_source`].
#[cfg(all(not(loom), feature = "std"))]
pub static STANDALONE_TAGS: StandaloneTags = StandaloneTags::new();
