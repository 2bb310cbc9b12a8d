//! Large blocks of 64 KiB to 256 KiB are rounded up to their large class
//! (four per doubling: 80, 96, 112, 128, 160, 192, 224, 256 KiB) and go
//! back to the class's cache zone when freed, so that the next request of
//! the class gets one as it is. The rounding is the same on every road:
//! the usable size is the class's, `Kmem`'s sized `dealloc` accepts any
//! size the block could have been asked for, a zero-filled block reads
//! as zero though its class cache holds dirty ones, and a freed block is
//! a double free until it is handed out again.

// The real allocator: under loom, vmem and uma use loom locks, which
// only work inside a model.
#![cfg(not(loom))]
// Test code: its unsafe blocks use blocks they allocated (and free one
// twice on purpose: the allocator validates and drops the second free).
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;

use kmem::{Report, ReportKind};

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

static SEEN: Mutex<Vec<Report>> = Mutex::new(Vec::new());

fn hook(r: &Report) {
    SEEN.lock().unwrap().push(*r);
}

const PAGE: usize = 4096;
const CLASSES: [usize; 8] = [20, 24, 28, 32, 40, 48, 56, 64];

/// The usable size of a block (with `invariants`, `malloc_usable_size`
/// leaves malloc(9)'s type tag out).
fn usable(p: *const u8) -> usize {
    kmem::malloc_usable_size(p) + kmem::MALLOC_TAG_BYTES
}

/// The class pages of a request of `size` bytes (page aligned or less).
fn class_pages(size: usize) -> usize {
    let n = size.div_ceil(PAGE);
    *CLASSES.iter().find(|&&c| c >= n).unwrap()
}

