//! Resizing a busy segment where it lies (no FreeBSD counterpart).
//!
//! A layer above that grows a block a little at a time (C's `realloc`,
//! a buffer appended to) would otherwise allocate, copy and free on every
//! step: growing a 4 MiB block by 2 KiB steps copies gigabytes. Usually the
//! space right after a block is free (a fit leaves the rest of its segment
//! there), so the block can take it over; shrinking gives the tail back the
//! way a free would.

use super::Arena;
use crate::btag::SegmentKind;
use crate::fit::Constraints;
use crate::{Error, Flags, BT_MAXFREE};

impl Arena<'_> {
    /// Resizes the busy segment `[addr, addr + old_size)` to `new_size`
    /// bytes without moving it (sizes are rounded to the quantum, as
    /// everywhere).
    ///
    /// - Growing takes the start of the free segment right after it, in the
    ///   same span; if that segment is missing, busy or too small, it fails
    ///   with [`Error::NoMemory`] and changes nothing. It never imports,
    ///   reclaims or sleeps: the caller moves the block instead.
    /// - Shrinking gives the tail back as [`Arena::xfree`] would (merged
    ///   with free space after it; the span, still holding the segment, is
    ///   never released).
    ///
    /// The segment must have been allocated with [`Arena::xalloc`] (or
    /// [`Arena::alloc`] above [`Arena::qcache_max`]) and is freed with its
    /// new size. Sizes at or below `qcache_max` are refused
    /// ([`Error::BadRange`]) in an arena with a quantum cache, whose
    /// [`Arena::free`] would route them to the cache. A wrong `addr` or
    /// `old_size` fails as `xfree` does ([`Error::NotAllocated`],
    /// [`Error::SizeMismatch`]); so does a segment held by an
    /// [`Allocation`](crate::Allocation) handle, which is not in the busy
    /// hash (its size is read without the lock and must never change).
    pub fn xresize(&self, addr: usize, old_size: usize, new_size: usize) -> Result<(), Error> {
        let old = self.checked_size(old_size)?;
        let new = self.checked_size(new_size)?;
        if self.qcache.is_some() && old.min(new) <= self.qcache_max {
            return Err(Error::BadRange {
                min: old.min(new),
                max: self.qcache_max,
            });
        }
        // A shrink may need a tag for its tail: secure the tags first, as
        // every mutation does (NOWAIT: never sleeps for them).
        let mut new_round = true;
        let mut g = self.begin_round(self.state.lock(), Flags::NOWAIT, &mut new_round)?;
        let t = match g.hash.find(addr) {
            Some(slot) if slot.tag.size() == old => slot.tag,
            Some(slot) => {
                let allocated = slot.tag.size();
                self.unlock(g, None);
                return Err(Error::SizeMismatch {
                    arena: self.name,
                    addr,
                    size: old,
                    allocated,
                });
            }
            None => {
                self.unlock(g, None);
                return Err(Error::NotAllocated {
                    arena: self.name,
                    addr,
                });
            }
        };
        if new > old {
            let extra = new - old;
            match t.seg_next().filter(|n| n.kind() == SegmentKind::Free) {
                Some(n) if n.size() >= extra => {
                    if n.size() == extra {
                        g.remfree(n);
                        g.remseg(n);
                    } else {
                        n.set_start(n.start() + extra);
                        n.set_size(n.size() - extra);
                        g.refile(n);
                    }
                    t.set_size(new);
                    g.inuse += extra;
                    self.unlock(g, Some(BT_MAXFREE));
                    Ok(())
                }
                _ => {
                    self.unlock(g, None);
                    Err(self.no_memory())
                }
            }
        } else {
            let tail = old - new;
            if tail != 0 {
                // The tail becomes a busy segment of its own and is freed
                // as `xfree` frees (merged with free space after it; the
                // span still holds `t`, so it is never released).
                let f = g.bt_alloc();
                f.set_kind(SegmentKind::Busy);
                f.set_owned(false);
                f.set_start(t.start() + new);
                f.set_size(tail);
                g.seg_insert_after(f, t);
                t.set_size(new);
                g.inuse -= tail;
                g.free_segment(f, false);
                self.wake(&g);
            }
            self.unlock(g, Some(BT_MAXFREE));
            Ok(())
        }
    }

    /// Allocates `size` bytes at the start of a free segment of at least
    /// `room` bytes, so that the block can later grow in place
    /// ([`Arena::xresize`]) into the rest, which stays free (for anyone).
    /// Best fit on `room`, whatever the flags' policy; never imports,
    /// reclaims or sleeps: [`Error::NoMemory`] if no free segment is that
    /// large now, and the caller allocates as usual. Freed with `xfree`.
    pub fn alloc_with_room(&self, size: usize, room: usize) -> Result<usize, Error> {
        let size = self.checked_size(size)?;
        let room = self.checked_size(room)?.max(size);
        let c = Constraints::NONE.validate(room, self.quantum())?;
        let mut new_round = true;
        let mut g = self.begin_round(self.state.lock(), Flags::NOWAIT, &mut new_round)?;
        match g.find_fit(room, &c, false, true) {
            Some((t, start)) => {
                g.clip::<false>(t, start, size);
                self.unlock(g, None);
                Ok(start)
            }
            None => {
                self.unlock(g, None);
                Err(self.no_memory())
            }
        }
    }
}
