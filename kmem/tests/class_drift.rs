//! A working set that moves from size class to size class faster than the
//! lazy timeout's period: 1,000 buffers grown in turn by `realloc`, a few
//! bytes at a time, as `perl` grows 1,000 strings appended to in turn.
//! Each step takes every buffer up a class, and no buffer goes back to the
//! class it left, so what a class's cache holds is never asked for again.
//! The process may hold its live bytes and a few classes' worth more, not
//! every class's peak: 2026-12-07, 23 MiB of buffers peaked at +80 MiB
//! resident, and at +179 MiB without the timeout's growth pass (then only
//! a pass a second trims the classes left behind, and this takes 0.2 s);
//! +60 MiB since that pass gives back at once what a class's cache only
//! took in (`uma::Zone::trim_early`; +72-75 MiB in the `invariants` build,
//! whose zones have no fast path, hence the bound of 4x).
//! Its own process: the peak resident set is the measure.
#![cfg(not(loom))]

#[path = "common/grow_in_turn.rs"]
mod grow_in_turn;

const MIB: usize = 1 << 20;
const BUFFERS: usize = 1000;
/// Bytes each buffer ends at: 24 MiB in all, in the 24 KiB class.
const FINAL: usize = 24 << 10;
/// Bytes appended to each buffer per turn.
const STEP: usize = 40;

#[test]
fn buffers_grown_in_turn_keep_near_their_live_bytes() {
    let grow_in_turn::Grown { live, peak } = grow_in_turn::grow(BUFFERS, STEP, FINAL, STEP);
    let d = kmem::dirty_stats();
    eprintln!(
        "live {} MiB, peak resident +{} MiB, {} timeout passes, {} MiB of slabs freed dirty, {} MiB of dirty pages reused",
        live / MIB,
        peak / MIB,
        kmem::timeout_passes(),
        d.slabs_freed_total / MIB,
        d.reused_total / MIB
    );
    assert!(
        peak <= 4 * live,
        "peak resident +{} MiB for {} MiB of buffers",
        peak / MIB,
        live / MIB
    );
    // The classes left behind gave their slabs back with the pages kept,
    // and the classes after them took those pages instead of new ones.
    assert!(
        d.slabs_freed_total > live,
        "{} MiB of slabs freed",
        d.slabs_freed_total / MIB
    );
    assert!(
        d.reused_total > live,
        "{} MiB of dirty pages reused",
        d.reused_total / MIB
    );
}
