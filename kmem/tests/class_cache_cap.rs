//! Small buffers doubled in turn, as many small `Vec`s grow, freed, and
//! doubled again: each class a buffer leaves (64, 128, 256, 512 bytes) is
//! a block in that class's bucket cache that no buffer asks for again
//! this round, while the next class takes fresh slabs. Each class's cache
//! has a soft cap (`timeout::CACHE_CAP_BYTES`): once another class
//! is about to take a slab, a class past its cap gives the excess back,
//! and the slab is made of its pages. Until 2026-12-08 the classes kept
//! it until a pass trimmed them, and every round each class was drawn
//! whole within the period, so none was: 100,000 buffers doubled to 1
//! KiB (98 MiB), three rounds, peaked at +183 MiB resident; now +124 MiB. Its own
//! process: the peak resident set is the measure.
#![cfg(not(loom))]

#[path = "common/grow_in_turn.rs"]
mod grow_in_turn;

#[test]
fn small_buffers_doubled_in_turn_reuse_the_slabs_of_the_classes_they_left() {
    grow_in_turn::double(100_000, 1024, 3).check(14, 10);
}
