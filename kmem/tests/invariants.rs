//! The `invariants` feature's bad-input checks through the malloc API:
//! wrong malloc types (the type tag at the end of every malloc(9) block),
//! double frees of small blocks (kmem's own check, and UMA's debug bitset
//! forwarded to kmem's report hook), and the tag never being reachable
//! through the documented usable size.
//!
//! Every test holds one lock for its whole body: the report hook is
//! process-wide, and the statistics deltas and pointer reuse checked here
//! need no other test allocating in between.

#![cfg(feature = "invariants")]
#![cfg(not(loom))]
// Test code: its unsafe blocks hand kmem deliberately bad pointers (which
// it validates), or free blocks they allocated.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use kmem::{Flags, MallocType, Report, ReportKind, MALLOC_TAG_BYTES};

kmem::malloc_define!(M_INV_A, "inv-a", "invariants tests: the allocating type");
kmem::malloc_define!(M_INV_B, "inv-b", "invariants tests: another type");

static SEEN: Mutex<Vec<Report>> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn hook(r: &Report) {
    SEEN.lock().unwrap_or_else(|e| e.into_inner()).push(*r);
}

/// Runs `f` with the hook installed and returns the reports it produced.
/// The caller holds [`serial`].
fn reports(f: impl FnOnce()) -> Vec<Report> {
    SEEN.lock().unwrap().clear();
    kmem::set_report_hook(Some(hook));
    f();
    kmem::set_report_hook(None);
    std::mem::take(&mut *SEEN.lock().unwrap())
}

fn fill(p: NonNull<u8>, n: usize, seed: u8) {
    for i in 0..n {
        unsafe { *p.as_ptr().add(i) = seed.wrapping_add(i as u8) };
    }
}

fn check(p: NonNull<u8>, n: usize, seed: u8) -> bool {
    (0..n).all(|i| unsafe { *p.as_ptr().add(i) } == seed.wrapping_add(i as u8))
}

/// `(in_use, bytes)` of a type.
fn use_of(t: &MallocType) -> (u64, u64) {
    let s = t.stats();
    (s.in_use, s.bytes)
}

fn assert_wrong_type(r: &[Report], op: &str, p: NonNull<u8>, zone: &str) {
    assert_eq!(r.len(), 1, "{r:?}");
    let r = &r[0];
    assert_eq!(r.kind, ReportKind::WrongType, "{r:?}");
    assert_eq!(r.op, op);
    assert_eq!(r.ptr, p.as_ptr() as usize);
    assert_eq!(r.zone, zone);
    assert_eq!(r.mtype, "inv-b", "the type given");
    assert_eq!(r.actual_type, "inv-a", "the allocating type");
    let msg = r.to_string();
    for want in [
        format!("{:#x}", p.as_ptr() as usize),
        format!("\"{zone}\""),
        "\"inv-b\" given".to_string(),
        "allocated by type \"inv-a\"".to_string(),
    ] {
        assert!(msg.contains(&want), "{msg:?} lacks {want:?}");
    }
}

#[test]
fn wrong_type_on_free_of_a_small_block_is_reported_and_dropped() {
    let _g = serial();
    let (a0, b0) = (use_of(&M_INV_A), use_of(&M_INV_B));
    let p = kmem::malloc(100, &M_INV_A, Flags::WAITOK).unwrap();
    let n = kmem::malloc_usable_size(p.as_ptr());
    fill(p, n, 7);
    let r = reports(|| unsafe { kmem::free(p.as_ptr(), &M_INV_B) });
    assert_wrong_type(&r, "free", p, "malloc-112");
    // Dropped: nothing freed, nothing written, no figure moved.
    assert!(check(p, n, 7), "a refused free must not touch the block");
    assert_eq!(use_of(&M_INV_A), (a0.0 + 1, a0.1 + 112));
    assert_eq!(use_of(&M_INV_B), b0);
    // The right type frees it.
    assert_eq!(
        reports(|| unsafe { kmem::free(p.as_ptr(), &M_INV_A) }),
        vec![]
    );
    assert_eq!(use_of(&M_INV_A), a0);
}

