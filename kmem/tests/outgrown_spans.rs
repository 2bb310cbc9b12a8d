//! Large buffers grown in turn by `realloc`: each move imports a span
//! larger than the last, and the spans the buffers leave are wholly free.
//! Retained, they are never taken again (every later import is larger);
//! an import that none fits passes them over, and a span passed over a
//! few imports in a row is unmapped (`dirty::unmap_outgrown_spans`).
//! Until 2026-12-07 a list of 32 retained spans bounded this by luck;
//! with 256 and none unmapped, 16 buffers grown by 4 KiB to 8 MiB
//! (128 MiB) peaked at +199 MiB resident, now +171. Its own process: the
//! peak resident set is the measure.
#![cfg(not(loom))]

#[path = "common/grow_in_turn.rs"]
mod grow_in_turn;

const BUFFERS: usize = 16;
const FINAL: usize = 8 << 20;
const STEP: usize = 4 << 10;

#[test]
fn spans_that_imports_outgrow_are_not_kept() {
    grow_in_turn::grow(BUFFERS, STEP, FINAL, STEP).check(29, 20);
}
