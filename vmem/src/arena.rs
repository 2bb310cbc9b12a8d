//! The arena (`struct vmem`) and its operations: `vmem_xalloc`,
//! `vmem_xfree`, `vmem_add`, import and release, and the tag discipline.
//!
//! # Locking
//!
//! One mutex per arena guards everything mutable ([`State`]). Operations on
//! segments are methods of `State`, so they can only run with the lock held
//! (the guard is the proof). A function that drops the lock takes the guard
//! and returns a new one, and says what it re-checks. The lock is dropped
//! only to call out: to the tag source when the no-sleep, no-recursion try
//! fails (`bt_fill`), to the import source, to the quantum cache and reclaim
//! callback, to sleep (`WAITOK`), and to return surplus tags and released
//! spans. Before any unlock in the middle of an allocation, the
//! `BT_MAXALLOC` tags it relies on are hidden from other threads
//! (`bt_save`), and counted back after (`bt_restore`).

use crate::bins::{bin_of, first_bin, Freelists};
use crate::btag::{SegmentKind, Tag, TagSource};
use crate::fit::{fit, Constraints};
use crate::flags::Policy;
use crate::hash::BusyHash;
use crate::qcache::QuantumCache;
use crate::source::Source;
use crate::sync::{Condvar, Mutex, MutexGuard};
use crate::{Error, Flags, Name};
use core::fmt;
use core::time::Duration;

/// Most boundary tags one allocation can need: two to import a span (span
/// and free tags), two to clip a free segment (prefix and busy tags).
pub const BT_MAXALLOC: usize = 4;
/// Most spare tags an arena keeps; extras go back to the tag source.
pub const BT_MAXFREE: usize = BT_MAXALLOC * 8;
/// Most quantum-cache size classes (`VMEM_QCACHE_IDX_MAX`).
pub const QCACHE_MAX_CLASSES: usize = 16;
/// Lowest address a quantum cache hands out (`VMEM_ADDR_QCACHE_MIN`): a
/// cache uses 0 for "empty", so address 0 is only ever allocated by `xalloc`.
pub const QCACHE_MIN_ADDR: usize = 1;
/// How long a `WAITOK` sleeper waits before retrying on its own. FreeBSD's
/// `vmem_periodic` broadcasts every 10 s so sleepers retry their import and
/// reclaim; space freed in an import source wakes no one here otherwise.
const WAIT_RETRY: Duration = Duration::from_millis(50);

pub(crate) type Guard<'g, 'a> = MutexGuard<'g, State<'a>>;

/// Everything mutable about an arena, reachable only through its lock.
pub(crate) struct State<'a> {
    // constant after create (copied here for the segment methods)
    pub(crate) qshift: u32,
    // the segment list, in address order, with the cursor somewhere in it
    pub(crate) seg_head: Option<Tag>,
    pub(crate) seg_tail: Option<Tag>,
    pub(crate) cursor: Tag,
    // free segments by order, and a bitmap of the non-empty lists
    pub(crate) free: Freelists,
    // busy segments by start address
    pub(crate) hash: BusyHash,
    pub(crate) rehashing: bool,
    // spare tags; `nfreetags` excludes tags hidden by `bt_save`
    pub(crate) freetags: Option<Tag>,
    pub(crate) nfreetags: usize,
    /// Every tag the arena holds: segment list (cursor included) and spares.
    pub(crate) ntags: usize,
    // accounting
    pub(crate) nbusytag: usize,
    pub(crate) inuse: usize,
    pub(crate) size: usize,
    pub(crate) limit: usize,
    pub(crate) reclaim: Option<&'a (dyn Fn(Flags) + Sync)>,
    /// Threads asleep on the arena's condition variable: a free wakes
    /// them only if there are any (the notify is an atomic read-modify-write
    /// on a shared line, a third of a small free's cost otherwise).
    pub(crate) sleepers: usize,
}

// SAFETY: the tags behind the raw handles in `State` are owned by the arena
// and only touched with its lock held (or through `&mut`), so moving the
// state between threads moves that ownership with it.
unsafe impl Send for State<'_> {}

/// Reports an internal inconsistency and stops: a bug in vmem or a broken
/// [`TagSource`]/[`Source`] contract. Under loom it panics so the model
/// checker reports the interleaving.
#[cold]
#[inline(never)]
pub(crate) fn bug(what: &str) -> ! {
    #[cfg(all(feature = "std", not(loom)))]
    {
        std::eprintln!("vmem: internal error: {what}");
        std::process::abort();
    }
    // Under loom the model checker reports the interleaving; without std
    // the panic handler is the platform's way to stop.
    #[allow(unreachable_code)]
    {
        panic!("vmem: internal error: {what}");
    }
}