#[test]
fn wrong_type_on_free_of_a_large_block_is_reported_and_dropped() {
    let _g = serial();
    let a0 = use_of(&M_INV_A);
    let p = kmem::malloc(200_000, &M_INV_A, Flags::WAITOK).unwrap();
    let n = kmem::malloc_usable_size(p.as_ptr());
    assert!(n >= 200_000);
    fill(p, n, 3);
    let r = reports(|| unsafe { kmem::free(p.as_ptr(), &M_INV_B) });
    assert_wrong_type(&r, "free", p, "large");
    assert!(check(p, n, 3));
    assert_eq!(use_of(&M_INV_A).0, a0.0 + 1);
    assert_eq!(
        reports(|| unsafe { kmem::free(p.as_ptr(), &M_INV_A) }),
        vec![]
    );
    assert_eq!(use_of(&M_INV_A), a0);
}

#[test]
fn wrong_type_on_zfree_is_reported_before_anything_is_zeroed() {
    let _g = serial();
    let a0 = use_of(&M_INV_A);
    for size in [40, 70_000] {
        let p = kmem::malloc(size, &M_INV_A, Flags::WAITOK).unwrap();
        let n = kmem::malloc_usable_size(p.as_ptr());
        fill(p, n, 11);
        let zone = if size < 1000 { "malloc-48" } else { "large" };
        let r = reports(|| unsafe { kmem::zfree(p.as_ptr(), &M_INV_B) });
        assert_wrong_type(&r, "zfree", p, zone);
        assert!(check(p, n, 11), "zfree with a wrong type zeroed the block");
        assert_eq!(
            reports(|| unsafe { kmem::zfree(p.as_ptr(), &M_INV_A) }),
            vec![]
        );
    }
    assert_eq!(use_of(&M_INV_A), a0);
}

#[test]
fn wrong_type_on_realloc_and_reallocf_is_reported_and_the_block_kept() {
    let _g = serial();
    let a0 = use_of(&M_INV_A);
    let p = kmem::malloc(300, &M_INV_A, Flags::WAITOK).unwrap();
    fill(p, 300, 5);
    // Both in place (same class) and moving sizes are refused.
    for new_size in [310, 5000] {
        let r = reports(|| {
            let q = unsafe { kmem::realloc(p.as_ptr(), new_size, &M_INV_B, Flags::WAITOK) };
            assert!(q.is_none());
        });
        assert_wrong_type(&r, "realloc", p, "malloc-320");
        // reallocf must not free a refused pointer, and reports it once.
        let r = reports(|| {
            let q = unsafe { kmem::reallocf(p.as_ptr(), new_size, &M_INV_B, Flags::WAITOK) };
            assert!(q.is_none());
        });
        assert_wrong_type(&r, "reallocf", p, "malloc-320");
        assert!(check(p, 300, 5));
    }
    assert_eq!(use_of(&M_INV_A).0, a0.0 + 1);
    // The right type resizes it, contents kept.
    let mut q = None;
    assert_eq!(
        reports(|| q = unsafe { kmem::realloc(p.as_ptr(), 5000, &M_INV_A, Flags::WAITOK) }),
        vec![]
    );
    let q = q.unwrap();
    assert!(check(q, 300, 5));
    assert_eq!(
        reports(|| unsafe { kmem::free(q.as_ptr(), &M_INV_A) }),
        vec![]
    );
    assert_eq!(use_of(&M_INV_A), a0);
}

