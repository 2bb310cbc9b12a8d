//! Freeing: `vmem_free` (through the quantum cache) and `vmem_xfree`
//! (coalescing with free neighbours, releasing a wholly free span).

use super::{Arena, Guard};
use crate::btag::Tag;
use crate::{Error, BT_MAXFREE, QCACHE_MIN_ADDR};

impl<'a> Arena<'a> {
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
        let t = match g.take_busy(addr, size) {
            Ok(t) => t,
            Err(None) => {
                return Err(Error::NotAllocated {
                    arena: self.name,
                    addr,
                })
            }
            Err(Some(t)) => {
                return Err(Error::SizeMismatch {
                    arena: self.name,
                    addr,
                    size,
                    allocated: t.size(),
                })
            }
        };
        self.free_busy::<false>(g, t);
        Ok(())
    }

    /// Frees the busy segment `t`, already out of the hash and the counts:
    /// coalesces it, wakes sleepers, unlocks, and releases the span if it
    /// became wholly free. `OWNED`: `t` was held by a handle, not hashed.
    #[inline(always)]
    pub(super) fn free_busy<const OWNED: bool>(&self, mut g: Guard<'_, 'a>, t: Tag) {
        let released = g.free_segment(t, self.source.is_some());
        self.wake(&g);
        if OWNED {
            self.unlock_unhashed(g, Some(BT_MAXFREE));
        } else {
            self.unlock(g, Some(BT_MAXFREE));
        }
        if let Some((span, span_size)) = released {
            self.release_span(span, span_size);
        }
    }
}
