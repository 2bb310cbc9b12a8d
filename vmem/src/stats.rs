//! Size queries (`vmem_size`), per-order statistics (DDB `show vmem`), a
//! segment dump (`vmem_dump`) and the sanity walker (`vmem_check_sanity`,
//! extended to every invariant the arena keeps).

use crate::arena::{State, BT_MAXALLOC};
use crate::bins::{bin_min, bin_of};
use crate::btag::{SegmentKind, Tag};
use crate::order::{order_to_size, size_to_order, MAXORDER};
use crate::{Arena, Name};
use core::fmt;

/// One segment, as [`Arena::for_each_segment`] reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Segment {
    /// First address (0 for the cursor).
    pub start: usize,
    /// Size in bytes (0 for the cursor).
    pub size: usize,
    /// What the segment is.
    pub kind: SegmentKind,
}

/// Busy and free segments of one freelist order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct OrderStat {
    /// Smallest size of the order, in bytes.
    pub size: usize,
    /// Allocated segments of this order.
    pub busy: usize,
    /// Bytes in allocated segments of this order.
    pub busy_bytes: usize,
    /// Free segments of this order.
    pub free: usize,
    /// Bytes in free segments of this order.
    pub free_bytes: usize,
}

/// A snapshot of an arena's counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ArenaStats {
    /// The arena's name.
    pub name: Name,
    /// The allocation unit.
    pub quantum: usize,
    /// Bytes managed (all spans).
    pub size: usize,
    /// Bytes allocated.
    pub inuse: usize,
    /// Allocated segments.
    pub busy_segments: usize,
    /// Free segments.
    pub free_segments: usize,
    /// Largest free segment, in bytes (exact).
    pub largest_free: usize,
    /// Spare boundary tags cached by the arena.
    pub spare_tags: usize,
    /// Buckets in the busy hash.
    pub hash_buckets: usize,
    /// The size cap, or 0.
    pub limit: usize,
}

/// A broken invariant found by [`Arena::check_invariants`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Corruption {
    /// The arena.
    pub arena: Name,
    /// Which invariant.
    pub what: &'static str,
    /// Start of the offending segment (0 if none).
    pub start: usize,
    /// Size of the offending segment (0 if none).
    pub size: usize,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vmem arena '{}': {} (segment {:#x} +{:#x})",
            self.arena, self.what, self.start, self.size
        )
    }
}

impl core::error::Error for Corruption {}

