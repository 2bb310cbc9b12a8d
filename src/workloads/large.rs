//! `malloc-large`, after the description of the large-object test in the
//! mimalloc benchmark suite, scaled down.
//!
//! One thread keeps a ring of 8 live large blocks and repeatedly replaces
//! a random one with a block of a new random size; every page of every
//! block is written when it is allocated and verified before it is freed.
//! The original draws 5..25 MiB; here sizes are 64 KiB..8 MiB (at most
//! 64 MiB live), which crosses the usual mmap thresholds and exercises how
//! an allocator caches, reuses and returns large spans. 7000 replacements
//! at scale 1.

use super::{Block, Params, Rng};

const LIVE: usize = 8;
const MIN: usize = 64 << 10;
const MAX: usize = 8 << 20;
const REPLACEMENTS: u64 = 7_000;

pub(super) fn run(p: &Params) -> u64 {
    let mut rng = Rng::new(p.seed, 0);
    let mut ring: Vec<Option<Block>> = (0..LIVE).map(|_| None).collect();
    let n = p.scaled(REPLACEMENTS);
    for _ in 0..n {
        let i = rng.below(LIVE);
        drop(ring[i].take());
        ring[i] = Some(Block::new(rng.range(MIN, MAX), rng.next_u64()));
    }
    drop(ring);
    2 * n
}