#[test]
fn the_right_type_passes_every_call_and_the_figures_return() {
    let _g = serial();
    let a0 = use_of(&M_INV_A);
    let r = reports(|| unsafe {
        let p = kmem::malloc(24, &M_INV_A, Flags::WAITOK.with(Flags::ZERO)).unwrap();
        assert!(check_zero(p, kmem::malloc_usable_size(p.as_ptr())));
        fill(p, 24, 1);
        // Grow through the classes into a large block and back.
        let mut p = p;
        let mut len = 24;
        for size in [30, 100, 1000, 40_000, 300_000, 5000, 20] {
            p = kmem::realloc(p.as_ptr(), size, &M_INV_A, Flags::WAITOK).unwrap();
            let keep = len.min(size);
            assert!(check(p, keep, 1), "realloc to {size} lost data");
            fill(p, size, 1);
            len = size;
        }
        p = kmem::reallocf(p.as_ptr(), 60, &M_INV_A, Flags::WAITOK).unwrap();
        assert!(check(p, 20, 1));
        kmem::zfree(p.as_ptr(), &M_INV_A);
        let aligned = kmem::malloc_aligned(100, 256, &M_INV_A, Flags::WAITOK).unwrap();
        assert_eq!(aligned.as_ptr() as usize % 256, 0);
        fill(aligned, kmem::malloc_usable_size(aligned.as_ptr()), 2);
        kmem::free(aligned.as_ptr(), &M_INV_A);
        // realloc(NULL) allocates.
        let p = kmem::realloc(std::ptr::null_mut(), 50, &M_INV_A, Flags::WAITOK).unwrap();
        kmem::free(p.as_ptr(), &M_INV_A);
    });
    assert_eq!(r, vec![]);
    assert_eq!(use_of(&M_INV_A), a0);
}

fn check_zero(p: NonNull<u8>, n: usize) -> bool {
    (0..n).all(|i| unsafe { *p.as_ptr().add(i) } == 0)
}

/// Allocates `count` blocks of `size` through `alloc`, checks they are
/// distinct and keep their contents, frees them with `free`.
fn churn(count: usize, size: usize, alloc: impl Fn() -> NonNull<u8>, free: impl Fn(NonNull<u8>)) {
    let blocks: Vec<NonNull<u8>> = (0..count).map(|_| alloc()).collect();
    let distinct: HashSet<usize> = blocks.iter().map(|p| p.as_ptr() as usize).collect();
    assert_eq!(distinct.len(), count, "a block was handed out twice");
    for (i, &p) in blocks.iter().enumerate() {
        fill(p, size, i as u8);
    }
    for (i, &p) in blocks.iter().enumerate() {
        assert!(check(p, size, i as u8), "block {i} was overwritten");
    }
    for p in blocks {
        free(p);
    }
}

#[test]
fn double_free_of_a_small_block_through_free_is_reported_and_dropped() {
    let _g = serial();
    let a0 = use_of(&M_INV_A);
    let p = kmem::malloc(100, &M_INV_A, Flags::WAITOK).unwrap();
    unsafe { kmem::free(p.as_ptr(), &M_INV_A) };
    let r = reports(|| unsafe { kmem::free(p.as_ptr(), &M_INV_A) });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].kind, ReportKind::DoubleFree);
    assert_eq!(r[0].op, "free");
    assert_eq!(r[0].ptr, p.as_ptr() as usize);
    assert_eq!(r[0].zone, "malloc-112");
    assert_eq!(r[0].mtype, "inv-a");
    let msg = r[0].to_string();
    assert!(
        msg.contains("already freed")
            && msg.contains(&format!("{:#x}", p.as_ptr() as usize))
            && msg.contains("malloc-112"),
        "{msg}"
    );
    // The dropped free moved no figure.
    assert_eq!(use_of(&M_INV_A), a0);
    // A freed block is refused by zfree and realloc the same way.
    let r = reports(|| unsafe {
        kmem::zfree(p.as_ptr(), &M_INV_A);
        assert!(kmem::realloc(p.as_ptr(), 500, &M_INV_A, Flags::WAITOK).is_none());
    });
    let kinds: Vec<_> = r.iter().map(|r| (r.kind, r.op, r.ptr)).collect();
    let at = p.as_ptr() as usize;
    assert_eq!(
        kinds,
        [
            (ReportKind::DoubleFree, "zfree", at),
            (ReportKind::DoubleFree, "realloc", at)
        ]
    );
    // The class's free lists are intact: no block comes out twice.
    let r = reports(|| {
        churn(
            5000,
            100,
            || kmem::malloc(100, &M_INV_A, Flags::WAITOK).unwrap(),
            |p| unsafe { kmem::free(p.as_ptr(), &M_INV_A) },
        )
    });
    assert_eq!(r, vec![]);
    assert_eq!(use_of(&M_INV_A), a0);
}