impl Arena<'_> {
    /// Bytes allocated (`vmem_size(VMEM_ALLOC)`).
    pub fn size_allocated(&self) -> usize {
        self.state.lock().inuse
    }

    /// Bytes free (`vmem_size(VMEM_FREE)`).
    pub fn size_free(&self) -> usize {
        let g = self.state.lock();
        g.size - g.inuse
    }

    /// Bytes managed (`vmem_size(VMEM_ALLOC | VMEM_FREE)`).
    pub fn size_total(&self) -> usize {
        self.state.lock().size
    }

    /// The smallest size of the highest non-empty freelist
    /// (`vmem_size(VMEM_MAXFREE)`): a size class, a lower bound on the
    /// largest free segment.
    pub fn max_free_class(&self) -> usize {
        let g = self.state.lock();
        match g.free.highest() {
            None => 0,
            Some(bin) => bin_min(bin) << g.qshift,
        }
    }

    /// The largest free segment, exactly (scans the highest non-empty list).
    pub fn largest_free_segment(&self) -> usize {
        let g = self.state.lock();
        let Some(bin) = g.free.highest() else {
            return 0;
        };
        let mut cur = g.free.head(bin);
        let mut best = 0;
        while let Some(t) = cur {
            best = best.max(t.size());
            cur = t.link_next();
        }
        best
    }

    /// Calls `f` for every segment in address order, cursor and span tags
    /// included, under the arena lock: `f` must not call into the arena.
    pub fn for_each_segment(&self, mut f: impl FnMut(Segment)) {
        let g = self.state.lock();
        let mut cur = g.seg_head;
        while let Some(t) = cur {
            f(Segment {
                start: t.start(),
                size: t.size(),
                kind: t.kind(),
            });
            cur = t.seg_next();
        }
    }

    /// Busy and free segments by freelist order (DDB `show vmem`).
    pub fn order_stats(&self) -> [OrderStat; MAXORDER] {
        let mut stats = [OrderStat::default(); MAXORDER];
        let shift = self.quantum().trailing_zeros();
        for (order, s) in stats.iter_mut().enumerate() {
            s.size = order_to_size(order)
                .checked_shl(shift)
                .unwrap_or(usize::MAX);
        }
        self.for_each_segment(|seg| {
            let s = match seg.kind {
                SegmentKind::Busy | SegmentKind::Free => {
                    &mut stats[size_to_order(seg.size >> shift)]
                }
                _ => return,
            };
            if seg.kind == SegmentKind::Busy {
                s.busy += 1;
                s.busy_bytes += seg.size;
            } else {
                s.free += 1;
                s.free_bytes += seg.size;
            }
        });
        stats
    }

    /// A snapshot of the arena's counters.
    pub fn stats(&self) -> ArenaStats {
        let largest_free = self.largest_free_segment();
        let mut free_segments = 0;
        self.for_each_segment(|s| free_segments += (s.kind == SegmentKind::Free) as usize);
        let g = self.state.lock();
        ArenaStats {
            name: Name::new(self.name()),
            quantum: self.quantum(),
            size: g.size,
            inuse: g.inuse,
            busy_segments: g.nbusytag,
            free_segments,
            largest_free,
            spare_tags: g.nfreetags,
            hash_buckets: g.hash.buckets(),
            limit: g.limit,
        }
    }

    /// Boundary tags the arena holds (segments, cursor and spares): what it
    /// owes its tag source.
    pub fn tags_held(&self) -> usize {
        self.state.lock().ntags
    }

    /// Where the next-fit cursor splits free space: the start of the free
    /// segment after it when free segments lie on both sides. Free space is
    /// split there (as in FreeBSD) until a next-fit allocation merges it.
    pub fn cursor_split(&self) -> Option<usize> {
        let g = self.state.lock();
        let (p, n) = g.cursor.seg_prev().zip(g.cursor.seg_next())?;
        (p.kind() == SegmentKind::Free && n.kind() == SegmentKind::Free).then(|| n.start())
    }

    /// Writes every segment and every non-empty freelist (`vmem_dump`).
    pub fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let g = self.state.lock();
        writeln!(out, "vmem '{}' quantum {:#x}", self.name(), self.quantum())?;
        let mut cur = g.seg_head;
        while let Some(t) = cur {
            writeln!(
                out,
                "\t{:#x}: {:#x} {:#x} {:?}",
                t.addr(),
                t.start(),
                t.size(),
                t.kind()
            )?;
            cur = t.seg_next();
        }
        for (bin, head) in g.free.iter() {
            let mut cur = head;
            if cur.is_some() {
                writeln!(out, "freelist[{bin}] ({:#x}..)", bin_min(bin) << g.qshift)?;
            }
            while let Some(t) = cur {
                writeln!(out, "\t{:#x}: {:#x} {:#x}", t.addr(), t.start(), t.size())?;
                cur = t.link_next();
            }
        }
        Ok(())
    }

    /// Walks the whole arena and checks every invariant it keeps:
    ///
    /// - the segment list is doubly linked, holds the cursor once, and its
    ///   free and busy segments are quantum-aligned, in address order and
    ///   non-overlapping; span tags are in order too;
    /// - no two free segments are adjacent in the list (they would have been
    ///   coalesced);
    /// - every free segment is on the freelist of its order and nothing
    ///   else is on a freelist; the non-empty bitmap matches;
    /// - every busy segment is in the hash in its bucket, or held by an
    ///   [`Allocation`](crate::Allocation) handle and not in the hash, and
    ///   nothing else is in the hash; the busy and handle counts match;
    /// - in-use bytes are the sum of busy segments, and the arena size is
    ///   the sum of free and busy segments;
    /// - the spare-tag count matches the cache, and the tags held add up.
    pub fn check_invariants(&self) -> Result<(), Corruption> {
        let g = self.state.lock();
        check_state(&g, self.quantum() - 1).map_err(|(what, t)| Corruption {
            arena: Name::new(self.name()),
            what,
            start: t.map_or(0, |t| t.start()),
            size: t.map_or(0, |t| t.size()),
        })
    }
}

