//! `mstress`, after the description of the stress test in the mimalloc
//! benchmark suite (Leijen, Zorn and de Moura, "Mimalloc: Free List
//! Sharding in Action", 2019).
//!
//! Thread churn with objects that outlive their thread: the run is a
//! sequence of rounds; each round starts `threads` fresh threads, each of
//! which performs a number of random steps on a private set of objects
//! (allocate, free a random one, or swap one with a random slot of a
//! transfer array shared by all threads and rounds) and frees what it
//! still holds when it exits. Objects parked in the transfer array survive
//! their thread and are freed by some later thread, or at the end. Sizes
//! vary widely: mostly small (8..=128 B), some medium (..=4 KiB), a few
//! large (..=64 KiB) and rarely huge (..=1 MiB). Here: 50 rounds, a
//! private set of at most 500 objects, 1000 transfer slots, and 400,000
//! steps per thread and round at scale 1 (below scale 1, fewer rounds).

use super::{Block, Params, Rng};
use std::sync::Mutex;
use std::thread;

const ROUNDS: u64 = 50;
const STEPS: u64 = 400_000;
const LOCAL: usize = 500;
const TRANSFER: usize = 1000;

fn size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0 => rng.range(64 << 10, 1 << 20),
        1..=9 => rng.range(4097, 64 << 10),
        10..=99 => rng.range(129, 4096),
        _ => rng.range(8, 128),
    }
}

pub(super) fn run(p: &Params) -> u64 {
    let rounds = p.scaled(ROUNDS).min(ROUNDS);
    // Work beyond ROUNDS rounds goes into longer rounds, so that thread
    // creation stays a fixed share.
    let steps = p.scaled(ROUNDS * STEPS) / rounds;
    let transfer: Vec<Mutex<Option<Block>>> = (0..TRANSFER).map(|_| Mutex::new(None)).collect();
    let ops = std::sync::atomic::AtomicU64::new(0);
    for r in 0..rounds {
        thread::scope(|s| {
            for t in 0..p.threads {
                let (transfer, ops) = (&transfer, &ops);
                s.spawn(move || {
                    let mut rng = Rng::new(p.seed ^ (r << 32), t as u64);
                    let n = worker(&mut rng, steps, transfer);
                    ops.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
    }
    drop(transfer); // the survivors, verified and freed
    ops.into_inner()
}

fn worker(rng: &mut Rng, steps: u64, transfer: &[Mutex<Option<Block>>]) -> u64 {
    let mut local: Vec<Block> = Vec::with_capacity(LOCAL);
    let mut ops = 0;
    for _ in 0..steps {
        match rng.below(16) {
            // Park one of ours in the transfer array, taking whatever was
            // there (allocated by another thread, maybe a dead one).
            0 if !local.is_empty() => {
                let i = rng.below(local.len());
                let mine = local.swap_remove(i);
                let slot = rng.below(transfer.len());
                let theirs = transfer[slot]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(mine);
                if let Some(b) = theirs {
                    local.push(b);
                }
            }
            // Free a random one.
            1..=6 if !local.is_empty() => {
                let i = rng.below(local.len());
                drop(local.swap_remove(i));
                ops += 1;
            }
            // Allocate, replacing a random one when the set is full.
            _ => {
                let b = Block::new(size(rng), rng.next_u64());
                if local.len() == LOCAL {
                    let i = rng.below(LOCAL);
                    drop(std::mem::replace(&mut local[i], b));
                    ops += 1;
                } else {
                    local.push(b);
                }
                ops += 1;
            }
        }
    }
    ops + local.len() as u64
}
