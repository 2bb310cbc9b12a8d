//! [`ArenaBuilder`]: the arguments of `vmem_create`, `vmem_set_import`,
//! `vmem_set_limit` and `vmem_set_reclaim`, and `vmem_create` itself.

use super::{Arena, State, QCACHE_MAX_CLASSES};
use crate::bins::Freelists;
use crate::btag::{SegmentKind, Tag, TagSource};
use crate::hash::BusyHash;
use crate::qcache::QuantumCache;
use crate::source::Source;
use crate::sync::{Condvar, Mutex};
use crate::{Error, Flags, Name};
use core::fmt;

/// Builds an [`Arena`] (the arguments of `vmem_create`, `vmem_set_import`,
/// `vmem_set_limit` and `vmem_set_reclaim` in one place).
pub struct ArenaBuilder<'a> {
    name: Name,
    quantum: usize,
    span: Option<(usize, usize)>,
    qcache: Option<(usize, &'a dyn QuantumCache)>,
    source: Option<(&'a dyn Source, usize)>,
    import_growth_max: usize,
    keep_idle: usize,
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

    /// Keeps the latest imported span of at most `max` bytes that a free
    /// left wholly free, instead of releasing it at once; the span kept
    /// before it is released then, if still wholly free, and
    /// [`Arena::release_idle`] releases it (from a periodic pass or a
    /// reclaim). A program that frees its only large segment and allocates
    /// another then finds the space in the arena, not in the source: no
    /// release and import per pair. 0 (the default) releases every wholly
    /// free span at once (FreeBSD's `vmem_xfree`).
    pub fn keep_idle(mut self, max: usize) -> Self {
        self.keep_idle = max;
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
            span_head: None,
            span_tail: None,
            cursor,
            free: Freelists::new(),
            hash: BusyHash::new(),
            rehashing: false,
            freetags: None,
            nfreetags: 0,
            ntags: 1,
            nbusytag: 0,
            nowned: 0,
            holder: core::ptr::null(),
            inuse: 0,
            size: 0,
            limit: self.limit,
            reclaim: self.reclaim,
            sleepers: 0,
            keep_idle: self.keep_idle,
            idle: None,
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
            keep_idle: 0,
            tags: None,
            tag_reserve: false,
            limit: 0,
            reclaim: None,
        }
    }
}
