//! kmem as the global allocator of this test binary: basic shapes.

// The real allocator: under loom, vmem and uma use loom locks, which
// only work inside a model.
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

#[test]
fn vec_string_box() {
    let mut v: Vec<u64> = (0..100_000).collect();
    v.push(5);
    assert_eq!(v.iter().sum::<u64>(), 99_999 * 100_000 / 2 + 5);
    let s: String = (0..1000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert_eq!(s.len(), 1000);
    let b = Box::new([7u8; 40_000]);
    assert!(b.iter().all(|&x| x == 7));
}

#[test]
fn every_class_and_large_sizes_round_trip() {
    for size in [
        1usize,
        8,
        9,
        16,
        100,
        128,
        129,
        1000,
        4096,
        5000,
        32768,
        32769,
        1 << 20,
        9 << 20,
    ] {
        for align in [1usize, 16, 64, 4096, 1 << 21] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero layout.
            let p = unsafe { A.alloc(l) };
            assert!(!p.is_null(), "{size} {align}");
            assert_eq!(p as usize % align, 0, "{size} {align}");
            // SAFETY: p is size bytes.
            unsafe {
                p.write_bytes(0xa5, size);
                assert_eq!(*p.add(size - 1), 0xa5);
                A.dealloc(p, l);
            }
        }
    }
}

#[test]
fn zeroed_and_realloc() {
    for size in [24usize, 3000, 100_000] {
        let l = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero layout; we own the blocks.
        unsafe {
            let p = A.alloc_zeroed(l);
            assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
            p.write_bytes(1, size);
            let q = A.realloc(p, l, size * 3);
            assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 1));
            A.dealloc(q, Layout::from_size_align(size * 3, 8).unwrap());
        }
    }
}

kmem::malloc_define!(M_TEST, "test", "smoke test");

#[test]
fn malloc9_stats() {
    // With `invariants` each block ends with an 8-byte type tag that the
    // usable size leaves out (MALLOC_TAG_BYTES is 0 without).
    let tag = kmem::MALLOC_TAG_BYTES;
    let p = kmem::malloc(100, &M_TEST, kmem::Flags::WAITOK.with(kmem::Flags::ZERO)).unwrap();
    let q = kmem::malloc((1 << 20) - tag, &M_TEST, kmem::Flags::WAITOK).unwrap();
    let s = M_TEST.stats();
    assert_eq!(s.in_use, 2);
    assert_eq!(s.bytes, 112 + (1 << 20));
    assert_eq!(kmem::malloc_usable_size(p.as_ptr()), 112 - tag);
    assert_eq!(kmem::malloc_usable_size(q.as_ptr()), (1 << 20) - tag);
    // SAFETY: ours.
    unsafe {
        kmem::free(p.as_ptr(), &M_TEST);
        kmem::free(q.as_ptr(), &M_TEST);
    }
    assert_eq!(M_TEST.stats().in_use, 0);
    let mut out = String::new();
    kmem::write_stats(&mut out).unwrap();
    assert!(out.contains("malloc-112") && out.contains("test"), "{out}");
    println!("{out}");
}
