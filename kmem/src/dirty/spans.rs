//! Retained spans: wholly free spans the kernel arena released, kept
//! mapped for the next import that fits (see the parent module's doc).

use super::{
    lists, now, pagemeta, publish, retain_budget, slabs, Range, DIRTY, PURGED, SPANS, SPAN_HITS,
};
use crate::os::{self, PAGE_SIZE};
use crate::sync::plain::Ordering;

/// Keeps a wholly free span the arena released, if there is room; false
/// if the caller must unmap it.
pub(crate) fn retain_span(addr: usize, size: usize) -> bool {
    let mut l = lists();
    if l.nspans == SPANS || l.retained + size > retain_budget() {
        return false;
    }
    let i = l.nspans;
    l.spans[i] = Range {
        addr,
        size,
        stamp: now(),
        tries: 0,
        passed: 0,
        held: false,
    };
    l.nspans += 1;
    l.retained += size;
    l.mark_span(addr, addr + size, Some(true));
    publish(&l);
    true
}

/// A retained span for an import of `size` bytes (the smallest that fits;
/// the front of a larger one), still registered, its dirty pages labelled.
pub(crate) fn take_span(size: usize) -> Option<usize> {
    let mut l = lists();
    let i = (0..l.nspans)
        .filter(|&i| l.spans[i].size >= size)
        .min_by_key(|&i| l.spans[i].size)?;
    let addr = l.spans[i].addr;
    if l.spans[i].size == size {
        l.remove_span(i);
    } else {
        l.spans[i].addr += size;
        l.spans[i].size -= size;
        l.spans[i].passed = 0;
        l.retained -= size;
    }
    l.mark_span(addr, addr + size, Some(false));
    // Not listed again: its dirty pages are listed already, each freed
    // block's range with its own stamp (kept while the span was retained,
    // for `purge_retained`), and those listings describe them as arena
    // space again. (Listed whole at each import, a block alone in its
    // span filled the ring with 256 listings of clean pages: 18,000
    // instructions a 256 KiB `malloc` + `free`.)
    publish(&l);
    SPAN_HITS.fetch_add(1, Ordering::Relaxed);
    Some(addr)
}

/// Imports in a row that a retained span may be too small for before
/// [`unmap_outgrown_spans`] unmaps it.
const PASSED_MAX: u8 = 8;

/// An import that no retained span could take (each is smaller) is
/// about to map afresh: each span was passed over once more, and those
/// passed over [`PASSED_MAX`] times in a row are unmapped first.
/// Imports that outgrow every span the arena gave back (buffers grown by
/// `realloc`, each import larger than the last) never take those spans
/// again; kept, they only raised the peak (64 buffers grown in turn by
/// 4 KiB to 8 MiB: 808 MB with up to 256 spans retained, none ever taken
/// back, against 681 with 32; now 549). A span taken for an import
/// starts again. Not at the first miss: a program whose large blocks come
/// in all sizes takes its spans back for the smaller imports
/// (`malloc-large` of our suite, unmapping whenever an import did not
/// fit: 10k more page faults out of 20k; after four misses 2k more; after
/// eight, none).
pub(crate) fn unmap_outgrown_spans() {
    {
        let mut l = lists();
        let n = l.nspans;
        for r in &mut l.spans[..n] {
            r.passed = r.passed.saturating_add(1);
        }
    }
    loop {
        let r = {
            let mut l = lists();
            let Some(i) = (0..l.nspans).find(|&i| l.spans[i].passed >= PASSED_MAX) else {
                return;
            };
            let r = l.drop_span(i);
            publish(&l);
            r
        };
        unmap_span(r.addr, r.size);
    }
}

/// Unregisters and unmaps a span for good (its dirty pages no longer
/// count).
pub(crate) fn unmap_span(addr: usize, size: usize) {
    let dirty = pagemeta::clean(addr, size / PAGE_SIZE) * PAGE_SIZE;
    DIRTY.fetch_sub(dirty, Ordering::Relaxed);
    PURGED.fetch_add(dirty, Ordering::Relaxed);
    slabs::forget_chunks(addr, size);
    pagemeta::unregister(addr, size);
    // SAFETY: a wholly free span out of the arena and off the lists: ours,
    // unused.
    unsafe { os::unmap(addr, size) };
}