impl State<'_> {
    // ---- tag cache (`bt_alloc`, `bt_free`, `bt_save`, `bt_restore`)

    /// Pops a spare tag. `bt_fill` guaranteed enough before any mutation; an
    /// empty cache here is a broken invariant, never a runtime condition.
    #[inline]
    fn bt_alloc(&mut self) -> Tag {
        let Some(t) = self.freetags.filter(|_| self.nfreetags > 0) else {
            bug("boundary tag cache empty: tags were not secured before mutation");
        };
        self.freetags = t.link_next();
        self.nfreetags -= 1;
        t
    }

    #[inline]
    fn bt_free(&mut self, t: Tag) {
        t.set_link_next(self.freetags);
        self.freetags = Some(t);
        self.nfreetags += 1;
    }

    /// Adopts a tag fresh from the tag source.
    fn bt_adopt(&mut self, t: Tag) {
        self.ntags += 1;
        self.bt_free(t);
    }

    /// Hides `BT_MAXALLOC` tags from other threads across an unlock.
    fn bt_save(&mut self) {
        if self.nfreetags < BT_MAXALLOC {
            bug("bt_save without BT_MAXALLOC free tags");
        }
        self.nfreetags -= BT_MAXALLOC;
    }

    fn bt_restore(&mut self) {
        self.nfreetags += BT_MAXALLOC;
    }

    /// Takes the spares beyond `limit` off the cache, as a chain to hand
    /// back to the tag source once the lock is dropped.
    fn bt_trim(&mut self, limit: usize) -> Option<Tag> {
        let mut chain = None;
        while self.nfreetags > limit {
            let t = self.bt_alloc();
            self.ntags -= 1;
            t.set_link_next(chain);
            chain = Some(t);
        }
        chain
    }

    // ---- segment list

    fn seg_link(&mut self, t: Tag, prev: Option<Tag>, next: Option<Tag>) {
        t.set_seg_prev(prev);
        t.set_seg_next(next);
        match prev {
            Some(p) => p.set_seg_next(Some(t)),
            None => self.seg_head = Some(t),
        }
        match next {
            Some(n) => n.set_seg_prev(Some(t)),
            None => self.seg_tail = Some(t),
        }
    }

    fn seg_insert_before(&mut self, t: Tag, next: Tag) {
        self.seg_link(t, next.seg_prev(), Some(next));
    }

    fn seg_insert_after(&mut self, t: Tag, prev: Tag) {
        self.seg_link(t, Some(prev), prev.seg_next());
    }

    fn seg_push_back(&mut self, t: Tag) {
        self.seg_link(t, self.seg_tail, None);
    }

    pub(crate) fn seg_unlink(&mut self, t: Tag) {
        let (prev, next) = (t.seg_prev(), t.seg_next());
        match prev {
            Some(p) => p.set_seg_next(next),
            None => self.seg_head = next,
        }
        match next {
            Some(n) => n.set_seg_prev(prev),
            None => self.seg_tail = prev,
        }
    }

    /// Removes a segment and keeps its tag as a spare (`bt_remseg`).
    fn remseg(&mut self, t: Tag) {
        debug_assert!(t.kind() != SegmentKind::Cursor);
        self.seg_unlink(t);
        self.bt_free(t);
    }

    // ---- freelists

    #[inline]
    fn insfree(&mut self, t: Tag) {
        debug_assert_eq!(t.kind(), SegmentKind::Free);
        let bin = bin_of(t.size() >> self.qshift);
        let head = self.free.head(bin);
        t.set_bin(bin as u16);
        t.set_link_prev(None);
        t.set_link_next(head);
        if let Some(h) = head {
            h.set_link_prev(Some(t));
        }
        self.free.set_head(bin, Some(t));
    }

    #[inline]
    fn remfree(&mut self, t: Tag) {
        debug_assert_eq!(t.kind(), SegmentKind::Free);
        let (prev, next) = (t.link_prev(), t.link_next());
        if let Some(n) = next {
            n.set_link_prev(prev);
        }
        match prev {
            Some(p) => p.set_link_next(next),
            None => self.free.set_head(t.bin() as usize, next),
        }
    }

    // ---- busy hash

    #[inline]
    fn insbusy(&mut self, t: Tag) {
        debug_assert_eq!(t.kind(), SegmentKind::Busy);
        self.hash.insert(t);
        self.nbusytag += 1;
        self.inuse += t.size();
    }

    #[inline]
    fn rembusy(&mut self, t: Tag) {
        self.hash.remove(t);
        self.nbusytag -= 1;
        self.inuse -= t.size();
    }

    // ---- placement

    /// Searches the freelists (`vmem_xalloc`'s scan). Instant fit looks at
    /// the head of each list on which every segment is large enough; best
    /// fit scans every segment from the list that may hold `size` upward.
    /// The bitmap of non-empty lists makes skipping empty lists O(1).
    ///
    /// `plain` says that `c` constrains nothing beyond the quantum: the
    /// placement is then the segment's start, with no arithmetic.
    #[inline]
    fn find_fit(
        &self,
        size: usize,
        c: &Constraints,
        instant: bool,
        plain: bool,
    ) -> Option<(Tag, usize)> {
        let mut next = self
            .free
            .next_nonempty(first_bin(size >> self.qshift, instant));
        while let Some(bin) = next {
            let mut cur = self.free.head(bin);
            while let Some(t) = cur {
                if t.size() >= size {
                    if plain {
                        return Some((t, t.start()));
                    }
                    if let Some(addr) = fit(t.start(), t.size(), size, c) {
                        return Some((t, addr));
                    }
                }
                if instant {
                    break;
                }
                cur = t.link_next();
            }
            next = self.free.next_nonempty(bin + 1);
        }
        None
    }

    /// Carves `[start, start + size)` out of the free segment `t`
    /// (`vmem_clip`); uses at most two spare tags. Returns the busy tag.
    fn clip(&mut self, t: Tag, start: usize, size: usize) -> Tag {
        debug_assert!(t.kind() == SegmentKind::Free && t.size() >= size);
        self.remfree(t);
        if t.start() != start {
            let front = self.bt_alloc();
            front.set_kind(SegmentKind::Free);
            front.set_start(t.start());
            front.set_size(start - t.start());
            t.set_start(start);
            t.set_size(t.size() - front.size());
            self.insfree(front);
            self.seg_insert_before(front, t);
        }
        if t.size() != size {
            let busy = self.bt_alloc();
            busy.set_kind(SegmentKind::Busy);
            busy.set_start(start);
            busy.set_size(size);
            t.set_start(start + size);
            t.set_size(t.size() - size);
            self.insfree(t);
            self.seg_insert_before(busy, t);
            self.insbusy(busy);
            busy
        } else {
            t.set_kind(SegmentKind::Busy);
            self.insbusy(t);
            t
        }
    }

    /// Where a span starting at `addr` goes in the address-ordered list:
    /// before the returned tag, or at the end for `None`. Spans do not
    /// overlap, so this is after every tag starting below `addr` and before
    /// every tag starting above it. The list is searched from both ends at
    /// once, so spans arriving in address order (either direction, as mmap
    /// tends to hand them out) are placed in O(1).
    fn span_position(&self, addr: usize) -> Option<Tag> {
        let (mut fwd, mut back) = (self.seg_head, self.seg_tail);
        loop {
            let f = fwd?; // the forward walk ran off the end: append
            if f.kind() != SegmentKind::Cursor && f.start() > addr {
                return Some(f);
            }
            match back {
                // The backward walk ran off the front: everything starts above.
                None => return self.seg_head,
                Some(b) if b.kind() != SegmentKind::Cursor && b.start() < addr => {
                    return b.seg_next()
                }
                Some(b) => back = b.seg_prev(),
            }
            fwd = f.seg_next();
        }
    }

    /// Adds a span of free space (`vmem_add1`) at its place in address
    /// order; uses at most two spare tags. An arena that never releases spans
    /// extends a segment contiguous with the new space instead of adding a
    /// span tag, so the space can coalesce.
    fn add_span(&mut self, addr: usize, size: usize, kind: SegmentKind, releases: bool) {
        let next = self.span_position(addr);
        let before = match next {
            Some(n) => n.seg_prev(),
            None => self.seg_tail,
        };
        let prev = before.filter(|t| {
            !releases
                && matches!(t.kind(), SegmentKind::Busy | SegmentKind::Free)
                && t.end().checked_add(1) == Some(addr)
        });
        let link = |state: &mut Self, t: Tag| match next {
            Some(n) => state.seg_insert_before(t, n),
            None => state.seg_push_back(t),
        };
        match prev {
            Some(p) if p.kind() == SegmentKind::Free => {
                self.remfree(p);
                p.set_size(p.size() + size);
                self.insfree(p);
            }
            _ => {
                if prev.is_none() {
                    let span = self.bt_alloc();
                    span.set_kind(kind);
                    span.set_start(addr);
                    span.set_size(size);
                    link(self, span);
                }
                let free = self.bt_alloc();
                free.set_kind(SegmentKind::Free);
                free.set_start(addr);
                free.set_size(size);
                link(self, free);
                self.insfree(free);
            }
        }
        self.size += size;
    }

    /// If the free segment `t` makes its imported span wholly free, removes
    /// the span from the arena and returns it for release
    /// (`vmem_try_release`).
    ///
    /// The next-fit cursor splits free space, so a wholly free span may be
    /// two free segments with the cursor between them (or the cursor right
    /// after the span tag). FreeBSD then keeps the span until a next-fit
    /// allocation merges around the cursor; here it is released, and the
    /// cursor keeps its place between the span's neighbours.
    fn try_release(&mut self, t: Tag, on_freelist: bool) -> Option<(usize, usize)> {
        let is_cursor = |x: &Tag| x.kind() == SegmentKind::Cursor;
        // Whether the free segments `x` and `y` are adjacent, `x` first.
        let adjacent_free = |x: Tag, y: Tag| {
            x.kind() == SegmentKind::Free
                && y.kind() == SegmentKind::Free
                && x.end().checked_add(1) == Some(y.start())
        };
        // Free segments beyond a cursor on either side, adjacent to `t`.
        let left = t
            .seg_prev()
            .filter(is_cursor)
            .and_then(|c| c.seg_prev())
            .filter(|l| adjacent_free(*l, t));
        let right = t
            .seg_next()
            .filter(is_cursor)
            .and_then(|c| c.seg_next())
            .filter(|r| adjacent_free(t, *r));
        let first = left.unwrap_or(t);
        let last = right.unwrap_or(t);
        let span = first
            .seg_prev()
            .and_then(|p| if is_cursor(&p) { p.seg_prev() } else { Some(p) })?;
        let run = last.end() - first.start() + 1;
        if span.kind() != SegmentKind::Span || span.start() != first.start() || span.size() != run {
            return None;
        }
        let released = (span.start(), span.size());
        if on_freelist {
            self.remfree(t);
        }
        self.remseg(t);
        for other in [left, right].into_iter().flatten() {
            self.remfree(other);
            self.remseg(other);
        }
        self.remseg(span);
        self.size -= released.1;
        Some(released)
    }

    /// Whether `[addr, addr + size)` intersects managed space.
    fn overlaps(&self, addr: usize, size: usize) -> bool {
        let last = addr + (size - 1);
        let mut cur = self.seg_head;
        while let Some(t) = cur {
            if matches!(t.kind(), SegmentKind::Free | SegmentKind::Busy)
                && t.start() <= last
                && addr <= t.end()
            {
                return true;
            }
            cur = t.seg_next();
        }
        false
    }
}

