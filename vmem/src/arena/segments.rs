//! The segment operations, all on the locked [`State`]: the tag cache
//! (`bt_alloc`, `bt_free`, `bt_save`, `bt_restore`), the address-ordered
//! segment list, the freelists, the busy hash, placement (`vmem_clip`,
//! the freelist scan), and spans' segments (`vmem_add1`,
//! `vmem_try_release`).

use super::{bug, State, BT_MAXALLOC};
use crate::bins::{bin_of, first_bin};
use crate::btag::{SegmentKind, Tag};
use crate::fit::{fit, Constraints};

impl State<'_> {
    // ---- tag cache (`bt_alloc`, `bt_free`, `bt_save`, `bt_restore`)

    /// Pops a spare tag. `bt_fill` guaranteed enough before any mutation; an
    /// empty cache here is a broken invariant, never a runtime condition.
    #[inline]
    pub(super) fn bt_alloc(&mut self) -> Tag {
        let Some(t) = self.freetags.filter(|_| self.nfreetags > 0) else {
            bug("boundary tag cache empty: tags were not secured before mutation");
        };
        self.freetags = t.link_next();
        self.nfreetags -= 1;
        t
    }

    #[inline]
    pub(super) fn bt_free(&mut self, t: Tag) {
        t.set_link_next(self.freetags);
        self.freetags = Some(t);
        self.nfreetags += 1;
    }

    /// Adopts a tag fresh from the tag source.
    pub(super) fn bt_adopt(&mut self, t: Tag) {
        self.ntags += 1;
        self.bt_free(t);
    }

    /// Hides `BT_MAXALLOC` tags from other threads across an unlock.
    pub(super) fn bt_save(&mut self) {
        if self.nfreetags < BT_MAXALLOC {
            bug("bt_save without BT_MAXALLOC free tags");
        }
        self.nfreetags -= BT_MAXALLOC;
    }

    pub(super) fn bt_restore(&mut self) {
        self.nfreetags += BT_MAXALLOC;
    }

    /// Takes the spares beyond `limit` off the cache, as a chain to hand
    /// back to the tag source once the lock is dropped.
    pub(super) fn bt_trim(&mut self, limit: usize) -> Option<Tag> {
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

    pub(super) fn seg_link(&mut self, t: Tag, prev: Option<Tag>, next: Option<Tag>) {
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

    pub(super) fn seg_insert_before(&mut self, t: Tag, next: Tag) {
        self.seg_link(t, next.seg_prev(), Some(next));
    }

    pub(super) fn seg_insert_after(&mut self, t: Tag, prev: Tag) {
        self.seg_link(t, Some(prev), prev.seg_next());
    }

    pub(super) fn seg_push_back(&mut self, t: Tag) {
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
    pub(super) fn remseg(&mut self, t: Tag) {
        debug_assert!(t.kind() != SegmentKind::Cursor);
        self.seg_unlink(t);
        self.bt_free(t);
    }

    // ---- freelists

    #[inline]
    pub(super) fn insfree(&mut self, t: Tag) {
        self.insfree_in(t, bin_of(t.size() >> self.qshift));
    }

    /// Puts the free segment `t` at the head of list `bin`, its list.
    #[inline(always)]
    fn insfree_in(&mut self, t: Tag, bin: usize) {
        debug_assert_eq!(t.kind(), SegmentKind::Free);
        debug_assert_eq!(bin, bin_of(t.size() >> self.qshift));
        let head = self.free.head(bin);
        t.set_bin(bin as u16);
        t.set_link_next(head);
        if let Some(h) = head {
            h.set_link_prev(Some(t));
        }
        self.free.set_head(bin, Some(t));
    }

    /// Takes the free segment `t` off its list. A list's head is known by
    /// the list's head pointer, not by its back link, which is left stale
    /// (never read while it heads the list): taking the head off, as
    /// instant fit does, touches no other tag (its successor, a cache miss
    /// in a large arena, keeps its back link until something is put in
    /// front of it).
    #[inline(always)]
    pub(super) fn remfree(&mut self, t: Tag) {
        debug_assert_eq!(t.kind(), SegmentKind::Free);
        let bin = t.bin() as usize;
        let next = t.link_next();
        if self.free.head(bin) == Some(t) {
            self.free.set_head(bin, next);
            return;
        }
        let Some(prev) = t.link_prev() else {
            bug("free segment neither heads its list nor has a predecessor");
        };
        prev.set_link_next(next);
        if let Some(n) = next {
            n.set_link_prev(Some(prev));
        }
    }

    // ---- busy hash

    /// Records the new busy segment `t`: in the busy hash, for
    /// `free(addr, size)` to find, or (`owned`) held by an
    /// [`Allocation`](crate::Allocation) handle and in no hash chain.
    #[inline(always)]
    pub(super) fn insbusy(&mut self, t: Tag, owned: bool) {
        debug_assert_eq!(t.kind(), SegmentKind::Busy);
        t.set_owned(owned);
        if owned {
            t.set_holder(self.holder);
            self.nowned += 1;
        } else {
            self.hash.insert(t);
        }
        self.nbusytag += 1;
        self.inuse += t.size();
    }

    /// Takes the busy segment `t`, held by a handle, out of the counts; the
    /// caller then frees it with [`free_segment`](Self::free_segment).
    #[inline]
    pub(super) fn take_owned(&mut self, t: Tag) {
        self.nowned -= 1;
        self.nbusytag -= 1;
        self.inuse -= t.size();
    }

    /// Takes the busy segment at `addr` out of the hash if its size is
    /// `size`; the lookup and the unlink share one walk of the chain.
    /// `Err(None)`: nothing busy starts at `addr`; `Err(Some(t))`: the busy
    /// segment there is `t`, of another size (left in place).
    #[inline]
    pub(super) fn take_busy(&mut self, addr: usize, size: usize) -> Result<Tag, Option<Tag>> {
        let slot = self.hash.find(addr).ok_or(None)?;
        let t = slot.tag;
        if t.size() != size {
            return Err(Some(t));
        }
        self.hash.unlink(slot);
        self.nbusytag -= 1;
        self.inuse -= size;
        Ok(t)
    }

    // ---- placement

    /// The first free segment of at least `size` bytes for an unconstrained
    /// request: for instant fit the head of the first non-empty list whose
    /// every segment is large enough, for best fit the first large enough
    /// segment from the list that may hold `size` upward. `find_fit` for
    /// the constraints `alloc` passes, without their arithmetic.
    #[inline(always)]
    pub(super) fn find_plain(&self, size: usize, instant: bool) -> Option<Tag> {
        let q = size >> self.qshift;
        if instant {
            let bin = self.free.next_nonempty(first_bin(q, true))?;
            return self.free.head(bin);
        }
        let mut next = self.free.next_nonempty(bin_of(q));
        while let Some(bin) = next {
            let mut cur = self.free.head(bin);
            while let Some(t) = cur {
                if t.size() >= size {
                    return Some(t);
                }
                cur = t.link_next();
            }
            next = self.free.next_nonempty(bin + 1);
        }
        None
    }

    /// Searches the freelists (`vmem_xalloc`'s scan). Instant fit looks at
    /// the head of each list on which every segment is large enough; best
    /// fit scans every segment from the list that may hold `size` upward.
    /// The bitmap of non-empty lists makes skipping empty lists O(1).
    ///
    /// `plain` says that `c` constrains nothing beyond the quantum: the
    /// placement is then the segment's start, with no arithmetic.
    #[inline]
    pub(super) fn find_fit(
        &self,
        size: usize,
        c: &Constraints,
        instant: bool,
        plain: bool,
    ) -> Option<(Tag, usize)> {
        if plain {
            return self.find_plain(size, instant).map(|t| (t, t.start()));
        }
        let mut next = self
            .free
            .next_nonempty(first_bin(size >> self.qshift, instant));
        while let Some(bin) = next {
            let mut cur = self.free.head(bin);
            while let Some(t) = cur {
                if t.size() >= size {
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
    /// (`vmem_clip`); uses at most two spare tags. Returns the busy tag,
    /// recorded as [`insbusy`](Self::insbusy) says for `OWNED`.
    pub(super) fn clip<const OWNED: bool>(&mut self, t: Tag, start: usize, size: usize) -> Tag {
        debug_assert!(t.kind() == SegmentKind::Free && t.size() >= size);
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
        self.clip_front::<OWNED>(t, size)
    }

    /// Carves the first `size` bytes out of the free segment `t`, which is
    /// on the freelist its tag names (its size may have changed since);
    /// uses at most one spare tag. Returns the busy tag, recorded as
    /// [`insbusy`](Self::insbusy) says for `OWNED` (a constant, so the
    /// fast paths compile without the test).
    ///
    /// The rest keeps `t`'s tag and, if its list is still the right one,
    /// its place there: no other tag on the freelists is touched then. (On
    /// random sizes the rest usually moves down a list or two; a segment
    /// that splits to a size of the same list stays, and the next instant
    /// fit of that size takes it again while it is still in the cache.)
    #[inline(always)]
    pub(super) fn clip_front<const OWNED: bool>(&mut self, t: Tag, size: usize) -> Tag {
        debug_assert!(t.kind() == SegmentKind::Free && t.size() >= size);
        let rest = t.size() - size;
        if rest == 0 {
            self.remfree(t);
            t.set_kind(SegmentKind::Busy);
            self.insbusy(t, OWNED);
            return t;
        }
        let start = t.start();
        let busy = self.bt_alloc();
        busy.set_kind(SegmentKind::Busy);
        busy.set_start(start);
        busy.set_size(size);
        t.set_start(start + size);
        t.set_size(rest);
        self.refile(t);
        self.seg_insert_before(busy, t);
        self.insbusy(busy, OWNED);
        busy
    }

    /// The fast path of an unconstrained allocation: with spare tags in
    /// hand and a segment found at once ([`find_plain`](Self::find_plain)),
    /// the busy segment of `size` bytes clipped from its front, and its
    /// address; `None` (nothing changed) otherwise.
    #[inline(always)]
    pub(super) fn take_plain<const OWNED: bool>(
        &mut self,
        size: usize,
        instant: bool,
    ) -> Option<(usize, Tag)> {
        if self.nfreetags < BT_MAXALLOC {
            return None;
        }
        let t = self.find_plain(size, instant)?;
        let addr = t.start();
        Some((addr, self.clip_front::<OWNED>(t, size)))
    }

    /// Moves the free segment `t`, on the list its tag names, to the list
    /// of its present size if that is another one.
    #[inline(always)]
    pub(super) fn refile(&mut self, t: Tag) {
        let bin = bin_of(t.size() >> self.qshift);
        if bin != t.bin() as usize {
            self.remfree(t);
            self.insfree_in(t, bin);
        }
    }

    /// Turns the busy segment `t`, already out of the hash, into free space
    /// (`vmem_xfree`'s coalescing): merges it with its free neighbours and
    /// files the result on its freelist; or, if `releases` and that leaves
    /// an imported span wholly free, takes the span out and returns it.
    ///
    /// The merged segment keeps a free neighbour's tag, already on a
    /// freelist, and stays there when its list does not change. The tags
    /// that go are `t` (whose neighbours were just read) and, with free
    /// space on both sides, the next one.
    #[inline(always)]
    pub(super) fn free_segment(&mut self, t: Tag, releases: bool) -> Option<(usize, usize)> {
        let is_free = |x: &Tag| x.kind() == SegmentKind::Free;
        let prev = t.seg_prev().filter(is_free);
        let next = t.seg_next().filter(is_free);
        let merged = match (prev, next) {
            (None, None) => {
                t.set_kind(SegmentKind::Free);
                None
            }
            (Some(p), None) => {
                p.set_size(p.size() + t.size());
                self.remseg(t);
                Some(p)
            }
            (None, Some(n)) => {
                n.set_start(t.start());
                n.set_size(n.size() + t.size());
                self.remseg(t);
                Some(n)
            }
            (Some(p), Some(n)) => {
                p.set_size(p.size() + t.size() + n.size());
                self.remseg(t);
                self.remfree(n);
                self.remseg(n);
                Some(p)
            }
        };
        let m = merged.unwrap_or(t);
        let mut kept = None;
        if releases {
            match self.whole_span(m) {
                Some((span, ..)) if span.size() <= self.keep_idle => kept = Some(span),
                Some(whole) => return Some(self.take_out(whole, m, merged.is_some())),
                None => {}
            }
        }
        match merged {
            Some(m) => self.refile(m),
            None => self.insfree(t),
        }
        // Keep this span; release the one kept before, if still wholly free.
        let span = kept?;
        let before = self.idle.replace(span)?;
        if before == span {
            return None;
        }
        self.release_if_whole(before)
    }

    /// Takes the span `span` out if it is wholly free (its first segment
    /// free and covering it, maybe around the cursor); returns it.
    pub(super) fn release_if_whole(&mut self, span: Tag) -> Option<(usize, usize)> {
        let first = span
            .seg_next()
            .and_then(|n| {
                if n.kind() == SegmentKind::Cursor {
                    n.seg_next()
                } else {
                    Some(n)
                }
            })
            .filter(|f| f.kind() == SegmentKind::Free && f.start() == span.start())?;
        self.try_release(first, true)
    }

    /// Where a span starting at `addr` goes in the address-ordered segment
    /// list: before the returned span tag, or at the end for `None`. Spans
    /// do not overlap, and every segment lies after its span's tag and
    /// before the next span's, so the place is found among the span tags
    /// alone (the span list), not among every segment: an arena of 10^5
    /// busy slabs and a few hundred spans walked its segments for each
    /// import that landed in a hole of its address range. The span list is
    /// searched from both ends at once, so spans arriving in address order
    /// (either direction, as mmap tends to hand them out) are placed in
    /// O(1).
    pub(super) fn span_position(&self, addr: usize) -> Option<Tag> {
        let (mut fwd, mut back) = (self.span_head, self.span_tail);
        loop {
            let f = fwd?; // the forward walk ran off the end: append
            if f.start() > addr {
                return Some(f);
            }
            match back {
                // The backward walk ran off the front: everything starts above.
                None => return self.span_head,
                Some(b) if b.start() < addr => return b.link_next(),
                Some(b) => back = b.link_prev(),
            }
            fwd = f.link_next();
        }
    }

    /// Puts the new span tag `span` on the span list, before the span
    /// `next` (or at the end).
    fn span_link(&mut self, span: Tag, next: Option<Tag>) {
        let prev = match next {
            Some(n) => n.link_prev(),
            None => self.span_tail,
        };
        span.set_link_prev(prev);
        span.set_link_next(next);
        match prev {
            Some(p) => p.set_link_next(Some(span)),
            None => self.span_head = Some(span),
        }
        match next {
            Some(n) => n.set_link_prev(Some(span)),
            None => self.span_tail = Some(span),
        }
    }

    /// Takes the span tag `span` off the span list.
    fn span_unlink(&mut self, span: Tag) {
        let (prev, next) = (span.link_prev(), span.link_next());
        match prev {
            Some(p) => p.set_link_next(next),
            None => self.span_head = next,
        }
        match next {
            Some(n) => n.set_link_prev(prev),
            None => self.span_tail = prev,
        }
    }

    /// Adds a span of free space (`vmem_add1`) at its place in address
    /// order; uses at most two spare tags. An arena that never releases spans
    /// extends a segment contiguous with the new space instead of adding a
    /// span tag, so the space can coalesce.
    pub(super) fn add_span(&mut self, addr: usize, size: usize, kind: SegmentKind, releases: bool) {
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
                    self.span_link(span, next);
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
    pub(super) fn try_release(&mut self, t: Tag, on_freelist: bool) -> Option<(usize, usize)> {
        let whole = self.whole_span(t)?;
        Some(self.take_out(whole, t, on_freelist))
    }

    /// If the free segment `t` (maybe with the cursor and another free
    /// segment beside it) covers a whole imported span: the span's tag and
    /// the free segments beyond the cursor on the left and the right.
    #[allow(clippy::type_complexity)]
    fn whole_span(&self, t: Tag) -> Option<(Tag, Option<Tag>, Option<Tag>)> {
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
        Some((span, left, right))
    }

    /// Takes a wholly free span out (see [`whole_span`](Self::whole_span)):
    /// its free segments `t` (on a freelist if `on_freelist`) and those
    /// around the cursor, and its span tag. Returns the span.
    fn take_out(
        &mut self,
        (span, left, right): (Tag, Option<Tag>, Option<Tag>),
        t: Tag,
        on_freelist: bool,
    ) -> (usize, usize) {
        if self.idle == Some(span) {
            self.idle = None;
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
        self.span_unlink(span);
        self.remseg(span);
        self.size -= released.1;
        released
    }

    /// Whether `[addr, addr + size)` intersects managed space. Found at the
    /// range's place among the spans ([`span_position`](Self::span_position)),
    /// not by a walk of every segment: the first span starting above
    /// `addr` must start above the range's last address, and the segment
    /// just before that span (the highest one below it, an extension of a
    /// span included) must end below `addr`.
    pub(super) fn overlaps(&self, addr: usize, size: usize) -> bool {
        let last = addr + (size - 1);
        let next = self.span_position(addr);
        if next.is_some_and(|n| n.start() <= last) {
            return true;
        }
        let before = match next {
            Some(n) => n.seg_prev(),
            None => self.seg_tail,
        };
        let before = before.and_then(|t| {
            if t.kind() == SegmentKind::Cursor {
                t.seg_prev()
            } else {
                Some(t)
            }
        });
        before.is_some_and(|t| t.end() >= addr)
    }
}
