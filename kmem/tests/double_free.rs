//! Double frees in the default build (no `invariants`): every small block
//! freed through a front door carries the double-free key, so a second
//! free is reported (`DoubleFree`, naming the pointer and the class zone)
//! and dropped, and the block is never handed out twice. Large blocks are
//! caught by their page words. Through `kmem::raw` (the C ABI's road),
//! `Kmem` (`GlobalAlloc`) and malloc(9), in several patterns and sizes.

#![cfg(not(loom))]
// Test code: its unsafe blocks free blocks they allocated, twice on
// purpose (the allocator validates and drops the second free).
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use std::sync::Mutex;

use kmem::{Report, ReportKind};

kmem::malloc_define!(M_DF, "double-free", "double free tests");

static SEEN: Mutex<Vec<Report>> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());

fn hook(r: &Report) {
    SEEN.lock().unwrap().push(*r);
}

/// Each test runs alone: a block freed twice must not be handed to another
/// test's allocation in between (a large block's pages may become a slab).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` with the hook installed and returns the reports it produced.
fn reports(f: impl FnOnce()) -> Vec<Report> {
    SEEN.lock().unwrap().clear();
    kmem::set_report_hook(Some(hook));
    f();
    kmem::set_report_hook(None);
    std::mem::take(&mut *SEEN.lock().unwrap())
}

/// The report for a double free of `p` in a zone of `size`-byte blocks.
fn assert_double_free(r: &[Report], p: *mut u8, what: &str) {
    assert_eq!(r.len(), 1, "{what}: {r:?}");
    assert_eq!(r[0].kind, ReportKind::DoubleFree, "{what}: {r:?}");
    assert_eq!(r[0].ptr, p as usize, "{what}");
    let msg = r[0].to_string();
    assert!(msg.contains(&format!("{:#x}", p as usize)), "{what}: {msg}");
}

/// After a dropped double free of a `size`-byte block, the next
/// allocations of that size are all distinct.
fn no_alias(size: usize) {
    let mut seen = HashSet::new();
    let mut v = Vec::new();
    for _ in 0..64 {
        let q = kmem::raw::alloc(size, 16);
        assert!(!q.is_null());
        assert!(seen.insert(q as usize), "block {q:p} handed out twice");
        v.push(q);
    }
    for q in v {
        assert!(unsafe { kmem::raw::free(q) });
    }
}

const SMALL: [usize; 7] = [1, 8, 32, 100, 1000, 4096, 30000];

#[test]
fn raw_free_twice_in_a_row() {
    let _s = serial();
    for size in SMALL {
        let p = kmem::raw::alloc(size, 16);
        let r = reports(|| unsafe {
            assert!(kmem::raw::free(p));
            assert!(!kmem::raw::free(p), "the second free of {size} is dropped");
        });
        assert_double_free(&r, p, &format!("raw {size}"));
        assert!(r[0].zone.starts_with("malloc-"), "{:?}", r[0]);
        no_alias(size);
    }
}

#[test]
fn raw_free_twice_with_others_between() {
    let _s = serial();
    // free(p); free(q); free(p): glibc's fastbin check misses this one.
    for size in SMALL {
        let p = kmem::raw::alloc(size, 16);
        let q = kmem::raw::alloc(size, 16);
        let others: Vec<_> = (0..50).map(|i| kmem::raw::alloc(size + i, 16)).collect();
        let r = reports(|| unsafe {
            assert!(kmem::raw::free(p));
            assert!(kmem::raw::free(q));
            for &o in &others {
                assert!(kmem::raw::free(o));
            }
            assert!(!kmem::raw::free(p));
        });
        assert_double_free(&r, p, &format!("raw {size} with others between"));
        no_alias(size);
    }
}

