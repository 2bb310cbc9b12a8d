//! Spans in and out: `vmem_add` (static spans), and for an arena with a
//! source, `vmem_try_fetch` (import, else drain and reclaim, else sleep),
//! `vmem_import` and the release of wholly free spans.

use super::{bug, Arena, Guard, WAIT_RETRY};
use crate::btag::SegmentKind;
use crate::fit::{fit, Constraints};
use crate::source::Source;
use crate::{Error, Flags};

impl<'a> Arena<'a> {
    /// Brings space in after a failed search (`vmem_try_fetch`): import once
    /// per round, else drain the quantum cache and run the reclaim callback,
    /// else sleep (`WAITOK`) or give up (`NOWAIT`). Returns whether to search
    /// again. May drop the lock (with `BT_MAXALLOC` tags hidden).
    pub(super) fn try_fetch<'g>(
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
        // more than the size (FreeBSD's slight overestimate), unless the
        // source's spans are aligned enough already.
        let align = c.align;
        let aligned_spans = align <= source.span_align() && c.phase == 0 && c.nocross == 0;
        let want = if align != self.quantum() && !aligned_spans {
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
        // If the source breaks its promise of aligned spans: the size with
        // the overestimate, once.
        let overestimate = if aligned_spans && align != self.quantum() {
            align
                .checked_mul(2)
                .and_then(|a| a.checked_add(size))
                .and_then(|w| w.checked_next_multiple_of(self.import_quantum))
                .filter(|&w| within(&g, w))
        } else {
            None
        };
        g.bt_save();
        drop(g);
        let mut got = source.import(want, flags);
        if got.is_none() && want > need {
            want = need;
            got = source.import(want, flags);
        }
        // A span the request cannot use (its address window or boundary
        // excludes it, or it is off the source's promised alignment) would
        // stay wholly free and never be released: hand it straight back.
        let unusable = |addr: usize, want: usize| {
            addr & self.quantum_mask == 0
                && addr.checked_add(want - 1).is_some()
                && fit(addr, want, size, c).is_none()
        };
        if let Some(addr) = got.filter(|&a| unusable(a, want)) {
            source.release(addr, want);
            got = None;
            if let Some(w) = overestimate {
                want = w;
                got = source.import(want, flags);
                if let Some(addr) = got.filter(|&a| unusable(a, want)) {
                    source.release(addr, want);
                    got = None;
                }
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
    pub(super) fn release_span(&self, addr: usize, size: usize) {
        match self.source {
            Some(source) => source.release(addr, size),
            None => bug("released a span with no source"),
        }
    }

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
}
