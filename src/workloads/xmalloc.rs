//! `xmalloc-test`, after Lever & Boreham, "malloc() Performance in a
//! Multithreaded Linux Environment" (USENIX 2000).
//!
//! Producer threads allocate blocks and hand them to consumer threads,
//! which free them: every free is a remote free, the pattern of a
//! pipeline or a producer/consumer server, and the one that hurts
//! allocators with strictly thread-local heaps. Here: as many producers as
//! `threads` and as many consumers; producers allocate batches of 64
//! blocks of 16..=512 bytes and send each batch to the consumers in turn
//! over bounded queues (so at most a few thousand blocks are in flight);
//! consumers verify and free. The queue batches are `Vec`s, allocated by
//! the producer and freed by the consumer as well.

use super::{Block, Params, Rng};
use std::sync::mpsc::sync_channel;
use std::thread;

const BATCH: usize = 64;
const MIN: usize = 16;
const MAX: usize = 512;
/// Batches per producer at scale 1.
const BATCHES: u64 = 125_000;
/// Queue capacity, in batches.
const QUEUE: usize = 16;

pub(super) fn run(p: &Params) -> u64 {
    let batches = p.scaled(BATCHES);
    let n = p.threads;
    thread::scope(|s| {
        let mut senders = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = sync_channel::<Vec<Block>>(QUEUE);
            senders.push(tx);
            s.spawn(move || {
                for batch in rx {
                    drop(batch); // verifies every block, then frees
                }
            });
        }
        for t in 0..n {
            let senders = senders.clone();
            s.spawn(move || {
                let mut rng = Rng::new(p.seed, t as u64);
                for k in 0..batches as usize {
                    let batch: Vec<Block> = (0..BATCH)
                        .map(|_| Block::new(rng.range(MIN, MAX), rng.next_u64()))
                        .collect();
                    senders[(t + k) % n]
                        .send(batch)
                        .unwrap_or_else(|_| panic!("xmalloc-test: a consumer exited early"));
                }
            });
        }
        // Consumers end when the producers' senders (and these) are gone.
        drop(senders);
    });
    n as u64 * batches * (2 * BATCH as u64 + 2)
}