/// A broken invariant: what, and the tag that shows it (if one does).
type Broken = (&'static str, Option<Tag>);

/// What the walk along the segment list counted, for the cross-checks.
struct Census {
    /// Tags on the list, the cursor included.
    tags: usize,
    free: usize,
    busy: usize,
    /// Busy segments held by handles (not in the hash).
    owned: usize,
    free_bytes: usize,
    busy_bytes: usize,
}

/// Every invariant of [`Arena::check_invariants`], on the locked state.
fn check_state(g: &State<'_>, mask: usize) -> Result<(), Broken> {
    let census = check_segments(g, mask)?;
    check_freelists(g, census.free)?;
    check_hash(g, census.busy, census.owned)?;
    if census.busy_bytes != g.inuse {
        return Err(("in-use bytes differ from the sum of busy segments", None));
    }
    if census.busy_bytes + census.free_bytes != g.size {
        return Err(("arena size differs from the sum of its segments", None));
    }
    check_tag_counts(g, census.tags)
}

/// The segment list: links, the one cursor, spans in order, free and busy
/// segments aligned, ordered, non-overlapping, coalesced, each free one
/// marked with its list and each busy one found in the hash.
fn check_segments(g: &State<'_>, mask: usize) -> Result<Census, Broken> {
    let mut n = Census {
        tags: 0,
        free: 0,
        busy: 0,
        owned: 0,
        free_bytes: 0,
        busy_bytes: 0,
    };
    let mut ncursor = 0;
    let mut prev: Option<Tag> = None;
    let mut last_end: Option<usize> = None; // last address covered, free/busy
    let mut last_span: Option<usize> = None;
    // The span list must name the span tags met on the way, in order.
    let mut span_expected = g.span_head;
    let mut span_prev: Option<Tag> = None;
    let mut cur = g.seg_head;
    while let Some(t) = cur {
        n.tags += 1;
        let bad = |what| Err((what, Some(t)));
        if t.seg_prev() != prev {
            return bad("segment list back link broken");
        }
        match t.kind() {
            SegmentKind::Cursor => {
                ncursor += 1;
                if t != g.cursor {
                    return bad("stray cursor");
                }
            }
            SegmentKind::Span | SegmentKind::StaticSpan => {
                if t.size() == 0 || t.start().checked_add(t.size() - 1).is_none() {
                    return bad("span wraps or is empty");
                }
                if last_span.is_some_and(|s| s > t.start()) {
                    return bad("spans out of order");
                }
                last_span = Some(t.start());
                if span_expected != Some(t) || t.link_prev() != span_prev {
                    return bad("span list differs from the spans in the segment list");
                }
                span_prev = Some(t);
                span_expected = t.link_next();
            }
            SegmentKind::Free | SegmentKind::Busy => {
                if t.size() == 0 || (t.start() | t.size()) & mask != 0 {
                    return bad("segment empty or not quantum aligned");
                }
                if t.start().checked_add(t.size() - 1).is_none() {
                    return bad("segment wraps the address space");
                }
                if last_end.is_some_and(|e| e >= t.start()) {
                    return bad("segments overlap or are out of order");
                }
                last_end = Some(t.end());
                if t.kind() == SegmentKind::Free {
                    n.free += 1;
                    n.free_bytes += t.size();
                    if prev.is_some_and(|p| p.kind() == SegmentKind::Free) {
                        return bad("adjacent free segments not coalesced");
                    }
                    if t.bin() as usize != bin_of(t.size() >> g.qshift) {
                        return bad("free segment on the wrong freelist");
                    }
                } else {
                    n.busy += 1;
                    n.busy_bytes += t.size();
                    if t.owned() {
                        n.owned += 1;
                        if g.hash.lookup(t.start()).is_some() {
                            return bad("busy segment held by a handle is in the hash");
                        }
                    } else if g.hash.lookup(t.start()) != Some(t) {
                        return bad("busy segment missing from the hash");
                    }
                }
            }
        }
        prev = Some(t);
        cur = t.seg_next();
    }
    if g.seg_tail != prev {
        return Err(("segment list tail wrong", prev));
    }
    if span_expected.is_some() || g.span_tail != span_prev {
        return Err(("span list holds more than the spans", span_expected));
    }
    if ncursor != 1 {
        return Err(("cursor missing from the segment list", None));
    }
    Ok(n)
}

/// The freelists: every entry free, on its own list, linked both ways (but
/// for the heads' stale back links); the
/// bitmap marks exactly the non-empty lists; `nfree` entries in all.
fn check_freelists(g: &State<'_>, nfree: usize) -> Result<(), Broken> {
    let mut on_lists = 0;
    for (bin, head) in g.free.iter() {
        if head.is_some() != g.free.marked(bin) {
            return Err(("non-empty freelist bitmap wrong", head));
        }
        let mut back = None;
        let mut cur = head;
        while let Some(t) = cur {
            on_lists += 1;
            // A head's back link is stale by design (see `remfree`).
            let linked = back.is_none() || t.link_prev() == back;
            if t.kind() != SegmentKind::Free || t.bin() as usize != bin || !linked {
                return Err(("freelist holds a wrong or mislinked tag", Some(t)));
            }
            back = Some(t);
            cur = t.link_next();
        }
    }
    if on_lists != nfree {
        return Err(("free segments and freelist entries differ", None));
    }
    Ok(())
}

/// The busy hash: every entry busy, not held by a handle, and in its
/// bucket; `nbusy - nowned` entries in all, as the arena counts them.
fn check_hash(g: &State<'_>, nbusy: usize, nowned: usize) -> Result<(), Broken> {
    let mut hashed = 0;
    let mut err = None;
    g.hash.for_each(|bucket, t| {
        hashed += 1;
        if t.kind() != SegmentKind::Busy || t.owned() {
            err.get_or_insert(("hash holds a tag that is not busy", Some(t)));
        } else if g.hash.index(t.start()) != bucket {
            err.get_or_insert(("hash holds a tag in the wrong bucket", Some(t)));
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if hashed != nbusy - nowned || nbusy != g.nbusytag || nowned != g.nowned {
        return Err(("busy count, hash entries and busy segments differ", None));
    }
    Ok(())
}

/// The tag cache holds the spares counted (plus any hidden by an operation
/// in progress), and the tags on the list and in the cache are all the
/// arena holds.
fn check_tag_counts(g: &State<'_>, on_list: usize) -> Result<(), Broken> {
    let mut spare = 0;
    let mut cur = g.freetags;
    while let Some(t) = cur {
        spare += 1;
        cur = t.link_next();
    }
    // Hidden (saved) tags are only counted out while an operation has
    // the lock dropped; a walker holding the lock may see them.
    if spare < g.nfreetags || spare > g.nfreetags + 8 * BT_MAXALLOC {
        return Err(("spare tag count differs from the tag cache", None));
    }
    if on_list + spare != g.ntags {
        return Err(("tags held differ from segments plus spares", None));
    }
    Ok(())
}

impl fmt::Debug for Arena<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        f.debug_struct("Arena")
            .field("name", &s.name)
            .field("quantum", &s.quantum)
            .field("size", &s.size)
            .field("inuse", &s.inuse)
            .field("busy_segments", &s.busy_segments)
            .field("free_segments", &s.free_segments)
            .field("largest_free", &s.largest_free)
            .field("qcache_max", &self.qcache_max())
            .finish()
    }
}
