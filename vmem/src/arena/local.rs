//! [`LocalArena`]: an arena that one thread at a time owns, whose common
//! handle operations skip the lock.

use core::cell::Cell;
use core::marker::PhantomData;

use super::handle::check_handle_tag;
use super::{Allocation, Arena, BT_MAXFREE};
use crate::flags::Policy;
use crate::sync::unlocked_mut;
use crate::{ArenaStats, Error, Flags};

/// An [`Arena`] owned by one thread at a time, for callers that would
/// otherwise reach for a single-threaded range allocator
/// (`offset-allocator`, a GPU heap's suballocator, a per-core ID space).
///
/// It is `Send` but not `Sync`: whoever owns it (or borrows it) is the only
/// thread that can reach the arena inside, so [`alloc_handle`] and
/// [`free_handle`] do their common case (spare tags in hand, a free
/// segment found at once; a free that needs no span released to the
/// source and leaves no surplus of spare tags) on the arena's state
/// directly, without the lock's two atomic read-modify-writes (about a
/// tenth of a pair's time at 10^4 live segments, see the crate README).
/// Everything else (imports, sleeps, reclaims, tag refills, the other
/// operations) goes through the arena's own, locked, roads, so the
/// behaviour is the arena's in every respect: the same segments, the same
/// statistics, the same errors. [`get_mut`](Self::get_mut) lends the
/// arena itself for everything else (walks, constrained allocation, frees
/// by address); those calls lock as usual. (No shared `&Arena` is lent: it
/// could go to another thread, whose locked operations would then race
/// with this thread's unlocked ones.)
///
/// ```
/// use vmem::{Arena, Flags, LocalArena};
///
/// let heap = LocalArena::new(Arena::builder("gpu heap").span(0, 1 << 20).build()?);
/// let a = heap.alloc_handle(4096, Flags::NOWAIT | Flags::INSTANTFIT)?;
/// let b = heap.alloc_handle(100, Flags::NOWAIT | Flags::INSTANTFIT)?;
/// assert_eq!((a.addr(), b.addr()), (0, 4096));
/// heap.free_handle(a)?;
/// heap.free_handle(b)?;
/// assert_eq!(heap.stats().inuse, 0);
/// # Ok::<(), vmem::Error>(())
/// ```
///
/// [`alloc_handle`]: Self::alloc_handle
/// [`free_handle`]: Self::free_handle
pub struct LocalArena<'a> {
    arena: Arena<'a>,
    /// Not `Sync`: shared references stay on one thread.
    _one_thread: PhantomData<Cell<()>>,
}

impl core::fmt::Debug for LocalArena<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalArena")
            .field("name", &self.arena.name())
            .finish_non_exhaustive()
    }
}

impl<'a> LocalArena<'a> {
    /// Takes `arena` for one thread at a time.
    pub fn new(arena: Arena<'a>) -> Self {
        LocalArena {
            arena,
            _one_thread: PhantomData,
        }
    }

    /// The arena back, to share between threads again.
    pub fn into_inner(self) -> Arena<'a> {
        self.arena
    }

    /// The arena, for every other operation (they take its lock as
    /// usual). Through `&mut self`: while a shared `&Arena` lives (which
    /// could be sent to another thread), the fast roads cannot run.
    pub fn get_mut(&mut self) -> &mut Arena<'a> {
        &mut self.arena
    }

    /// [`Arena::stats`].
    pub fn stats(&self) -> ArenaStats {
        self.arena.stats()
    }

    /// [`Arena::alloc_handle`]: the same segment, the same errors, with no
    /// lock taken when spare tags are in hand and a free segment is found
    /// at once (instant or best fit; next fit always takes the arena's
    /// road).
    #[inline]
    pub fn alloc_handle(&self, size: usize, flags: Flags) -> Result<Allocation<'_>, Error> {
        let a = &self.arena;
        let policy = flags.validate()?;
        if policy != Policy::Next {
            let rounded = a.checked_size(size)?;
            // SAFETY: `self` is not `Sync` and owns the arena, which it
            // lends only through `&mut self`: only this thread can reach the
            // arena while this borrow lives, and nothing below takes a lock
            // or calls out of the arena's state.
            if let Some(st) = unsafe { unlocked_mut(&a.state) } {
                // (Recorded in the busy tag by the clip, as the arena's
                // allocation sets it under its lock.)
                st.holder = a.id();
                if let Some((_, busy)) = st.take_plain::<true>(rounded, policy == Policy::Instant) {
                    return Ok(a.handle(busy));
                }
            }
        }
        a.alloc_handle(size, flags)
    }

    /// [`Arena::free_handle`], with no lock taken unless the free leaves
    /// more spare tags than the arena keeps (their surplus goes back to the
    /// tag source under the lock, as the arena's free does). A span the
    /// free empties goes back to the source as the arena's free sends it.
    #[inline]
    pub fn free_handle(&self, h: Allocation<'_>) -> Result<(), Error> {
        let a = &self.arena;
        let t = h.tag;
        if t.holder() == a.id() {
            check_handle_tag(t);
            // SAFETY: as in `alloc_handle`.
            if let Some(st) = unsafe { unlocked_mut(&a.state) } {
                if st.sleepers == 0 {
                    st.take_owned(t);
                    let released = st.free_segment(t, a.source.is_some());
                    let surplus = st.nfreetags > BT_MAXFREE;
                    // The borrow ends here: what follows may lock (as the
                    // arena's free does after its unlock).
                    if surplus {
                        a.unlock_unhashed(a.state.lock(), Some(BT_MAXFREE));
                    }
                    if let Some((span, span_size)) = released {
                        a.release_span(span, span_size);
                    }
                    return Ok(());
                }
            }
        }
        a.free_handle(h)
    }
}
