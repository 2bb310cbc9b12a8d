//! Small requests aligned to more than 16 (cache-padded nodes,
//! `#[repr(align(64))]`, `aligned_alloc(64, n)`) are class blocks served by
//! the fast path's tables, looked up through the size rounded up to the
//! alignment: each block is aligned, lives in the class `class_of` names,
//! and a sized `dealloc` puts it back in that class's zone (a wrong class
//! there would hand one block out twice). One test per binary: the checks
//! read whole zone counters.

// The real allocator: under loom, vmem and uma use loom locks, which
// only work inside a model.
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

#[test]
fn over_aligned_blocks_come_from_and_go_back_to_their_class() {
    // Every size of 1-4 KiB at alignments 32 to 4096: aligned, in the class
    // `class_of` names (its usable size), contents intact.
    let mut live = Vec::new();
    for lg in 5..=12 {
        let align = 1usize << lg;
        for size in (1..=4096).step_by(37).chain([32, 64, 128, 4096]) {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a non-zero layout, freed below with it.
            let p = unsafe { A.alloc(l) };
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
            let c = kmem::class_of(size, align).unwrap();
            assert_eq!(
                kmem::malloc_usable_size(p) + kmem::MALLOC_TAG_BYTES,
                kmem::CLASS_SIZES[c],
                "{size} bytes aligned to {align}"
            );
            // SAFETY: inside the block.
            unsafe { p.write_bytes(lg as u8, size) };
            live.push((p, l, lg as u8));
        }
    }
    for (p, l, b) in live {
        // SAFETY: written above; freed once with its layout.
        unsafe {
            assert!(std::slice::from_raw_parts(p, l.size())
                .iter()
                .all(|&x| x == b));
            A.dealloc(p, l);
        }
    }

    // 300 bytes aligned to 128 and 1100 bytes aligned to 256 (the table's
    // road and the computed one): the malloc-384 and malloc-1280 classes,
    // which nothing else in this binary asks for. Sized frees go back to
    // those zones: every request is matched by a free, nothing stays used,
    // and no block is out twice at a time.
    for (size, align, class_size) in [(300, 128, 384), (1100, 256, 1280)] {
        let l = Layout::from_size_align(size, align).unwrap();
        let c = kmem::class_of(size, align).unwrap();
        assert_eq!(kmem::CLASS_SIZES[c], class_size);
        let z = kmem::class_zone(c).unwrap();
        // SAFETY: a non-zero layout; freed with the same layout.
        unsafe { A.dealloc(A.alloc(l), l) };
        // (No allocation of the test's own from here to the counts.)
        let mut ps = Vec::with_capacity(64);
        let before = z.stats();
        const N: usize = 2_000;
        for i in 0..N {
            // SAFETY: as above.
            unsafe {
                let p = A.alloc(l);
                assert_eq!(p as usize % align, 0);
                assert!(!ps.contains(&p), "a block handed out twice");
                ps.push(p);
                if i % 64 == 63 {
                    for p in ps.drain(..) {
                        A.dealloc(p, l);
                    }
                }
            }
        }
        for p in ps.drain(..) {
            // SAFETY: as above.
            unsafe { A.dealloc(p, l) };
        }
        let after = z.stats();
        assert_eq!(after.requests - before.requests, N as u64);
        assert_eq!(after.frees - before.frees, N as u64);
        assert_eq!(after.used, before.used);
        z.check_invariants();
    }
}
