//! Segments held by a handle instead of the busy hash:
//! [`Arena::alloc_handle`], [`Arena::xalloc_handle`] and
//! [`Arena::free_handle`]. FreeBSD has no counterpart.
//!
//! `free(addr, size)` must find the segment's boundary tag from its address:
//! a hash bucket, then the tag (and a colliding one now and then), each a
//! cache miss once the arena outgrows the cache. An [`Allocation`] carries
//! its tag, so its free starts at the tag, and its allocation writes no
//! hash bucket either. The handle cannot be copied and borrows the arena,
//! so it names a live busy tag of that arena until it is freed: the only
//! check left is that it is given back to the arena it came from (one
//! comparison, with the arena the tag records: the tag's line is fetched
//! anyway).

use super::{bug, Arena};
use crate::btag::{SegmentKind, Tag};
use crate::fit::Constraints;
use crate::{Error, Flags};
use core::marker::PhantomData;

/// A segment allocated with [`Arena::alloc_handle`] or
/// [`Arena::xalloc_handle`]: its address, its size, and a handle to its
/// boundary tag, given back with [`Arena::free_handle`].
///
/// It cannot be copied or cloned, and it borrows the arena, which can
/// therefore be neither moved, destroyed nor dropped while the handle
/// lives. The segment is in no busy hash: [`Arena::free`] and
/// [`Arena::xfree`] do not know it (they fail with
/// [`Error::NotAllocated`]). Dropping the handle without freeing it leaves
/// the segment allocated for the rest of the arena's life, as forgetting an
/// address would.
///
/// One word: the tag. The address and size are read from the tag (a busy
/// tag's are fixed while it is busy), and so is the arena it came from
/// (recorded in the tag, for [`Arena::free_handle`]'s check), so a vector
/// of handles is half the size of one of `(address, size)` pairs: at 10^5
/// live segments, 0.8 MB instead of 1.6 MB for the caller to spread its
/// accesses over (the README's issue 19 figures).
#[must_use = "a segment whose handle is dropped stays allocated"]
pub struct Allocation<'r> {
    pub(super) tag: Tag,
    _arena: PhantomData<&'r ()>,
}

// SAFETY: the handle's tag is only changed by `free_handle`, under the lock
// of the arena it came from (checked first), which consumes the handle;
// while the handle lives the tag is busy and its start, size, kind, mark and
// holder, the only fields read without that lock, are not written by anyone
// (see `Allocation::addr`). So the handle may move to, and be read from, any
// thread (arenas are shared between threads).
unsafe impl Send for Allocation<'_> {}
// SAFETY: as for `Send`.
unsafe impl Sync for Allocation<'_> {}

impl Allocation<'_> {
    /// The segment's first address.
    #[inline]
    pub fn addr(&self) -> usize {
        // Read without the arena lock, the one exception to `Tag`'s rule: a
        // busy tag's start and size (and kind and mark) are written when it
        // becomes busy, before this handle existed (and any thread holding
        // the handle received it after that), and not again until
        // `free_handle` has consumed the handle. Nothing else writes them on
        // a busy tag held by a handle (merges and splits change free
        // neighbours; `xresize` finds its tag in the busy hash, where
        // handles' tags never are).
        self.tag.start()
    }

    /// The segment's size (the request rounded up to the quantum).
    #[inline]
    pub fn size(&self) -> usize {
        // As in `addr`.
        self.tag.size()
    }
}

impl core::fmt::Debug for Allocation<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Allocation")
            .field("addr", &self.addr())
            .field("size", &self.size())
            .finish()
    }
}

impl<'a> Arena<'a> {
    /// The identity a handle records.
    #[inline]
    pub(super) fn id(&self) -> *const () {
        (self as *const Self).cast()
    }

    /// Allocates as [`Arena::alloc`] (instant, best or next fit by
    /// `flags`), but returns the segment with a handle to its boundary tag,
    /// which [`Arena::free_handle`] takes back without a hash lookup.
    /// Never uses the quantum cache (its segments have no tags).
    ///
    /// ```
    /// use vmem::{Arena, Flags};
    ///
    /// let arena = Arena::builder("gpu heap").span(0, 1 << 20).build()?;
    /// let a = arena.alloc_handle(4096, Flags::NOWAIT | Flags::INSTANTFIT)?;
    /// assert_eq!((a.addr(), a.size()), (0, 4096));
    /// arena.free_handle(a)?;
    /// # Ok::<(), vmem::Error>(())
    /// ```
    #[inline]
    pub fn alloc_handle(&self, size: usize, flags: Flags) -> Result<Allocation<'_>, Error> {
        let (_, tag) = self.alloc_seg::<true>(size, flags)?;
        Ok(self.handle(tag))
    }

    /// Allocates as [`Arena::xalloc`] (under constraints), with a handle as
    /// [`Arena::alloc_handle`].
    pub fn xalloc_handle(
        &self,
        size: usize,
        c: &Constraints,
        flags: Flags,
    ) -> Result<Allocation<'_>, Error> {
        let (_, tag) = self.xalloc_validated::<true>(size, c, flags, flags.validate()?)?;
        Ok(self.handle(tag))
    }

    /// The handle for the busy tag of a segment just allocated.
    #[inline(always)]
    pub(super) fn handle(&self, tag: Tag) -> Allocation<'_> {
        Allocation {
            tag,
            _arena: PhantomData,
        }
    }

    /// Frees a segment allocated with [`Arena::alloc_handle`] or
    /// [`Arena::xalloc_handle`]: as [`Arena::xfree`], from the tag the
    /// handle names, with no hash lookup. A handle from another arena is
    /// refused with [`Error::ForeignHandle`] (its segment stays allocated
    /// there).
    #[inline(always)]
    pub fn free_handle(&self, h: Allocation<'_>) -> Result<(), Error> {
        let t = h.tag;
        // Read before the lock, as `Allocation::addr` reads (a busy tag's
        // holder, kind and mark are not written while a handle holds it
        // either, whichever arena it belongs to): the tag, a cache miss in
        // a large arena, is then fetched while the lock's atomic
        // instruction waits for earlier stores to drain, instead of after
        // it (random sizes, 10^5 live, per pair: see the crate doc).
        if t.holder() != self.id() {
            return Err(Error::ForeignHandle {
                arena: self.name,
                addr: h.addr(),
            });
        }
        check_handle_tag(t);
        let mut g = self.state.lock();
        g.take_owned(t);
        self.free_busy::<true>(g, t);
        Ok(())
    }
}

/// A handle is made only by its arena, for a busy tag it marks as held, and
/// is consumed when freed: anything else is a vmem bug.
#[inline(always)]
pub(super) fn check_handle_tag(t: Tag) {
    if t.kind() != SegmentKind::Busy || !t.owned() {
        bug("free_handle: the handle's tag is not its busy segment");
    }
}