/// A vmem arena: a set of integer ranges (addresses, IDs) handed out in
/// multiples of a quantum, with boundary tags, O(1) instant fit, best fit,
/// next fit, constrained allocation, spans imported from a [`Source`], and
/// an optional [`QuantumCache`] in front.
///
/// Build one with [`Arena::builder`]. The arena owns no memory of the
/// ranges it manages: they are just integers to it.
pub struct Arena<'a> {
    // constant after create
    name: Name,
    quantum_shift: u32,
    quantum_mask: usize,
    qcache_max: usize,
    qcache: Option<&'a dyn QuantumCache>,
    source: Option<&'a dyn Source>,
    import_quantum: usize,
    /// Largest import that geometric growth asks for (0: none).
    import_growth_max: usize,
    tags: &'a dyn TagSource,
    tag_reserve: bool,
    // under the arena lock
    pub(crate) state: Mutex<State<'a>>,
    // sleepers waiting for space (`vm_cv`)
    cv: Condvar,
}

/// Builds an [`Arena`] (the arguments of `vmem_create`, `vmem_set_import`,
/// `vmem_set_limit` and `vmem_set_reclaim` in one place).
pub struct ArenaBuilder<'a> {
    name: Name,
    quantum: usize,
    span: Option<(usize, usize)>,
    qcache: Option<(usize, &'a dyn QuantumCache)>,
    source: Option<(&'a dyn Source, usize)>,
    import_growth_max: usize,
    tags: Option<&'a dyn TagSource>,
    tag_reserve: bool,
    limit: usize,
    reclaim: Option<&'a (dyn Fn(Flags) + Sync)>,
}

impl fmt::Debug for ArenaBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArenaBuilder")
            .field("name", &self.name)
            .field("quantum", &self.quantum)
            .field("span", &self.span)
            .field("qcache_max", &self.qcache.map(|q| q.0))
            .field("import_quantum", &self.source.map(|s| s.1))
            .field("tag_reserve", &self.tag_reserve)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<'a> ArenaBuilder<'a> {
    /// The allocation unit, a power of two (default 1).
    pub fn quantum(mut self, quantum: usize) -> Self {
        self.quantum = quantum;
        self
    }

    /// An initial static span `[base, base + size)` (never released).
    pub fn span(mut self, base: usize, size: usize) -> Self {
        self.span = Some((base, size));
        self
    }

    /// Sends `alloc`/`free` of sizes up to `max` bytes (rounded down to a
    /// multiple of the quantum, at most [`QCACHE_MAX_CLASSES`] quanta) to
    /// `cache` (FreeBSD `qcache_max`).
    pub fn qcache(mut self, max: usize, cache: &'a dyn QuantumCache) -> Self {
        self.qcache = Some((max, cache));
        self
    }

    /// Imports spans from `source` when out of space, in multiples of
    /// `import_quantum` bytes (0: the quantum), and releases wholly free
    /// imported spans back to it (`vmem_set_import`).
    pub fn source(mut self, source: &'a dyn Source, import_quantum: usize) -> Self {
        self.source = Some((source, import_quantum));
        self
    }

    /// Geometric imports: a request of more than two import quanta
    /// imports at least a quarter of the arena's size (rounded to the
    /// import quantum), up to `max` bytes, so that very large segments
    /// share spans and their frees coalesce, as jemalloc's retained
    /// extents do, instead of each taking (and giving back) a span of its
    /// own. Smaller requests import what they need as before: their spans,
    /// which a few long-lived segments may pin, stay small, and a span
    /// that a freed segment leaves wholly free is one the next request of
    /// that size can take back whole (a grown span given back whole would
    /// have to be imported again). When a grown import
    /// fails, or would pass the arena's limit, the arena asks for what the
    /// request needs. Spans are still released whole once wholly free. 0
    /// (the default) imports what the request needs.
    pub fn import_growth(mut self, max: usize) -> Self {
        self.import_growth_max = max;
        self
    }

    /// Where boundary tags come from (default: [`crate::STANDALONE_TAGS`]).
    pub fn tag_source(mut self, tags: &'a dyn TagSource) -> Self {
        self.tags = Some(tags);
        self
    }

    /// Lets this arena pass [`Flags::USE_RESERVE`] to its tag source. Only
    /// the arenas that new tags' pages come from (FreeBSD: the kernel arena
    /// and arenas importing from it) may dip into the tag reserve.
    pub fn tag_reserve(mut self, allowed: bool) -> Self {
        self.tag_reserve = allowed;
        self
    }

    /// Caps the arena's total size, imports included (`vmem_set_limit`);
    /// 0 means no limit.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Called, without the arena lock, before an allocation sleeps or fails
    /// for lack of space (`vmem_set_reclaim`).
    pub fn reclaim(mut self, reclaim: &'a (dyn Fn(Flags) + Sync)) -> Self {
        self.reclaim = Some(reclaim);
        self
    }

    /// Creates the arena (`vmem_create`). Fails on a bad quantum or import
    /// quantum, a bad initial span, or no tags for the next-fit cursor.
    pub fn build(self) -> Result<Arena<'a>, Error> {
        let quantum = self.quantum;
        if !quantum.is_power_of_two() {
            return Err(Error::BadQuantum { quantum });
        }
        let mask = quantum - 1;
        #[cfg(all(not(loom), feature = "std"))]
        let tags = self.tags.unwrap_or(&crate::btag::STANDALONE_TAGS);
        #[cfg(any(loom, not(feature = "std")))]
        let tags = self.tags.ok_or(Error::NoTagSource)?;
        let (source, import_quantum) = match self.source {
            Some((s, iq)) => {
                let iq = if iq == 0 { quantum } else { iq };
                if iq & mask != 0 {
                    return Err(Error::Unaligned {
                        arena: self.name,
                        value: iq,
                        quantum,
                    });
                }
                (Some(s), iq)
            }
            None => (None, quantum),
        };
        let (qcache_max, qcache) = match self.qcache {
            Some((max, cache)) => {
                let classes = (max >> quantum.trailing_zeros()).min(QCACHE_MAX_CLASSES);
                (
                    classes << quantum.trailing_zeros(),
                    (classes > 0).then_some(cache),
                )
            }
            None => (0, None),
        };
        let cursor_mem = tags
            .alloc_tag(Flags::NOWAIT)
            .ok_or(Error::NoMemory { arena: self.name })?;
        // SAFETY: fresh tag memory from the source, owned by this arena.
        let cursor = unsafe { Tag::init(cursor_mem) };
        cursor.set_kind(SegmentKind::Cursor);
        let mut state = State {
            qshift: quantum.trailing_zeros(),
            seg_head: None,
            seg_tail: None,
            cursor,
            free: Freelists::new(),
            hash: BusyHash::new(),
            rehashing: false,
            freetags: None,
            nfreetags: 0,
            ntags: 1,
            nbusytag: 0,
            inuse: 0,
            size: 0,
            limit: self.limit,
            reclaim: self.reclaim,
            sleepers: 0,
        };
        state.seg_push_back(cursor);
        let arena = Arena {
            name: self.name,
            quantum_shift: quantum.trailing_zeros(),
            quantum_mask: mask,
            qcache_max,
            qcache,
            source,
            import_quantum,
            import_growth_max: self.import_growth_max,
            tags,
            tag_reserve: self.tag_reserve,
            state: Mutex::new(state),
            cv: Condvar::new(),
        };
        if let Some((base, size)) = self.span {
            arena.add(base, size, Flags::NOWAIT)?;
        }
        Ok(arena)
    }
}

