//! Every small request through `Kmem` (the fast path's size tables, once
//! they are published, and the slow road before) lands in the class
//! `class_of` names, aligned as asked: the 8-aligned classes (8, 24, 40,
//! 56 bytes) serve requests aligned to at most 8 only, and a request
//! aligned to 16 never gets one. (With the `invariants` feature a block
//! carries a tag past the request, so its usable size is not checked.)

// The real allocator: under loom, vmem and uma use loom locks, which
// only work inside a model.
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

#[test]
fn small_requests_take_their_class_aligned_as_asked() {
    for align in [1usize, 2, 4, 8, 16, 32, 64, 128] {
        for size in 1..=1100usize {
            let l = Layout::from_size_align(size, align).unwrap();
            let c = kmem::class_of(size, align).unwrap();
            let want = kmem::CLASS_SIZES[c];
            if align <= 8 && size <= 64 {
                assert_eq!(want, size.next_multiple_of(8), "{size} aligned to {align}");
            }
            if align == 16 {
                assert_eq!(want % 16, 0, "{size} aligned to 16 in class {want}");
            }
            // Twice: the first may build the tables, the second hits them.
            for _ in 0..2 {
                // SAFETY: a non-zero layout; freed below with it.
                let p = unsafe { A.alloc(l) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "{size} aligned to {align}");
                if !cfg!(feature = "invariants") {
                    assert_eq!(
                        kmem::malloc_usable_size(p),
                        want,
                        "{size} aligned to {align}"
                    );
                }
                // SAFETY: `size` bytes of ours; allocated with `l`.
                unsafe {
                    p.write_bytes(0xa5, size);
                    A.dealloc(p, l);
                }
            }
        }
    }
}

#[test]
fn blocks_of_the_word_classes_move_between_classes_intact_and_free_unsized() {
    let l24 = Layout::from_size_align(24, 8).unwrap();
    // SAFETY: a non-zero layout.
    let p = unsafe { A.alloc(l24) };
    assert!(!p.is_null());
    // SAFETY: 24 bytes of ours; each realloc keeps the layout's alignment
    // and hands back a block of the new size.
    unsafe {
        for i in 0..24 {
            p.add(i).write(i as u8);
        }
        let q = A.realloc(p, l24, 40);
        let r = A.realloc(q, Layout::from_size_align(40, 8).unwrap(), 56);
        if !cfg!(feature = "invariants") {
            assert_eq!(kmem::malloc_usable_size(r), 56);
        }
        let s = A.realloc(r, Layout::from_size_align(56, 8).unwrap(), 100);
        for i in 0..24 {
            assert_eq!(s.add(i).read(), i as u8);
        }
        A.dealloc(s, Layout::from_size_align(100, 8).unwrap());
    }
    // Freed without a size (C's `free`, `kmem::raw::free`): the page
    // metadata finds the class, and its start-of-item check holds.
    for size in [8, 24, 40, 56] {
        let p = kmem::raw::alloc(size, 8);
        assert!(!p.is_null());
        assert_eq!(p as usize % 8, 0);
        if !cfg!(feature = "invariants") {
            assert_eq!(kmem::malloc_usable_size(p), size);
        }
        // SAFETY: a live block from `raw::alloc`, freed once.
        assert!(unsafe { kmem::raw::free(p) });
    }
}
