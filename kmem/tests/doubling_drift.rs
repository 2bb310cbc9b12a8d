//! Buffers doubled in turn, as `Vec`s grow, freed, and doubled again:
//! each size a buffer leaves behind is a block in a page cache (the
//! quantum cache's 64 KiB zone, the large classes' 128 KiB one) that no
//! buffer asks for again this round. A pass that growth brings on trims
//! them, and their pages, kept dirty, make the next size's ranges. Until
//! 2026-12-08 those trims unbacked the pages (so the page caches were
//! trimmed only by the range rule, to spare the next round's faults), and
//! 400 buffers doubled to 256 KiB (100 MiB), three rounds, peaked at +203
//! MiB resident; now +173 MiB (+176 in the `invariants` build). Its own
//! process: the peak resident set is the measure.
#![cfg(not(loom))]

#[path = "common/grow_in_turn.rs"]
mod grow_in_turn;

#[test]
fn buffers_doubled_in_turn_reuse_the_pages_of_the_sizes_they_left() {
    // 400 buffers of 256 KiB: 100 MiB, three rounds; at most 1.9 times.
    grow_in_turn::double(400, 256 << 10, 3).check(19, 10);
}
