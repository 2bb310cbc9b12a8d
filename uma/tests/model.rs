//! Randomized model tests: a zone against a set model, with
//! `check_invariants()` after every step.

#![cfg(not(loom))]
// Test code: its unsafe blocks free items to the zone that allocated them,
// destroy zones nobody uses afterwards, or touch live items' bytes.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::ptr::NonNull;
use uma::{Flags, Reclaim, Zone, ZoneArgs, ZoneFlags};

fn run(z: &'static Zone, size: usize, seed: u64, steps: usize, limit: usize) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut live: HashMap<usize, (NonNull<u8>, u8)> = HashMap::new();
    let mut tag = 0u8;
    // Requests and frees served, against the zone's counters (the
    // per-thread cache counts its hits lazily).
    let (mut nallocs, mut nfrees) = (0u64, 0u64);
    for step in 0..steps {
        match rng.gen_range(0..100) {
            0..=54 => {
                let flags = if rng.gen_bool(0.1) {
                    Flags::NOWAIT | Flags::ZERO
                } else {
                    Flags::NOWAIT
                };
                match z.alloc(flags) {
                    Some(p) => {
                        nallocs += 1;
                        if flags.contains(Flags::ZERO) {
                            check(p, size, 0);
                        }
                        tag = tag.wrapping_add(1);
                        write(p, size, tag);
                        assert!(
                            live.insert(p.as_ptr() as usize, (p, tag)).is_none(),
                            "step {step}: item handed out twice"
                        );
                    }
                    None => assert!(
                        limit > 0 && live.len() >= limit / 2,
                        "step {step}: unexpected failure"
                    ),
                }
            }
            55..=94 => {
                if let Some(&k) = live.keys().next() {
                    let (p, t) = live.remove(&k).unwrap();
                    check(p, size, t);
                    free(z, p);
                    nfrees += 1;
                }
            }
            95 => z.reclaim(Reclaim::Trim),
            96 => z.reclaim(Reclaim::Drain),
            97 => z.reclaim(Reclaim::DrainCpu),
            98 => z.update_wss(),
            _ => {
                // free a random batch
                let n = rng.gen_range(0..=live.len().min(50));
                let ks: Vec<usize> = live.keys().copied().take(n).collect();
                for k in ks {
                    let (p, t) = live.remove(&k).unwrap();
                    check(p, size, t);
                    free(z, p);
                    nfrees += 1;
                }
            }
        }
        z.check_invariants();
        if limit > 0 {
            assert!(z.stats().items as usize <= limit);
        }
        assert_eq!(
            z.stats().used as usize,
            live.len(),
            "step {step}: used count"
        );
        let s = z.stats();
        assert_eq!(
            (s.requests, s.frees),
            (nallocs, nfrees),
            "step {step}: request counts"
        );
    }
    for (_, (p, t)) in live.drain() {
        check(p, size, t);
        free(z, p);
    }
    z.reclaim(Reclaim::DrainCpu);
    z.check_invariants();
    let st = z.stats();
    assert_eq!(st.used, 0);
    assert_eq!(st.cached_pcpu + st.cached_buckets, 0);
    assert_eq!(destroy(z), 0);
}

#[test]
fn model_small_items_default_buckets() {
    run(zone(ZoneArgs::new("model64", 64)), 64, 1, 4000, 0);
}

#[test]
fn model_tiny_config() {
    run(
        zone(ZoneArgs::new("model-tiny", 24).max_ipers(4).bucket_size(2)),
        24,
        2,
        4000,
        0,
    );
}

#[test]
fn model_offpage_large_items() {
    let z = zone(ZoneArgs::new("model-4k", 4096));
    assert!(z.keg_info().unwrap().layout.offpage);
    run(z, 4096, 3, 1500, 0);
}

#[test]
fn model_forced_offpage_odd_size() {
    run(
        zone(
            ZoneArgs::new("model-odd", 200)
                .flags(ZoneFlags::OFFPAGE)
                .align(16),
        ),
        200,
        4,
        3000,
        0,
    );
}

#[test]
fn model_nobucket() {
    run(
        zone(ZoneArgs::new("model-nobucket", 48).flags(ZoneFlags::NOBUCKET)),
        48,
        5,
        3000,
        0,
    );
}

#[test]
fn model_with_limit() {
    let z = zone(ZoneArgs::new("model-limit", 32).max_ipers(8));
    z.set_max(64);
    run(z, 32, 6, 4000, 64);
}

#[test]
fn model_many_seeds_small() {
    for seed in 10..20 {
        run(
            zone(ZoneArgs::new("model-seeds", 16).max_ipers(8).bucket_size(4)),
            16,
            seed,
            600,
            0,
        );
    }
}