// One test: the checks read the report hook and reuse of the caches,
// which another test's allocations in parallel would disturb.
#[test]
fn large_class_blocks() {
    kmem::set_report_hook(Some(hook));

    // Every road rounds alike: usable sizes, and sized deallocs with any
    // size from the request to the usable size, without a report.
    for size in ((64 << 10) + 1..=256 << 10).step_by(4093) {
        let want = class_pages(size) * PAGE;
        let l = Layout::from_size_align(size, 8).unwrap();
        let p = unsafe { A.alloc(l) };
        assert!(!p.is_null());
        assert_eq!(p as usize % PAGE, 0);
        assert_eq!(usable(p), want, "{size}");
        // (The layout's usable size is what every block of it has at
        // least: its whole pages; `realloc` may place one so.)
        assert_eq!(kmem::usable_size(l), size.div_ceil(PAGE) * PAGE, "{size}");
        unsafe { p.add(want - 1).write(1) };
        let free_as = [size, want, (size + want) / 2][size % 3];
        unsafe { A.dealloc(p, Layout::from_size_align(free_as, 8).unwrap()) };

        let q = kmem::raw::alloc(size, 16);
        assert_eq!(usable(q), want, "raw {size}");
        assert!(unsafe { kmem::raw::free(q) });
    }
    assert!(
        SEEN.lock().unwrap().is_empty(),
        "{:?}",
        SEEN.lock().unwrap()
    );

    // A freed block serves the next request of its class, as it is.
    let l90 = Layout::from_size_align(90_000, 8).unwrap();
    let p = unsafe { A.alloc(l90) };
    unsafe { A.dealloc(p, l90) };
    let l95 = Layout::from_size_align(95_000, 8).unwrap();
    let q = unsafe { A.alloc(l95) };
    assert_eq!(p, q, "the 96 KiB class's cache");

    // realloc within the class keeps the block; past it moves the block
    // (a class's range does not grow in place), contents kept.
    unsafe { q.write_bytes(0x5a, 95_000) };
    let r = unsafe { A.realloc(q, l95, 97_000) };
    assert_eq!(r, q);
    let l97 = Layout::from_size_align(97_000, 8).unwrap();
    let s = unsafe { A.realloc(r, l97, 120_000) };
    assert!(!s.is_null());
    assert!(usable(s) >= 120_000);
    assert!(unsafe { std::slice::from_raw_parts(s, 95_000) }
        .iter()
        .all(|&b| b == 0x5a));
    unsafe { A.dealloc(s, Layout::from_size_align(120_000, 8).unwrap()) };

    // A block that realloc resized in place (here in the dirty pages a
    // freed 1 MiB block left, where it placed the block first) has the
    // request's whole pages, not its class's: its layout frees it all the
    // same, and realloc keeps it for a request of either page count.
    let big = Layout::from_size_align(1 << 20, 8).unwrap();
    let b = unsafe { A.alloc(big) };
    unsafe { b.write_bytes(1, 1 << 20) };
    unsafe { A.dealloc(b, big) };
    let l70 = Layout::from_size_align(70_000, 8).unwrap();
    let p = unsafe { A.alloc(l70) };
    assert_eq!(usable(p), 20 * PAGE);
    let q = unsafe { A.realloc(p, l70, 90_000) };
    assert_eq!(usable(q), 24 * PAGE, "placed with its class's pages");
    let l90 = Layout::from_size_align(90_000, 8).unwrap();
    let r = unsafe { A.realloc(q, l90, 150_000) };
    assert_eq!(r, q, "resized in place");
    assert_eq!(usable(r), 37 * PAGE, "resized to the request's pages");
    let l150 = Layout::from_size_align(150_000, 8).unwrap();
    assert_eq!(unsafe { A.realloc(r, l150, 160_000) }, r, "in place again");
    // (40 pages now: the whole pages of 160,000 bytes, the class of 148,000.)
    unsafe { A.dealloc(r, Layout::from_size_align(148_000, 8).unwrap()) };
    assert!(
        SEEN.lock().unwrap().is_empty(),
        "{:?}",
        SEEN.lock().unwrap()
    );

    // Zero-filled blocks read as zero, though the class caches hold
    // blocks written all over.
    for size in [70_000usize, 100_000, 200_000, 256 << 10] {
        let l = Layout::from_size_align(size, 8).unwrap();
        let ps: Vec<_> = (0..4).map(|_| unsafe { A.alloc(l) }).collect();
        for &p in &ps {
            unsafe { p.write_bytes(0xa5, kmem::malloc_usable_size(p)) };
        }
        for p in ps {
            unsafe { A.dealloc(p, l) };
        }
        let z = unsafe { A.alloc_zeroed(l) };
        let bytes = unsafe { std::slice::from_raw_parts(z, size) };
        assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed {size}");
        unsafe { A.dealloc(z, l) };
        let c = kmem::raw::alloc_zeroed(size, 16);
        let bytes = unsafe { std::slice::from_raw_parts(c, size) };
        assert!(bytes.iter().all(|&b| b == 0), "calloc {size}");
        assert!(unsafe { kmem::raw::free(c) });
    }

    // The class caches hold only the ranges they imported: a block of a
    // class's pages that the arena gave directly (zero-filled here; also
    // over-aligned, placed by realloc, resized in place) goes back to the
    // arena, its pages listed dirty, when freed; one from the cache goes
    // back to the cache. (Cached ranges that realloc had placed in the
    // arena's dirty ranges split them for good.)
    let l = Layout::from_size_align(96 << 10, 8).unwrap();
    let z = unsafe { A.alloc_zeroed(l) };
    let before = kmem::dirty_stats().dirty;
    unsafe { A.dealloc(z, l) };
    assert_eq!(kmem::dirty_stats().dirty, before + (96 << 10));
    let p = unsafe { A.alloc(l) };
    let before = kmem::dirty_stats().dirty;
    unsafe { A.dealloc(p, l) };
    assert_eq!(kmem::dirty_stats().dirty, before);
    assert_eq!(unsafe { A.alloc(l) }, p, "the 96 KiB class's cache");
    unsafe { A.dealloc(p, l) };

    // Over-aligned blocks keep their own page count.
    let l = Layout::from_size_align(100_000, 8 * PAGE).unwrap();
    let p = unsafe { A.alloc(l) };
    assert_eq!(p as usize % (8 * PAGE), 0);
    assert_eq!(usable(p), 100_000usize.div_ceil(PAGE) * PAGE);
    unsafe { A.dealloc(p, l) };
    assert!(
        SEEN.lock().unwrap().is_empty(),
        "{:?}",
        SEEN.lock().unwrap()
    );

    // A second free of a block in its class cache is a double free, on
    // either road, and the block is not handed out twice.
    for size in [100_000usize, 200_000] {
        let p = kmem::raw::alloc(size, 16);
        assert!(unsafe { kmem::raw::free(p) });
        assert!(!unsafe { kmem::raw::free(p) });
        let r = std::mem::take(&mut *SEEN.lock().unwrap());
        assert_eq!(r.len(), 1, "{size}: {r:?}");
        assert_eq!(r[0].kind, ReportKind::DoubleFree, "{size}: {r:?}");
        assert_eq!(r[0].ptr, p as usize);
        let a = kmem::raw::alloc(size, 16);
        let b = kmem::raw::alloc(size, 16);
        assert_ne!(a, b);
        assert!(unsafe { kmem::raw::free(a) && kmem::raw::free(b) });
    }
    kmem::set_report_hook(None);
}
