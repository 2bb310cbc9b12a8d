//! `larson`, after Larson & Krishnan, "Memory allocation for long-running
//! server applications" (ISMM 1998).
//!
//! The paper models a server: each worker thread owns an array of slots
//! holding blocks of random sizes; it repeatedly picks a random slot, frees
//! the block there and allocates a new block of a random size into it.
//! After a fixed number of such replacements (a round) the thread passes
//! its array to a newly created thread and exits, so every block is freed
//! by a thread other than the one that allocated it, and thread creation
//! and exit are part of the load. Here: one lineage per thread, 1000
//! slots each, sizes uniform in 8..=1000 bytes, 10,000 replacements per
//! round, and 3000 rounds at scale 1. (The original reports throughput
//! over a fixed time; this one does a fixed amount of work and reports the
//! time.)

use super::{Block, Params, Rng};
use std::thread;

const SLOTS: usize = 1000;
const MIN: usize = 8;
const MAX: usize = 1000;
const REPLACEMENTS: usize = 10_000;
/// Rounds per thread lineage at scale 1.
const ROUNDS: u64 = 3_000;

pub(super) fn run(p: &Params) -> u64 {
    let rounds = p.scaled(ROUNDS);
    thread::scope(|s| {
        for t in 0..p.threads {
            s.spawn(move || lineage(p.seed, t as u64, rounds));
        }
    });
    // One free and one allocation per replacement, plus the initial fill
    // and the final frees.
    p.threads as u64 * (rounds * REPLACEMENTS as u64 * 2 + 2 * SLOTS as u64)
}

fn lineage(seed: u64, t: u64, rounds: u64) {
    let mut rng = Rng::new(seed, t);
    let mut slots: Vec<Option<Block>> = (0..SLOTS)
        .map(|_| Some(Block::new(rng.range(MIN, MAX), rng.next_u64())))
        .collect();
    for r in 0..rounds {
        let mut rng = Rng::new(seed ^ r, t);
        // The next thread of the lineage takes over the slots; this one
        // waits only to hand them on again.
        slots = thread::spawn(move || {
            for _ in 0..REPLACEMENTS {
                let i = rng.below(SLOTS);
                drop(slots[i].take());
                slots[i] = Some(Block::new(rng.range(MIN, MAX), rng.next_u64()));
            }
            slots
        })
        .join()
        .unwrap_or_else(|_| panic!("larson: a worker thread panicked"));
    }
}