impl<'a> Arena<'a> {
    /// Starts building an arena called `name` (truncated to [`Name::MAX`]
    /// bytes).
    pub fn builder(name: &str) -> ArenaBuilder<'a> {
        ArenaBuilder {
            name: Name::new(name),
            quantum: 1,
            span: None,
            qcache: None,
            source: None,
            import_growth_max: 0,
            tags: None,
            tag_reserve: false,
            limit: 0,
            reclaim: None,
        }
    }

    /// The arena's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The allocation unit.
    pub fn quantum(&self) -> usize {
        self.quantum_mask + 1
    }

    /// Largest size served by the quantum cache (0: none).
    pub fn qcache_max(&self) -> usize {
        self.qcache_max
    }

    /// `size` rounded up to the quantum (`vmem_roundup_size`).
    pub fn roundup_size(&self, size: usize) -> Option<usize> {
        Some(size.checked_add(self.quantum_mask)? & !self.quantum_mask)
    }

    /// The quantum-cache class (number of quanta) of a non-zero size.
    #[inline]
    fn qcache_class(&self, size: usize) -> usize {
        ((size - 1) >> self.quantum_shift) + 1
    }

    fn checked_size(&self, size: usize) -> Result<usize, Error> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        self.roundup_size(size).ok_or(Error::TooLarge { size })
    }

    fn no_memory(&self) -> Error {
        Error::NoMemory { arena: self.name }
    }

    /// Changes the size cap (`vmem_set_limit`); 0 means none.
    pub fn set_limit(&self, limit: usize) {
        self.state.lock().limit = limit;
        self.cv.notify_all();
    }

    /// Sets or clears the reclaim callback (`vmem_set_reclaim`).
    pub fn set_reclaim(&self, reclaim: Option<&'a (dyn Fn(Flags) + Sync)>) {
        self.state.lock().reclaim = reclaim;
    }

    // ---- unlocking

    /// Wakes the threads asleep waiting for space, if any. Called with the
    /// lock held: a sleeper counts itself under the lock before it waits,
    /// and the condition variable registers the wait before it drops the
    /// lock, so no sleeper is missed.
    #[inline]
    fn wake(&self, g: &Guard<'_, 'a>) {
        if g.sleepers != 0 {
            self.cv.notify_all();
        }
    }

    /// Drops the lock after an operation: hands surplus spare tags (beyond
    /// `trim`) back to the tag source and resizes the busy hash if it
    /// crossed a threshold, both without the lock.
    #[inline]
    fn unlock(&self, g: Guard<'_, 'a>, trim: Option<usize>) {
        // The common case: nothing to hand back, no resize due.
        if trim.is_none_or(|limit| g.nfreetags <= limit) && !g.hash.may_want_resize(g.nbusytag) {
            drop(g);
            return;
        }
        self.unlock_slow(g, trim);
    }

    #[cold]
    #[inline(never)]
    fn unlock_slow(&self, mut g: Guard<'_, 'a>, trim: Option<usize>) {
        let surplus = trim.and_then(|limit| g.bt_trim(limit));
        let resize = if g.rehashing {
            None
        } else {
            g.hash.resize_wanted(g.nbusytag)
        };
        if resize.is_some() {
            g.rehashing = true;
        }
        drop(g);
        self.free_chain(surplus);
        if let Some(size) = resize {
            self.rehash(size);
        }
    }

    /// Hands every spare boundary tag the arena caches back to its tag
    /// source (a reclaim). The next operation secures fresh ones; with a
    /// slab-allocated source (kmem's btag zone, which allocates from its
    /// fullest slab first) that moves the spares out of sparse slabs, which
    /// can then be freed. Returns the number of tags handed back. Tags set
    /// aside by operations in progress (`bt_save`) are not touched.
    pub fn release_spare_tags(&self) -> usize {
        let g = self.state.lock();
        let n = g.nfreetags;
        self.unlock(g, Some(0));
        n
    }

    /// Returns a chain of tags (linked through `link_next`) to the source.
    fn free_chain(&self, mut chain: Option<Tag>) {
        while let Some(t) = chain {
            chain = t.link_next();
            // SAFETY: the tag came from this source and was taken off every
            // arena list under the lock; nothing refers to it any more.
            unsafe { self.tags.free_tag(t.into_raw()) };
        }
    }

    /// Resizes the busy hash (`vmem_rehash`): maps the new table unlocked,
    /// moves the chains under the lock, unmaps the old table unlocked.
    fn rehash(&self, size: usize) {
        let table = BusyHash::new_table(size, self.tags);
        let mut g = self.state.lock();
        let old = match table {
            Some(t) => Some(g.hash.install(t)),
            None => {
                let nbusy = g.nbusytag;
                g.hash.declined(nbusy);
                None
            }
        };
        g.rehashing = false;
        drop(g);
        if let Some(old) = old {
            // SAFETY: `install` moved every chain out of the old table.
            unsafe { BusyHash::free_table(old, self.tags) };
        }
    }

    // ---- tags (`bt_fill`)

    /// Secures `BT_MAXALLOC` spare tags before any mutation. Returns whether
    /// it succeeded. May drop and retake the lock (only when the cache is
    /// short); the caller re-reads whatever it had looked at.
    #[inline]
    fn fill_tags<'g>(&'g self, g: Guard<'g, 'a>, flags: Flags) -> (Guard<'g, 'a>, bool) {
        if g.nfreetags >= BT_MAXALLOC {
            return (g, true);
        }
        self.fill_tags_slow(g, flags)
    }

    #[cold]
    #[inline(never)]
    fn fill_tags_slow<'g>(&'g self, mut g: Guard<'g, 'a>, flags: Flags) -> (Guard<'g, 'a>, bool) {
        let mut flags = flags & Flags::BT_FLAGS;
        if !self.tag_reserve {
            flags = flags.without(Flags::USE_RESERVE);
        }
        // First a no-sleep, no-recursion try with the lock held (which also
        // keeps concurrent fills from stampeding), then the caller's flags
        // without the lock.
        let quick = (flags & Flags::USE_RESERVE) | Flags::NOWAIT | Flags::NOVM;
        while g.nfreetags < BT_MAXALLOC {
            let mem = match self.tags.alloc_tag(quick) {
                Some(mem) => mem,
                None => {
                    drop(g);
                    let mem = self.tags.alloc_tag(flags);
                    g = self.state.lock();
                    match mem {
                        Some(mem) => mem,
                        None => break,
                    }
                }
            };
            // SAFETY: fresh tag memory from our source, now owned by us.
            g.bt_adopt(unsafe { Tag::init(mem) });
        }
        let ok = g.nfreetags >= BT_MAXALLOC;
        (g, ok)
    }

    // ---- allocation

    /// Allocates `size` bytes (rounded up to the quantum) with the policy in
    /// `flags` (`vmem_alloc`). Sizes up to [`Arena::qcache_max`] are served by
    /// the quantum cache when it has one.
    pub fn alloc(&self, size: usize, flags: Flags) -> Result<usize, Error> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if size <= self.qcache_max {
            if let Some(qc) = self.qcache {
                flags.validate()?;
                let class = self.qcache_class(size);
                // The cache never sleeps: on a miss, `xalloc` below may.
                let quick = flags.without(Flags::WAITOK).with(Flags::NOWAIT);
                if let Some(addr) = qc.alloc(self, class, quick) {
                    return Ok(addr);
                }
            }
        }
        self.xalloc(size, &Constraints::NONE, flags)
    }

    /// Allocates `size` bytes under placement constraints (`vmem_xalloc`).
    /// Never uses the quantum cache.
    ///
    /// `WAITOK` sleeps until the request can be met (so it waits forever for
    /// a request no space could ever meet); `NOWAIT` fails with
    /// [`Error::NoMemory`] after trying an import and the reclaim hooks.
    pub fn xalloc(&self, size: usize, c: &Constraints, flags: Flags) -> Result<usize, Error> {
        let policy = flags.validate()?;
        let size = self.checked_size(size)?;
        let c = c.validate(size, self.quantum())?;
        let g = self.state.lock();
        match policy {
            Policy::Next => self.xalloc_nextfit(g, size, &c, flags),
            _ => self.xalloc_fit(g, size, &c, flags, policy == Policy::Instant),
        }
    }

    /// Whether validated constraints ask for nothing beyond the quantum.
    #[inline]
    fn is_plain(&self, c: &Constraints) -> bool {
        c.align == self.quantum()
            && c.phase == 0
            && c.nocross == 0
            && c.min_addr == 0
            && c.max_addr == usize::MAX
    }

    /// Allocates exactly `[addr, addr + size)` if all of it lies in one free
    /// segment now, else fails with [`Error::NoMemory`]; never imports,
    /// reclaims, drains the quantum cache or sleeps (`WAITOK` is ignored).
    /// Free it with [`Arena::xfree`].
    ///
    /// FreeBSD has no counterpart; it is how a layer above takes a free
    /// range it knows about back out of the arena to work on it (kmem
    /// purges dirty free pages this way) without racing other allocations.
    pub fn claim(&self, addr: usize, size: usize, flags: Flags) -> Result<(), Error> {
        let flags = flags.without(Flags::WAITOK).with(Flags::NOWAIT);
        flags.validate()?;
        let size = self.checked_size(size)?;
        let last = addr.checked_add(size - 1).ok_or(Error::TooLarge { size })?;
        let c = Constraints::new()
            .range(addr, last)
            .validate(size, self.quantum())?;
        if addr & self.quantum_mask != 0 {
            return Err(Error::Unaligned {
                arena: self.name,
                value: addr,
                quantum: self.quantum(),
            });
        }
        let mut new_round = true;
        let mut g = self.begin_round(self.state.lock(), flags, &mut new_round)?;
        match g.find_fit(size, &c, false, false) {
            Some((t, start)) if start == addr => {
                g.clip(t, addr, size);
                self.unlock(g, None);
                Ok(())
            }
            _ => {
                self.unlock(g, None);
                Err(self.no_memory())
            }
        }
    }

    fn xalloc_fit<'g>(
        &'g self,
        mut g: Guard<'g, 'a>,
        size: usize,
        c: &Constraints,
        flags: Flags,
        mut instant: bool,
    ) -> Result<usize, Error> {
        // Tags are secured at the start of each round (a round ends when a
        // WAITOK caller sleeps). Within a round the lock is only dropped with
        // them hidden, and an import uses two of the four, leaving two for the
        // clip: so the search right after an import runs in the same lock hold
        // and no other thread can take the span first.
        let plain = self.is_plain(c);
        let mut imported = false;
        let mut new_round = true;
        loop {
            g = self.begin_round(g, flags, &mut new_round)?;
            if let Some((t, addr)) = g.find_fit(size, c, instant, plain) {
                g.clip(t, addr, size);
                self.unlock(g, None);
                return Ok(addr);
            }
            if instant {
                // Instant fit only looked at list heads: retry as best fit.
                instant = false;
                continue;
            }
            let (g2, retry) = self.try_fetch(g, size, c, flags, &mut imported);
            g = g2;
            if !retry {
                return Err(self.no_memory());
            }
            new_round = !imported;
        }
    }

    /// Secures `BT_MAXALLOC` tags if a new round is starting (see
    /// `xalloc_fit`); fails only if the tag source cannot supply them.
    #[inline]
    fn begin_round<'g>(
        &'g self,
        g: Guard<'g, 'a>,
        flags: Flags,
        new_round: &mut bool,
    ) -> Result<Guard<'g, 'a>, Error> {
        if !*new_round {
            return Ok(g);
        }
        let (g, ok) = self.fill_tags(g, flags);
        if !ok {
            return Err(self.no_memory());
        }
        *new_round = false;
        Ok(g)
    }

    /// Next fit (`vmem_xalloc_nextfit`): walk the segment list from the
    /// cursor, wrapping around, and leave the cursor after the allocation.
    fn xalloc_nextfit<'g>(
        &'g self,
        mut g: Guard<'g, 'a>,
        size: usize,
        c: &Constraints,
        flags: Flags,
    ) -> Result<usize, Error> {
        // Tags as in `xalloc_fit`; releasing a span below drops the lock
        // without hiding them, so the next search starts a new round.
        let mut imported = false;
        let mut new_round = true;
        loop {
            g = self.begin_round(g, flags, &mut new_round)?;
            let cursor = g.cursor;
            let mut found: Option<(Tag, usize)> = None;
            let mut cur = cursor.seg_next();
            // Walk from the cursor, wrapping at the end (the list always
            // holds the cursor, so it is never empty).
            while let Some(t) = cur.or(g.seg_head) {
                if t == cursor {
                    break;
                }
                if t.kind() == SegmentKind::Free && t.size() >= size {
                    if let Some(addr) = fit(t.start(), t.size(), size, c) {
                        found = Some((g.clip(t, addr, size), addr));
                        break;
                    }
                }
                cur = t.seg_next();
            }
            // The cursor splits free space; merge the free segments on
            // either side of it, then try the merged one.
            let around = cursor.seg_prev().zip(cursor.seg_next());
            if let Some((prev, next)) = around.filter(|(p, n)| {
                p.kind() == SegmentKind::Free
                    && n.kind() == SegmentKind::Free
                    && p.end().checked_add(1) == Some(n.start())
            }) {
                g.remfree(prev);
                g.remfree(next);
                prev.set_size(prev.size() + next.size());
                g.remseg(next);
                g.insfree(prev);
                let refit = match found {
                    None if prev.size() >= size => fit(prev.start(), prev.size(), size, c),
                    _ => None,
                };
                if let Some(addr) = refit {
                    found = Some((g.clip(prev, addr, size), addr));
                } else if let Some((span, span_size)) = g.try_release(prev, true) {
                    self.wake(&g);
                    self.unlock(g, Some(BT_MAXFREE));
                    self.release_span(span, span_size);
                    g = self.state.lock();
                    new_round = true;
                }
            }
            if let Some((busy, addr)) = found {
                let cursor = g.cursor;
                g.seg_unlink(cursor);
                g.seg_insert_after(cursor, busy);
                self.unlock(g, None);
                return Ok(addr);
            }
            if new_round {
                continue; // re-secure tags before importing
            }
            let (g2, retry) = self.try_fetch(g, size, c, flags, &mut imported);
            g = g2;
            if !retry {
                return Err(self.no_memory());
            }
            new_round = !imported;
        }
    }

    /// Brings space in after a failed search (`vmem_try_fetch`): import once
    /// per round, else drain the quantum cache and run the reclaim callback,
    /// else sleep (`WAITOK`) or give up (`NOWAIT`). Returns whether to search
    /// again. May drop the lock (with `BT_MAXALLOC` tags hidden).
    fn try_fetch<'g>(
        &'g self,
        mut g: Guard<'g, 'a>,
        size: usize,
        c: &Constraints,
        flags: Flags,
        imported: &mut bool,
    ) -> (Guard<'g, 'a>, bool) {
        if let Some(source) = self.source.filter(|_| !*imported) {
            // At most one import per round: the round secured tags for one.
            *imported = true;
            let (g2, ok) = self.import(g, source, size, c, flags);
            g = g2;
            if ok {
                return (g, true);
            }
        }
        // The steps below hide BT_MAXALLOC tags while the lock is dropped.
        // After an import whose span the search then could not use (it
        // ignores nocross and the address range), the round has only the
        // two tags the span left: secure a full set again.
        let (g2, ok) = self.fill_tags(g, flags);
        g = g2;
        if !ok {
            return (g, false);
        }
        let reclaim = g.reclaim;
        if self.qcache.is_some() || reclaim.is_some() {
            let avail = g.size - g.inuse;
            g.bt_save();
            drop(g);
            if let Some(qc) = self.qcache {
                qc.drain(self);
            }
            if let Some(reclaim) = reclaim {
                reclaim(flags);
            }
            g = self.state.lock();
            g.bt_restore();
            if g.size - g.inuse > avail {
                // Something came back: search again, even for NOWAIT.
                return (g, true);
            }
        }
        if flags.contains(Flags::NOWAIT) {
            return (g, false);
        }
        g.bt_save();
        g.sleepers += 1;
        g = self.cv.wait_timeout(g, WAIT_RETRY).0;
        g.sleepers -= 1;
        g.bt_restore();
        // A new round: tags are re-secured and one more import is allowed.
        *imported = false;
        (g, true)
    }

    /// Imports a span covering `size` at `align` from the source
    /// (`vmem_import`); the lock is dropped around the call with
    /// `BT_MAXALLOC` tags hidden, and the span uses two of them.
    fn import<'g>(
        &'g self,
        mut g: Guard<'g, 'a>,
        source: &dyn Source,
        size: usize,
        c: &Constraints,
        flags: Flags,
    ) -> (Guard<'g, 'a>, bool) {
        // To be sure an aligned placement exists, ask for two alignments
        // more than the size (FreeBSD's slight overestimate).
        let align = c.align;
        let want = if align != self.quantum() {
            align.checked_mul(2).and_then(|a| a.checked_add(size))
        } else {
            Some(size)
        };
        let Some(need) = want.and_then(|w| w.checked_next_multiple_of(self.import_quantum)) else {
            return (g, false);
        };
        let within = |g: &Guard<'_, '_>, w: usize| {
            g.limit == 0 || g.size.checked_add(w).is_some_and(|total| total <= g.limit)
        };
        if !within(&g, need) {
            return (g, false);
        }
        // Geometric growth (see `ArenaBuilder::import_growth`), for
        // requests of more than two import quanta.
        let grown = if size <= 2 * self.import_quantum {
            0
        } else {
            g.size / 4
        };
        let grown = grown
            .min(self.import_growth_max)
            .checked_next_multiple_of(self.import_quantum)
            .unwrap_or(0);
        let mut want = need;
        if grown > need && within(&g, grown) {
            want = grown;
        }
        g.bt_save();
        drop(g);
        let mut got = source.import(want, flags);
        if got.is_none() && want > need {
            want = need;
            got = source.import(want, flags);
        }
        if let Some(addr) = got {
            // A span the request cannot use (its address window or
            // boundary excludes it) would stay wholly free and never be
            // released: hand it straight back.
            if addr & self.quantum_mask == 0
                && addr.checked_add(want - 1).is_some()
                && fit(addr, want, size, c).is_none()
            {
                source.release(addr, want);
                got = None;
            }
        }
        let mut g = self.state.lock();
        g.bt_restore();
        match got {
            Some(addr) => {
                if addr & self.quantum_mask != 0 || addr.checked_add(want - 1).is_none() {
                    bug("import source returned a misaligned or wrapping span");
                }
                g.add_span(addr, want, SegmentKind::Span, true);
                (g, true)
            }
            None => (g, false),
        }
    }

    /// Hands a span removed from the arena back to its source.
    fn release_span(&self, addr: usize, size: usize) {
        match self.source {
            Some(source) => source.release(addr, size),
            None => bug("released a span with no source"),
        }
    }

    // ---- free

    /// Frees a segment allocated by [`Arena::alloc`] (`vmem_free`): through
    /// the quantum cache for cacheable sizes, else as [`Arena::xfree`].
    ///
    /// Frees that go to the quantum cache are checked only when the cache
    /// hands the segment back to the arena, not here.
    pub fn free(&self, addr: usize, size: usize) -> Result<(), Error> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if size <= self.qcache_max && addr >= QCACHE_MIN_ADDR {
            if let Some(qc) = self.qcache {
                let class = self.qcache_class(size);
                qc.free(self, class, addr);
                return Ok(());
            }
        }
        self.xfree(addr, size)
    }

    /// Frees a segment (`vmem_xfree`): coalesces with free neighbours, and
    /// releases the span to the source if it became wholly free. `size` must
    /// match the allocation (after rounding to the quantum).
    pub fn xfree(&self, addr: usize, size: usize) -> Result<(), Error> {
        let size = self.checked_size(size)?;
        let mut g = self.state.lock();
        let Some(t) = g.hash.lookup(addr) else {
            return Err(Error::NotAllocated {
                arena: self.name,
                addr,
            });
        };
        if t.size() != size {
            return Err(Error::SizeMismatch {
                arena: self.name,
                addr,
                size,
                allocated: t.size(),
            });
        }
        g.rembusy(t);
        t.set_kind(SegmentKind::Free);
        if let Some(next) = t.seg_next().filter(|n| n.kind() == SegmentKind::Free) {
            t.set_size(t.size() + next.size());
            g.remfree(next);
            g.remseg(next);
        }
        if let Some(prev) = t.seg_prev().filter(|p| p.kind() == SegmentKind::Free) {
            t.set_size(t.size() + prev.size());
            t.set_start(prev.start());
            g.remfree(prev);
            g.remseg(prev);
        }
        let released = if self.source.is_some() {
            g.try_release(t, false)
        } else {
            None
        };
        if released.is_none() {
            g.insfree(t);
        }
        self.wake(&g);
        self.unlock(g, Some(BT_MAXFREE));
        if let Some((span, span_size)) = released {
            self.release_span(span, span_size);
        }
        Ok(())
    }

    // ---- spans

    /// Adds the static span `[addr, addr + size)` (`vmem_add`). Static spans
    /// are never released. Address 0 is allowed.
    pub fn add(&self, addr: usize, size: usize, flags: Flags) -> Result<(), Error> {
        flags.validate()?;
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        for value in [addr, size] {
            if value & self.quantum_mask != 0 {
                return Err(Error::Unaligned {
                    arena: self.name,
                    value,
                    quantum: self.quantum(),
                });
            }
        }
        if addr.checked_add(size - 1).is_none() {
            return Err(Error::Overflow { addr, size });
        }
        let g = self.state.lock();
        let (g, ok) = self.fill_tags(g, flags);
        if !ok {
            return Err(self.no_memory());
        }
        // Checked after the fill, which may have dropped the lock.
        if g.overlaps(addr, size) {
            return Err(Error::Overlap {
                arena: self.name,
                addr,
                size,
            });
        }
        let mut g = g;
        g.add_span(addr, size, SegmentKind::StaticSpan, self.source.is_some());
        self.wake(&g);
        self.unlock(g, None);
        Ok(())
    }

    // ---- teardown

    /// Empties the arena if nothing in it is allocated (`vmem_destroy`):
    /// drains the quantum cache, releases imported spans to the source,
    /// forgets static spans and returns spare tags. The arena stays usable
    /// (empty). With allocated segments it changes nothing and returns
    /// [`Error::Busy`] naming how many and how large.
    pub fn destroy(&mut self) -> Result<(), Error> {
        if let Some(qc) = self.qcache {
            qc.drain(self);
        }
        let name = self.name;
        let g = self.state.get_mut();
        if g.nbusytag != 0 {
            return Err(Error::Busy {
                arena: name,
                segments: g.nbusytag,
                bytes: g.inuse,
            });
        }
        self.teardown();
        Ok(())
    }

    /// Removes every segment but the cursor: imported spans with no busy
    /// segment go back to the source, the rest is forgotten; all tags but
    /// the cursor go back to the tag source.
    fn teardown(&mut self) {
        let (source, tags) = (self.source, self.tags);
        let g = self.state.get_mut();
        let cursor = g.cursor;
        let mut cur = g.seg_head;
        // Spans that still hold busy segments are leaked on purpose: their
        // space is in use by someone (reported by the caller).
        let mut span_busy = false;
        let mut span: Option<(usize, usize)> = None;
        let flush = |span: Option<(usize, usize)>, busy: bool| {
            if let (Some((addr, size)), Some(source), false) = (span, source, busy) {
                source.release(addr, size);
            }
        };
        while let Some(t) = cur {
            cur = t.seg_next();
            match t.kind() {
                SegmentKind::Cursor => continue,
                SegmentKind::Span => {
                    flush(span.take(), span_busy);
                    span = Some((t.start(), t.size()));
                    span_busy = false;
                }
                SegmentKind::StaticSpan => {
                    flush(span.take(), span_busy);
                }
                SegmentKind::Busy => span_busy = true,
                SegmentKind::Free => {}
            }
            g.seg_unlink(t);
            g.ntags -= 1;
            // SAFETY: the tag is off every list (the freelists and hash are
            // reset below) and came from our tag source.
            unsafe { tags.free_tag(t.into_raw()) };
        }
        flush(span, span_busy);
        let table = g.hash.take();
        // SAFETY: the table is uninstalled and its chains were freed above.
        unsafe { BusyHash::free_table(table, tags) };
        g.free = Freelists::new();
        g.nbusytag = 0;
        g.inuse = 0;
        g.size = 0;
        let spare = g.freetags.take();
        g.ntags -= g.nfreetags;
        g.nfreetags = 0;
        debug_assert_eq!(g.ntags, 1, "only the cursor is left");
        debug_assert!(g.seg_head == Some(cursor) && g.seg_tail == Some(cursor));
        self.free_chain(spare);
    }
}