#[test]
fn double_free_through_global_dealloc_is_forwarded_from_uma() {
    let _g = serial();
    let l = Layout::from_size_align(100, 8).unwrap();
    let p = unsafe { kmem::Kmem.alloc(l) };
    assert!(!p.is_null());
    unsafe { kmem::Kmem.dealloc(p, l) };
    let r = reports(|| unsafe { kmem::Kmem.dealloc(p, l) });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].kind, ReportKind::DoubleFree);
    assert_eq!(r[0].op, "uma_zfree", "found by UMA's debug bitset");
    assert_eq!(r[0].ptr, p as usize);
    assert_eq!(r[0].zone, "malloc-112");
    assert!(r[0].to_string().contains("already freed"));
    // Dropped: the zone hands every block out once.
    let r = reports(|| {
        churn(
            5000,
            100,
            || NonNull::new(unsafe { kmem::Kmem.alloc(l) }).unwrap(),
            |p| unsafe { kmem::Kmem.dealloc(p.as_ptr(), l) },
        )
    });
    assert_eq!(r, vec![]);
}

#[test]
fn double_free_through_the_c_abi_is_reported_and_free_says_nothing_was_freed() {
    let _g = serial();
    let p = kmem::raw::alloc(40, 8);
    assert!(!p.is_null());
    assert!(unsafe { kmem::raw::free(p) });
    let mut freed = true;
    let r = reports(|| freed = unsafe { kmem::raw::free(p) });
    assert!(!freed, "raw::free returns false for a double free");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].kind, r[0].op, r[0].ptr, r[0].zone),
        (ReportKind::DoubleFree, "free", p as usize, "malloc-40")
    );
    let r = reports(|| {
        churn(
            3000,
            40,
            || NonNull::new(kmem::raw::alloc(40, 8)).unwrap(),
            |p| assert!(unsafe { kmem::raw::free(p.as_ptr()) }),
        )
    });
    assert_eq!(r, vec![]);
}

#[test]
fn write_after_free_is_forwarded_from_uma() {
    let _g = serial();
    let l = Layout::from_size_align(200, 8).unwrap();
    let p = unsafe { kmem::Kmem.alloc(l) };
    unsafe { kmem::Kmem.dealloc(p, l) };
    // A stale write into the freed item.
    unsafe { *p.add(17) = 0x55 };
    let mut got = Vec::new();
    let r = reports(|| {
        // The thread's cache hands the item back first (LIFO); allow for
        // some reordering anyway.
        for _ in 0..64 {
            let q = unsafe { kmem::Kmem.alloc(l) };
            got.push(q);
            if q == p {
                break;
            }
        }
    });
    assert!(got.contains(&p), "the freed item never came back");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].kind, r[0].op, r[0].ptr, r[0].zone),
        (
            ReportKind::ModifiedAfterFree,
            "uma_zalloc",
            p as usize,
            "malloc-224"
        )
    );
    for q in got {
        unsafe { kmem::Kmem.dealloc(q, l) };
    }
}

