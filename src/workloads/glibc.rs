//! `glibc-simple` and `glibc-thread`, after the descriptions of glibc's
//! malloc micro-benchmarks (`benchtests/bench-malloc-simple.c` and
//! `bench-malloc-thread.c`).
//!
//! `glibc-simple` times the plain cost of malloc and free on one thread:
//! in a loop, allocate a batch of blocks of small random sizes
//! (16..=512 B) and free them in allocation order, with batches of 25,
//! 100, 400 and 1600 blocks so that both the hot cache and the deeper
//! free lists are exercised. `glibc-thread` runs the same loop on every
//! thread at once, each with its own blocks: it measures how well the
//! fast path scales when threads never share memory.

use super::{Block, Params, Rng};
use std::thread;

const MIN: usize = 16;
const MAX: usize = 512;
const BATCHES: [usize; 4] = [25, 100, 400, 1600];
/// Loops over all batch sizes at scale 1 (2125 blocks each).
const LOOPS: u64 = 23_000;

fn simple_loop(seed: u64, stream: u64, loops: u64) -> u64 {
    let mut rng = Rng::new(seed, stream);
    let mut live: Vec<Block> = Vec::with_capacity(BATCHES[3]);
    for _ in 0..loops {
        for n in BATCHES {
            for _ in 0..n {
                live.push(Block::new(rng.range(MIN, MAX), rng.next_u64()));
            }
            live.drain(..).for_each(drop);
        }
    }
    loops * 2 * BATCHES.iter().sum::<usize>() as u64
}

pub(super) fn simple(p: &Params) -> u64 {
    simple_loop(p.seed, 0, p.scaled(LOOPS))
}

pub(super) fn thread(p: &Params) -> u64 {
    let loops = p.scaled(LOOPS);
    thread::scope(|s| {
        let handles: Vec<_> = (0..p.threads)
            .map(|t| s.spawn(move || simple_loop(p.seed, t as u64, loops)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("glibc-thread: a worker panicked"))
            })
            .sum()
    })
}
