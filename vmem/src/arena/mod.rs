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
//!
//! The rooms, by noun:
//!
//! - `mod.rs`: the arena and its locked state, unlocking (surplus tags,
//!   busy-hash resize) and securing tags (`bt_fill`);
//! - `segments.rs`: what runs under the lock: the tag cache, the segment
//!   list, the freelists, the busy hash, placement and clipping, adding and
//!   releasing spans' segments;
//! - `builder.rs`: [`ArenaBuilder`] (`vmem_create`);
//! - `alloc.rs`: `vmem_alloc`, `vmem_xalloc` (instant, best and next fit) and
//!   `claim`;
//! - `span.rs`: spans in and out: `vmem_add`, import (`vmem_try_fetch`,
//!   `vmem_import`) and release;
//! - `free.rs`: `vmem_free`, `vmem_xfree` (coalescing);
//! - `handle.rs`: segments held by an [`Allocation`] handle instead of the
//!   busy hash (`alloc_handle`, `free_handle`: no hash lookup);
//! - `resize.rs`: `xresize` (a busy segment grown into the free space after
//!   it, or its tail given back) and `alloc_with_room`;
//! - `teardown.rs`: `vmem_destroy` and `Drop`;
//! - `fork.rs`: the `pthread_atfork` hooks.

mod alloc;
mod builder;
#[cfg(all(not(loom), feature = "std"))]
mod fork;
mod free;
mod handle;
mod local;
mod resize;
mod segments;
mod span;
mod teardown;

pub use builder::ArenaBuilder;
pub use handle::Allocation;
pub use local::LocalArena;

use crate::bins::Freelists;
use crate::btag::{Tag, TagSource};
use crate::hash::BusyHash;
use crate::qcache::QuantumCache;
use crate::source::Source;
use crate::sync::{Condvar, Mutex, MutexGuard};
use crate::{Error, Flags, Name};
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
    /// The span tags alone, in address order, linked through their
    /// `link_next`/`link_prev` (a span tag is on no freelist or hash chain):
    /// where a new span goes is found among the spans, not among every
    /// segment (see `State::span_position`).
    pub(crate) span_head: Option<Tag>,
    pub(crate) span_tail: Option<Tag>,
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
    // accounting: busy segments (those held by `Allocation` handles
    // included; only the others are in the hash), bytes in them
    pub(crate) nbusytag: usize,
    pub(crate) nowned: usize,
    /// The identity of the arena (its address) that `alloc_handle` and
    /// `xalloc_handle` record in the busy tags they hand out, set by them
    /// under the lock (the arena cannot move while it is borrowed, so it is
    /// the same for every call that reads it).
    pub(crate) holder: *const (),
    pub(crate) inuse: usize,
    pub(crate) size: usize,
    pub(crate) limit: usize,
    pub(crate) reclaim: Option<&'a (dyn Fn(Flags) + Sync)>,
    /// Threads asleep on the arena's condition variable: a free wakes
    /// them only if there are any (the notify is an atomic read-modify-write
    /// on a shared line, a third of a small free's cost otherwise).
    pub(crate) sleepers: usize,
    /// Spans of at most this many bytes are kept once wholly free, the
    /// latest one (see [`ArenaBuilder::keep_idle`](super::ArenaBuilder::keep_idle)).
    pub(crate) keep_idle: usize,
    /// The span kept wholly free (it may have been allocated from since).
    pub(crate) idle: Option<Tag>,
}

impl State<'_> {
    /// Busy segments in the hash (the busy hash is sized by this).
    #[inline]
    pub(crate) fn nhashed(&self) -> usize {
        self.nbusytag - self.nowned
    }
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

impl<'a> Arena<'a> {
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

    /// Releases the imported span that [`ArenaBuilder::keep_idle`] kept,
    /// if it is still wholly free; returns its size (0: none). A periodic
    /// pass or a reclaim calls this.
    ///
    /// [`ArenaBuilder::keep_idle`]: super::ArenaBuilder::keep_idle
    pub fn release_idle(&self) -> usize {
        let mut g = self.state.lock();
        let released = g.idle.take().and_then(|span| g.release_if_whole(span));
        self.unlock(g, Some(crate::BT_MAXFREE));
        match released {
            Some((addr, size)) => {
                self.release_span(addr, size);
                size
            }
            None => 0,
        }
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
        if trim.is_none_or(|limit| g.nfreetags <= limit) && g.hash.quiet(g.nhashed()) {
            drop(g);
            return;
        }
        self.unlock_slow(g, trim);
    }

    /// [`unlock`](Self::unlock) after an operation that did not change the
    /// number of hashed segments (a segment held by a handle allocated or
    /// freed): no resize can have become due, so only the spare tags are
    /// looked at. (A resize already due is left to the next operation on
    /// the hash.)
    #[inline]
    fn unlock_unhashed(&self, g: Guard<'_, 'a>, trim: Option<usize>) {
        if trim.is_none_or(|limit| g.nfreetags <= limit) {
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
            g.hash.resize_wanted(g.nhashed())
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
                let nbusy = g.nhashed();
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
}
