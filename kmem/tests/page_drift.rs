//! `class_drift.rs` one size up: buffers grown in turn by `realloc` through
//! the page caches (the quantum cache's 36-64 KiB zones and the large
//! classes' 80-128 KiB ones) instead of the slab classes. A buffer that
//! moves on from a page cache's size leaves its range in that zone's
//! cache, which no buffer asks for again. Those zones have no slow-path
//! hook of their own, so until 2026-12-07 nothing ran the lazy timeout
//! while such buffers grew, and a timeout pass kept what the period had
//! freed into a cache as its working set: 500 buffers grown to 128 KiB
//! (62 MiB) peaked at +281 MiB resident, every size they passed through
//! still cached; then +128 MiB, the page caches trimmed by the range rule
//! (their trims unbacked the pages, which buffers doubled in turn then
//! faulted back); since 2026-12-08, their trims keeping the pages dirty,
//! trimmed as the size classes are: +96 MiB. Its own process: the peak
//! resident set is the measure.
#![cfg(not(loom))]

#[path = "common/grow_in_turn.rs"]
mod grow_in_turn;

const BUFFERS: usize = 500;
/// Bytes each buffer ends at: 62.5 MiB in all.
const FINAL: usize = 128 << 10;
/// Bytes each buffer starts at (the quantum cache's sizes begin above
/// 32 KiB), and appends per turn.
const START: usize = 32 << 10;
const STEP: usize = 512;

#[test]
fn buffers_grown_through_the_page_caches_keep_near_their_live_bytes() {
    grow_in_turn::grow(BUFFERS, START, FINAL, STEP).check(2, 1);
}