/// Fork safety (`pthread_atfork`). Outside loom only.
///
/// A fork copies the address space with whatever locks other threads hold
/// at that instant, and those threads do not exist in the child: a lock
/// held then stays held forever. These three calls let the process's
/// `pthread_atfork` handlers hold the arena lock across the fork, so the
/// arena is consistent in both processes. The caller (kmem) takes the locks
/// of everything in a global order: the arena lock comes after every lock
/// held while this arena is called (for kmem: UMA's zone lists, whose
/// reclaim frees slabs to the arena) and before every lock the arena's
/// hooks take with the lock held (the [`TagSource`] called with
/// [`Flags::NOVM`], for kmem the btag zone's locks). The import source, the
/// quantum cache and the reclaim callback are called without the lock.
///
/// What the child gets: the segments, exactly; spare tags that a thread of
/// the parent had hidden across an unlock (`bt_save`) are counted back,
/// and a busy-hash resize that a vanished thread had started is forgotten
/// (the next operation that wants one starts it again). Space that a
/// vanished thread was importing or releasing, outside the lock, is lost
/// to the child (never corrupt).
#[cfg(all(not(loom), feature = "std"))]
impl Arena<'_> {
    /// Takes the arena lock for a fork (`pthread_atfork` prepare).
    ///
    /// # Safety
    ///
    /// Exactly one of [`fork_parent`](Self::fork_parent) (in the parent) or
    /// [`fork_child`](Self::fork_child) (in the child) follows, in the same
    /// thread, with nothing in between that uses this arena. The calling
    /// thread does not hold the lock already (it is not inside an arena
    /// operation or one of its hooks), and it takes the locks of the whole
    /// allocator in one global order (see above).
    pub unsafe fn fork_prepare(&self) {
        self.state.force_lock();
    }

    /// Releases the arena lock in the parent after a fork.
    ///
    /// # Safety
    ///
    /// [`fork_prepare`](Self::fork_prepare) was called by this thread and not
    /// yet undone.
    pub unsafe fn fork_parent(&self) {
        // SAFETY: fork_prepare took it in this thread (caller's promise).
        unsafe { self.state.force_unlock() };
    }

    /// Releases the arena lock in the child after a fork and repairs what
    /// threads that do not exist in the child left behind: tags hidden by
    /// `bt_save` are counted back, and an unfinished hash resize is
    /// forgotten.
    ///
    /// # Safety
    ///
    /// Called in the child of a fork whose prepare handler called
    /// [`fork_prepare`](Self::fork_prepare) in the thread that forked (the
    /// calling thread), before any other use of the arena in the child.
    pub unsafe fn fork_child(&self) {
        // SAFETY: the forking thread (this one) took the lock in
        // fork_prepare; the child has no other thread.
        unsafe { self.state.force_unlock() };
        let mut g = self.state.lock();
        // No operation is in flight in the child: every spare tag on the
        // list is free for use, including those hidden by threads that
        // vanished with the fork.
        let mut spare = 0;
        let mut cur = g.freetags;
        while let Some(t) = cur {
            spare += 1;
            cur = t.link_next();
        }
        g.nfreetags = spare;
        g.rehashing = false;
        g.sleepers = 0;
    }
}

