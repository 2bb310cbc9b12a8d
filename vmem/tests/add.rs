//! `add`: the ranges it refuses, against a model of the managed space.
#![cfg(not(loom))]

use vmem::{Arena, Error, Flags};

mod common;
use common::check;

const NOWAIT: Flags = Flags::NOWAIT;

/// `add` refuses exactly the ranges that intersect managed space, however
/// the spans arrived: a model of the covered ranges decides each of
/// thousands of random adds (the arena's answer comes from the span list
/// and the segment before the range's place, not a walk of every
/// segment). Adds contiguous with a span's end extend its last segment in
/// an arena without a source, so extensions are covered too.
#[test]
fn add_refuses_exactly_the_overlapping_ranges() {
    const Q: usize = 0x1000;
    let a = Arena::builder("adds").quantum(Q).build().unwrap();
    let mut covered: Vec<(usize, usize)> = Vec::new(); // [start, end)
    let mut held = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let (mut ok, mut refused) = (0, 0);
    for step in 0..4_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let addr = (1 << 30) + ((x >> 4) as usize % 4096) * Q;
        let size = (1 + (x >> 20) as usize % 6) * Q;
        let hits = covered.iter().any(|&(s, e)| addr < e && s < addr + size);
        match a.add(addr, size, NOWAIT) {
            Ok(()) => {
                assert!(!hits, "added [{addr:#x}, +{size:#x}) over managed space");
                covered.push((addr, addr + size));
                ok += 1;
            }
            Err(Error::Overlap { .. }) => {
                assert!(hits, "refused [{addr:#x}, +{size:#x}), which is free");
                refused += 1;
            }
            Err(e) => panic!("add: {e}"),
        }
        // Some busy segments, so the list is not all free space.
        if step % 3 == 0 {
            if let Ok(p) = a.alloc(Q, NOWAIT | Flags::INSTANTFIT) {
                held.push(p);
            }
        }
        if step % 251 == 0 {
            check(&a);
        }
    }
    check(&a);
    assert!(ok > 500 && refused > 500, "{ok} added, {refused} refused");
    for p in held {
        a.free(p, Q).unwrap();
    }
    check(&a);
}
