//! Taking dirty pages back: the large allocation that reuses a listed
//! range ([`reuse()`]), and the room a growing block has ([`roomier_span`]).

use vmem::Arena;

use super::{lists, publish, Range, DIRTY, RETAINED, RING};
use crate::pagemeta;
use crate::sync::plain::Ordering;

/// Takes `size` bytes (more than the quantum cache serves) out of the
/// arena where a recently freed block left dirty pages: reusing them costs
/// no page faults. The range is the smallest listed one that fits, or with
/// `widest` the largest (for a block that `realloc` is growing: the rest
/// of the range is dirty pages for it to grow into in place, see
/// [`crate::malloc::large_resize`]); its tail stays listed. Returns the
/// address and whether the range was cut out of the list already (then
/// the caller labels the pages with [`taken_reused`](super::taken_reused),
/// else [`taken`](super::taken)).
///
/// When no listed range is big enough (and not `widest`), the largest one
/// (if at least [`PARTIAL_MIN`] of `size`) is extended into the free arena
/// space after it, or before it, when the arena has that much free there:
/// the block then faults only the pages beyond the dirty ones, where the
/// arena's own fit would have placed it anywhere (often in clean pages,
/// faulting all of them in while the dirty range waited to be purged).
/// It matters where the budget binds: with half the budget,
/// `malloc-large` (blocks of 5-25 MiB) faulted 294-333k pages with it
/// and 358-409k without (see [`dirty_budget`](super::dirty_budget)'s
/// history); within the budget it reuses nearly every freed page either
/// way.
pub(crate) fn reuse(arena: &Arena<'static>, size: usize, widest: bool) -> Option<(usize, bool)> {
    // The least dirty memory that can serve the block: all of it, or a
    // range to extend.
    let least = if widest { size } else { size / PARTIAL_MIN };
    if DIRTY.load(Ordering::Relaxed) < least {
        return None;
    }
    let mut part: Option<Range> = None;
    let found = {
        let mut l = lists();
        // Not a range in a retained span (`held`): those pages are out of
        // the arena (the span was released after they were listed; they
        // stay listed for their decay, see `purge_retained`), and the
        // claim below would fail after a walk of their page words
        // (large_mixed: 11,500 of 20,000 reuses failed so, 40% of its
        // instructions); the span's next import takes them.
        let best = if widest {
            // The largest range that fits (the first of that size).
            (0..l.len)
                .map(|k| (l.head + k) % RING)
                .filter(|&i| l.ring[i].size >= size && !l.ring[i].held)
                .min_by_key(|&i| core::cmp::Reverse(l.ring[i].size))
        } else {
            // The first range of the least size that fits; when none does,
            // the largest (the first of that size) to extend.
            let (fit, largest) = quick_scan(&l, size);
            if fit.is_none() {
                part = largest
                    .map(|i| l.ring[i])
                    .filter(|e| e.size >= size / PARTIAL_MIN);
            }
            fit
        };
        best.map(|i| {
            let r = l.ring[i];
            l.ring[i].addr += size;
            l.ring[i].size -= size;
            l.trim();
            r
        })
    };
    let Some(rest) = found else {
        return part
            .and_then(|r| extend(arena, r, size))
            .map(|a| (a, false));
    };
    let addr = rest.addr;
    if arena.claim(addr, size, vmem::Flags::NOWAIT).is_ok() {
        return Some((addr, true));
    }
    // Part of it is in use or gone: the listing was stale there (or it
    // spans two of the arena's spans, which the arena never coalesces).
    // Put the front back if it still begins with a dirty page: a look at
    // one page's bit, not a walk of them all (a walk cost as much as the
    // rest of the large path).
    if pagemeta::is_dirty(addr) {
        let mut l = lists();
        if l.len < RING {
            l.push(Range { size, ..rest });
        }
        publish(&l);
    }
    None
}

