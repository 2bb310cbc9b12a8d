//! Teardown: `vmem_destroy` and `Drop`.

use super::Arena;
use crate::bins::Freelists;
use crate::btag::SegmentKind;
use crate::hash::BusyHash;
use crate::Error;

impl Arena<'_> {
    /// Empties the arena if nothing in it is allocated (`vmem_destroy`):
    /// drains the quantum cache, releases imported spans to the source,
    /// forgets static spans and returns spare tags. The arena stays usable
    /// (empty). With allocated segments it changes nothing and returns
    /// [`Error::Busy`] naming how many and how large.
    pub fn destroy(&mut self) -> Result<(), Error> {
        if let Some(qc) = self.qcache {
            qc.drain(self);
        }
        let name = self.name;
        let g = self.state.get_mut();
        if g.nbusytag != 0 {
            return Err(Error::Busy {
                arena: name,
                segments: g.nbusytag,
                bytes: g.inuse,
            });
        }
        self.teardown();
        Ok(())
    }

    /// Removes every segment but the cursor: imported spans with no busy
    /// segment go back to the source, the rest is forgotten; all tags but
    /// the cursor go back to the tag source.
    fn teardown(&mut self) {
        let (source, tags) = (self.source, self.tags);
        let g = self.state.get_mut();
        let cursor = g.cursor;
        let mut cur = g.seg_head;
        // Spans that still hold busy segments are leaked on purpose: their
        // space is in use by someone (reported by the caller).
        let mut span_busy = false;
        let mut span: Option<(usize, usize)> = None;
        let flush = |span: Option<(usize, usize)>, busy: bool| {
            if let (Some((addr, size)), Some(source), false) = (span, source, busy) {
                source.release(addr, size);
            }
        };
        while let Some(t) = cur {
            cur = t.seg_next();
            match t.kind() {
                SegmentKind::Cursor => continue,
                SegmentKind::Span => {
                    flush(span.take(), span_busy);
                    span = Some((t.start(), t.size()));
                    span_busy = false;
                }
                SegmentKind::StaticSpan => {
                    flush(span.take(), span_busy);
                }
                SegmentKind::Busy => span_busy = true,
                SegmentKind::Free => {}
            }
            g.seg_unlink(t);
            g.ntags -= 1;
            // SAFETY: the tag is off every list (the freelists and hash are
            // reset below) and came from our tag source.
            unsafe { tags.free_tag(t.into_raw()) };
        }
        flush(span, span_busy);
        g.span_head = None;
        g.span_tail = None;
        let table = g.hash.take();
        // SAFETY: the table is uninstalled and its chains were freed above.
        unsafe { BusyHash::free_table(table, tags) };
        g.free = Freelists::new();
        g.nbusytag = 0;
        g.nowned = 0;
        g.inuse = 0;
        g.size = 0;
        let spare = g.freetags.take();
        g.ntags -= g.nfreetags;
        g.nfreetags = 0;
        debug_assert_eq!(g.ntags, 1, "only the cursor is left");
        debug_assert!(g.seg_head == Some(cursor) && g.seg_tail == Some(cursor));
        self.free_chain(spare);
    }
}

impl Drop for Arena<'_> {
    /// Destroys the arena. With allocated segments still present it reports
    /// them on standard error and leaks the spans that hold them (their
    /// space is still in use); tags are returned either way.
    fn drop(&mut self) {
        if let Err(e) = self.destroy() {
            crate::report::report!("vmem: {e}; leaking the spans that hold them");
            self.teardown();
        }
        let cursor = self.state.get_mut().cursor;
        // SAFETY: the cursor tag came from our source; the arena is going
        // away and nothing refers to it any more.
        unsafe { self.tags.free_tag(cursor.into_raw()) };
    }
}
