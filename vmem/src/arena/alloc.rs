//! Allocation: `vmem_alloc`, `vmem_xalloc` (instant and best fit over the
//! freelists, next fit along the segment list from the cursor) and
//! [`Arena::claim`].

use super::{Arena, Guard};
use crate::btag::{SegmentKind, Tag};
use crate::fit::{fit, Constraints};
use crate::flags::Policy;
use crate::{Error, Flags, BT_MAXFREE};

impl<'a> Arena<'a> {
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
        self.alloc_seg::<false>(size, flags).map(|(addr, _)| addr)
    }

    /// [`Arena::alloc`] past the quantum cache: the address and the busy
    /// tag, recorded in the busy hash or (`OWNED`) held by a handle.
    #[inline(always)]
    pub(super) fn alloc_seg<const OWNED: bool>(
        &self,
        size: usize,
        flags: Flags,
    ) -> Result<(usize, Tag), Error> {
        let policy = flags.validate()?;
        if policy == Policy::Next {
            return self.xalloc_validated::<OWNED>(size, &Constraints::NONE, flags, policy);
        }
        let size = self.checked_size(size)?;
        let instant = policy == Policy::Instant;
        let mut g = self.state.lock();
        if OWNED {
            g.holder = self.id();
        }
        // The fast path: tags in hand and a segment found at once.
        if let Some(found) = g.take_plain::<OWNED>(size, instant) {
            if OWNED {
                self.unlock_unhashed(g, None);
            } else {
                self.unlock(g, None);
            }
            return Ok(found);
        }
        let c = Constraints::NONE.validate(size, self.quantum())?;
        self.xalloc_fit::<OWNED>(g, size, &c, flags, instant)
    }

    /// Allocates `size` bytes under placement constraints (`vmem_xalloc`).
    /// Never uses the quantum cache.
    ///
    /// `WAITOK` sleeps until the request can be met (so it waits forever for
    /// a request no space could ever meet); `NOWAIT` fails with
    /// [`Error::NoMemory`] after trying an import and the reclaim hooks.
    pub fn xalloc(&self, size: usize, c: &Constraints, flags: Flags) -> Result<usize, Error> {
        self.xalloc_validated::<false>(size, c, flags, flags.validate()?)
            .map(|(addr, _)| addr)
    }

    /// [`Arena::xalloc`] once `flags` have been validated into `policy`;
    /// the address and the busy tag (see [`Arena::alloc_seg`]).
    #[inline]
    pub(super) fn xalloc_validated<const OWNED: bool>(
        &self,
        size: usize,
        c: &Constraints,
        flags: Flags,
        policy: Policy,
    ) -> Result<(usize, Tag), Error> {
        let size = self.checked_size(size)?;
        let c = c.validate(size, self.quantum())?;
        let mut g = self.state.lock();
        if OWNED {
            g.holder = self.id();
        }
        match policy {
            Policy::Next => self.xalloc_nextfit::<OWNED>(g, size, &c, flags),
            _ => self.xalloc_fit::<OWNED>(g, size, &c, flags, policy == Policy::Instant),
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
                g.clip::<false>(t, addr, size);
                self.unlock(g, None);
                Ok(())
            }
            _ => {
                self.unlock(g, None);
                Err(self.no_memory())
            }
        }
    }

    fn xalloc_fit<'g, const OWNED: bool>(
        &'g self,
        mut g: Guard<'g, 'a>,
        size: usize,
        c: &Constraints,
        flags: Flags,
        mut instant: bool,
    ) -> Result<(usize, Tag), Error> {
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
                let busy = g.clip::<OWNED>(t, addr, size);
                self.unlock(g, None);
                return Ok((addr, busy));
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
    pub(super) fn begin_round<'g>(
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
    fn xalloc_nextfit<'g, const OWNED: bool>(
        &'g self,
        mut g: Guard<'g, 'a>,
        size: usize,
        c: &Constraints,
        flags: Flags,
    ) -> Result<(usize, Tag), Error> {
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
                        found = Some((g.clip::<OWNED>(t, addr, size), addr));
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
                    found = Some((g.clip::<OWNED>(prev, addr, size), addr));
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
                return Ok((addr, busy));
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
}