/// The ring indices of the first listed range of the least size that is
/// at least `size` and of the first of the largest size, if any, among
/// those not in a retained span; one pass, branch-free over the entries
/// (selects, not jumps: the sizes are random, and a branch per entry
/// mispredicted about half the time, the scan 10% of `large_mixed`).
pub(super) fn quick_scan(l: &super::Lists, size: usize) -> (Option<usize>, Option<usize>) {
    let (mut least, mut fit) = (usize::MAX, usize::MAX);
    let (mut most, mut largest) = (0, usize::MAX);
    for k in 0..l.len {
        let e = &l.ring[(l.head + k) % RING];
        let s = if e.held { 0 } else { e.size };
        let key = if s >= size && s != 0 { s } else { usize::MAX };
        let better = key < least;
        least = if better { key } else { least };
        fit = if better { k } else { fit };
        let larger = s > most;
        most = if larger { s } else { most };
        largest = if larger { k } else { largest };
    }
    let at = |k: usize| (k != usize::MAX).then(|| (l.head + k) % RING);
    (at(fit), at(largest))
}

/// A listed range of dirty pages is extended into free arena space by
/// [`reuse()`] only if it is at least this fraction (1/n) of the block: a
/// claim is an arena lock and a search, worth it for a quarter of a
/// block's page faults, not for a few pages.
pub(crate) const PARTIAL_MIN: usize = 4;

/// Claims `size` bytes that begin where the dirty range `r` (smaller than
/// `size`) begins, or end where it ends: whichever the arena has free. The
/// range stays listed; [`taken`](super::taken) cuts it out.
fn extend(arena: &Arena<'static>, r: Range, size: usize) -> Option<usize> {
    let flags = vmem::Flags::NOWAIT;
    if arena.claim(r.addr, size, flags).is_ok() {
        return Some(r.addr);
    }
    let start = (r.addr + r.size).checked_sub(size)?;
    arena.claim(start, size, flags).ok().map(|()| start)
}

/// The size of the largest retained span, if it is larger than `size` and
/// than every listed range of dirty pages in the arena: where a block that
/// `realloc` is growing has the most room to go on growing (see
/// `crate::malloc::moves::realloc_target`). 0 if there is none such.
pub(crate) fn roomier_span(size: usize) -> usize {
    if RETAINED.load(Ordering::Relaxed) < size {
        return 0;
    }
    let l = lists();
    let widest_span = l.spans[..l.nspans].iter().map(|s| s.size).max();
    let widest_range = (0..l.len)
        .map(|k| l.ring[(l.head + k) % RING])
        .filter(|r| r.size >= size && !r.held)
        .map(|r| r.size)
        .max();
    match widest_span {
        Some(s) if s >= size && Some(s) > widest_range => s,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::PAGE_SIZE;

    /// [`extend`] places a block larger than a dirty range over it: from
    /// its start when the arena has room after it, else ending at its end
    /// when there is room before it, else not at all. (An arena of its own:
    /// vmem never touches the addresses it hands out.)
    #[test]
    fn extend_grows_a_dirty_range_into_free_space_after_then_before() {
        const M: usize = 1 << 20;
        let arena = Arena::builder("extend test")
            .quantum(PAGE_SIZE)
            .span(64 * M, 8 * M)
            .build()
            .expect("arena");
        let range = |addr, size| Range {
            addr,
            size,
            stamp: 0,
            tries: 0,
            passed: 0,
            held: false,
        };
        let flags = vmem::Flags::NOWAIT;
        // [64, 66) busy, the range [66, 67) and everything after it free.
        arena.claim(64 * M, 2 * M, flags).expect("claim");
        assert_eq!(extend(&arena, range(66 * M, M), 3 * M), Some(66 * M));
        arena.xfree(66 * M, 3 * M).expect("free");
        // [69, 70) busy: 3 MiB from 66 no longer fit; 2 MiB ending at 69 do.
        arena.claim(69 * M, M, flags).expect("claim");
        assert_eq!(extend(&arena, range(68 * M, M), 2 * M), Some(67 * M));
        arena.xfree(67 * M, 2 * M).expect("free");
        // Room neither after [66, 67) (up to 69) nor before it (from 66).
        assert_eq!(extend(&arena, range(66 * M, M), 4 * M), None);
        // Nothing was taken by the failures.
        assert_eq!(extend(&arena, range(66 * M, M), 3 * M), Some(66 * M));
    }
}