impl Drop for Arena<'_> {
    /// Destroys the arena. With allocated segments still present it reports
    /// them on standard error and leaks the spans that hold them (their
    /// space is still in use); tags are returned either way.
    fn drop(&mut self) {
        if let Err(e) = self.destroy() {
            crate::report::report!("vmem: {e}; leaking the spans that hold them");
            self.teardown();
        }
        let cursor = self.state.get_mut().cursor;
        // SAFETY: the cursor tag came from our source; the arena is going
        // away and nothing refers to it any more.
        unsafe { self.tags.free_tag(cursor.into_raw()) };
    }
}

#[cfg(all(test, not(loom), feature = "std"))]
mod fork_tests {
    use super::*;

    /// What vanished threads leave in the arena at a fork (tags hidden by
    /// `bt_save` across an unlock, a hash resize in flight) is repaired by
    /// `fork_child`. (Run in-process: the arena is this test's alone, so
    /// prepare + child stands for a fork.)
    #[test]
    fn fork_child_counts_hidden_tags_back() {
        let arena = Arena::builder("fork")
            .quantum(16)
            .span(1 << 20, 1 << 20)
            .build()
            .unwrap();
        let held: Vec<usize> = (0..100)
            .map(|_| arena.alloc(48, Flags::NOWAIT).unwrap())
            .collect();
        {
            // A thread in the middle of an import or a WAITOK sleep.
            let g = arena.state.lock();
            let (mut g, ok) = arena.fill_tags(g, Flags::NOWAIT);
            assert!(ok);
            g.bt_save();
            g.rehashing = true;
        }
        assert!(arena.check_invariants().is_ok());
        // SAFETY: no other thread uses the arena; prepare then child, as the
        // forking thread would.
        unsafe {
            arena.fork_prepare();
            arena.fork_child();
        }
        {
            let g = arena.state.lock();
            assert!(!g.rehashing);
            let mut spare = 0;
            let mut cur = g.freetags;
            while let Some(t) = cur {
                spare += 1;
                cur = t.link_next();
            }
            assert_eq!(spare, g.nfreetags);
        }
        assert!(arena.check_invariants().is_ok());
        for a in held {
            arena.free(a, 48).unwrap();
        }
        let more: Vec<usize> = (0..1000)
            .map(|_| arena.alloc(32, Flags::NOWAIT).unwrap())
            .collect();
        for a in more {
            arena.free(a, 32).unwrap();
        }
        assert!(arena.check_invariants().is_ok());
        assert_eq!(arena.size_allocated(), 0);
    }
}