#[test]
fn usable_size_never_reaches_the_tag() {
    let _g = serial();
    assert_eq!(MALLOC_TAG_BYTES, 8);
    let a0 = use_of(&M_INV_A);
    let sizes = [
        0usize,
        1,
        7,
        8,
        9,
        16,
        24,
        100,
        104,
        112,
        120,
        1000,
        4088,
        4096,
        32_760,
        32_768,
        40_000,
        65_536,
        1 << 20,
    ];
    let r = reports(|| {
        for &size in &sizes {
            let p = kmem::malloc(size, &M_INV_A, Flags::WAITOK).unwrap();
            let n = kmem::malloc_usable_size(p.as_ptr());
            assert!(n >= size.max(1), "usable {n} < asked {size}");
            // Every usable byte written: the tag is untouched.
            unsafe { p.as_ptr().write_bytes(0xff, n) };
            // realloc to the whole usable size stays in place.
            let q = unsafe { kmem::realloc(p.as_ptr(), n, &M_INV_A, Flags::WAITOK) }.unwrap();
            assert_eq!(q, p, "realloc to the usable size {n} moved");
            assert_eq!(kmem::malloc_usable_size(q.as_ptr()), n);
            unsafe { kmem::free(q.as_ptr(), &M_INV_A) };
        }
    });
    assert_eq!(r, vec![]);
    assert_eq!(use_of(&M_INV_A), a0);
}

#[test]
fn an_overrun_into_the_tag_is_caught_at_free() {
    let _g = serial();
    let p = kmem::malloc(100, &M_INV_A, Flags::WAITOK).unwrap();
    let n = kmem::malloc_usable_size(p.as_ptr());
    // One byte past the usable size: the tag's first byte.
    unsafe { p.as_ptr().write_bytes(0, n + 1) };
    let r = reports(|| unsafe { kmem::free(p.as_ptr(), &M_INV_A) });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].kind, r[0].ptr, r[0].zone, r[0].mtype, r[0].actual_type),
        (
            ReportKind::WrongType,
            p.as_ptr() as usize,
            "malloc-112",
            "inv-a",
            ""
        )
    );
    assert!(r[0].to_string().contains("no type tag"), "{}", r[0]);
    // The untyped free still takes it back (its type keeps counting it).
    assert!(unsafe { kmem::raw::free(p.as_ptr()) });
}

#[test]
fn typed_free_of_an_untyped_block_is_reported() {
    let _g = serial();
    // From the C ABI and from Kmem: no tag.
    let p = NonNull::new(kmem::raw::alloc(100, 8)).unwrap();
    let l = Layout::from_size_align(3000, 8).unwrap();
    let g = NonNull::new(unsafe { kmem::Kmem.alloc(l) }).unwrap();
    let r = reports(|| unsafe {
        kmem::free(p.as_ptr(), &M_INV_A);
        kmem::free(g.as_ptr(), &M_INV_A);
    });
    assert_eq!(r.len(), 2, "{r:?}");
    for (r, at, zone) in [(&r[0], p, "malloc-112"), (&r[1], g, "malloc-3072")] {
        assert_eq!(r.kind, ReportKind::WrongType);
        assert_eq!(r.ptr, at.as_ptr() as usize);
        assert_eq!(r.zone, zone);
        assert_eq!(r.mtype, "inv-a");
        assert_eq!(r.actual_type, "", "an untyped block names no type");
    }
    // Left alone: their own frees work.
    assert!(unsafe { kmem::raw::free(p.as_ptr()) });
    unsafe { kmem::Kmem.dealloc(g.as_ptr(), l) };
}

#[test]
fn a_wrong_layout_to_global_dealloc_is_reported_once_and_dropped() {
    let _g = serial();
    let l = Layout::from_size_align(100, 8).unwrap();
    let p = unsafe { kmem::Kmem.alloc(l) };
    fill(NonNull::new(p).unwrap(), 100, 9);
    let wrong = Layout::from_size_align(40, 8).unwrap();
    let r = reports(|| unsafe { kmem::Kmem.dealloc(p, wrong) });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (
            r[0].kind,
            r[0].op,
            r[0].ptr,
            r[0].zone,
            r[0].size,
            r[0].actual
        ),
        (
            ReportKind::WrongSize,
            "dealloc",
            p as usize,
            "malloc-112",
            40,
            112
        )
    );
    assert!(check(NonNull::new(p).unwrap(), 100, 9));
    assert_eq!(reports(|| unsafe { kmem::Kmem.dealloc(p, l) }), vec![]);
}
