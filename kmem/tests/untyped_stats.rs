//! `vmstat -m`'s `(untyped)` line: what `GlobalAlloc` (and the C ABI) hold,
//! which no malloc type counts. Its own process: nothing else allocates
//! through kmem here, so the figures are exact.
#![cfg(not(loom))]
// Test code: its unsafe blocks free what they allocated with that layout.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};

use kmem::{malloc_untyped_stats, Flags, Kmem};

kmem::malloc_define!(M_TYPED, "typedtest", "typed blocks beside untyped ones");

#[test]
fn untyped_line_counts_global_alloc_blocks_and_not_typed_ones() {
    let small = Layout::from_size_align(3000, 8).unwrap(); // class 3072
                                                           // 50 pages, rounded up to the 224 KiB large class (56 pages).
    let large = Layout::from_size_align(200 << 10, 8).unwrap();
    let before = malloc_untyped_stats();
    let s: Vec<*mut u8> = (0..1000).map(|_| unsafe { Kmem.alloc(small) }).collect();
    let l: Vec<*mut u8> = (0..10).map(|_| unsafe { Kmem.alloc(large) }).collect();
    // Typed blocks of the same sizes are the type's, not untyped.
    let t: Vec<_> = (0..100)
        .map(|i| {
            kmem::malloc(
                if i % 10 == 0 { 200 << 10 } else { 3000 },
                &M_TYPED,
                Flags::WAITOK,
            )
        })
        .map(Option::unwrap)
        .collect();
    let held = malloc_untyped_stats();
    assert_eq!(held.in_use - before.in_use, 1010, "{before:?} -> {held:?}");
    assert_eq!(
        held.bytes - before.bytes,
        1000 * 3072 + 10 * (224 << 10),
        "{before:?} -> {held:?}"
    );
    assert_eq!(held.requests - before.requests, 1010);
    let class_3072 = kmem::CLASS_SIZES.iter().position(|&c| c == 3072).unwrap();
    assert!(held.sizes & (1 << class_3072) != 0 && held.sizes & (1 << 63) != 0);
    let mut table = String::new();
    kmem::write_vmstat_m(&mut table).unwrap();
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with("(untyped)"))
        .unwrap_or_else(|| panic!("no (untyped) line:\n{table}"));
    assert!(line.contains(&held.in_use.to_string()), "{line}");
    assert!(line.contains("3072") && line.contains("large"), "{line}");
    for p in s {
        unsafe { Kmem.dealloc(p, small) };
    }
    for p in l {
        unsafe { Kmem.dealloc(p, large) };
    }
    for p in t {
        unsafe { kmem::free(p.as_ptr(), &M_TYPED) };
    }
    let after = malloc_untyped_stats();
    assert_eq!(after.in_use, before.in_use, "{after:?}");
    assert_eq!(after.bytes, before.bytes, "{after:?}");
    assert_eq!(after.requests - before.requests, 1010);
}