#[test]
fn double_free_from_another_thread() {
    let _s = serial();
    for size in [16usize, 200, 5000] {
        let p = kmem::raw::alloc(size, 16) as usize;
        let r = reports(|| {
            std::thread::spawn(move || assert!(unsafe { kmem::raw::free(p as *mut u8) }))
                .join()
                .unwrap();
            assert!(!unsafe { kmem::raw::free(p as *mut u8) });
        });
        assert_double_free(&r, p as *mut u8, &format!("cross-thread {size}"));
        no_alias(size);
    }
}

#[test]
fn realloc_of_a_freed_block_is_reported() {
    let _s = serial();
    let p = kmem::raw::alloc(48, 16);
    let r = reports(|| unsafe {
        assert!(kmem::raw::free(p));
        assert!(kmem::raw::realloc(p, 500, 16).is_null());
        assert!(kmem::raw::realloc(p, 40, 16).is_null());
    });
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r
        .iter()
        .all(|x| x.kind == ReportKind::DoubleFree && x.ptr == p as usize));
    no_alias(48);
}

#[test]
fn global_dealloc_twice_is_reported() {
    let _s = serial();
    let a = kmem::Kmem;
    // 40 KiB, 64 KiB, 100 KB and 256 KiB: large blocks of the page caches
    // (the quantum cache's, a large class's), whose fast road claims the
    // head word and labels it cached; the second free finds that label.
    for size in [8usize, 24, 64, 2000, 20000, 40000, 65536, 100_000, 262_144] {
        let l = Layout::from_size_align(size, 8).unwrap();
        let p = unsafe { a.alloc(l) };
        let r = reports(|| unsafe {
            a.dealloc(p, l);
            a.dealloc(p, l);
        });
        assert_double_free(&r, p, &format!("Kmem {size}"));
        let q: Vec<_> = (0..32).map(|_| unsafe { a.alloc(l) }).collect();
        let distinct: HashSet<_> = q.iter().map(|&x| x as usize).collect();
        assert_eq!(
            distinct.len(),
            q.len(),
            "Kmem {size}: a block handed out twice"
        );
        for x in q {
            unsafe { a.dealloc(x, l) };
        }
    }
}

#[test]
fn typed_free_twice_is_reported() {
    let _s = serial();
    let p = kmem::malloc(300, &M_DF, kmem::Flags::WAITOK)
        .unwrap()
        .as_ptr();
    let before = M_DF.stats();
    let r = reports(|| unsafe {
        kmem::free(p, &M_DF);
        kmem::free(p, &M_DF);
    });
    assert_double_free(&r, p, "malloc(9)");
    let after = M_DF.stats();
    assert_eq!(after.in_use + 1, before.in_use, "counted once");
}

#[test]
fn a_reallocated_block_frees_normally_and_data_is_untouched() {
    let _s = serial();
    // The key lives in a freed block only: a block handed out again has it
    // cleared, and a live block whose first word the program set to
    // anything else frees without a report.
    let r = reports(|| {
        for size in SMALL {
            let p = kmem::raw::alloc(size, 16);
            unsafe { p.write_bytes(0xee, size) };
            assert!(unsafe { kmem::raw::free(p) });
            let q = kmem::raw::alloc(size, 16);
            assert_eq!(unsafe { q.cast::<u64>().read() }, 0, "{size}: key cleared");
            assert!(unsafe { kmem::raw::free(q) });
            let z = kmem::raw::alloc_zeroed(size, 16);
            assert!(unsafe { std::slice::from_raw_parts(z, size) }
                .iter()
                .all(|&b| b == 0));
            assert!(unsafe { kmem::raw::free(z) });
        }
    });
    assert!(r.is_empty(), "{r:?}");
}

#[test]
fn large_double_free_is_reported() {
    let _s = serial();
    let p = kmem::raw::alloc(256 << 10, 16);
    let r = reports(|| unsafe {
        assert!(kmem::raw::free(p));
        assert!(!kmem::raw::free(p));
    });
    assert_double_free(&r, p, "256 KiB");
}
