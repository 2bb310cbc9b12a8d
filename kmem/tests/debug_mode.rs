//! Debug mode (`guards` and `contents`, libumem's `UMEM_DEBUG`): overflows
//! and underflows by 1 to 32 bytes, writes after free, double frees,
//! overruns of large blocks (guard pages) and uses of freed large blocks
//! (quarantine), through `kmem::raw` and `Kmem`. The whole binary runs in
//! debug mode: it is chosen before the first allocation.

// Not with `invariants`: UMA's trash fill then overwrites the freed
// blocks' debug headers and patterns, and its own checks report instead.
#![cfg(not(any(loom, feature = "invariants")))]
// Test code: its unsafe blocks write past the blocks they allocated, on
// purpose, and free them; the allocator validates and reports.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, Once};

use kmem::{DebugFlags, Report, ReportKind};

static SEEN: Mutex<Vec<Report>> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());

fn hook(r: &Report) {
    SEEN.lock().unwrap().push(*r);
}

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| kmem::set_debug(DebugFlags::ALL).expect("before the first allocation"));
    assert_eq!(kmem::debug_mode(), DebugFlags::ALL);
}

/// Runs `f` with the hook installed and returns the reports it produced.
fn reports(f: impl FnOnce()) -> Vec<Report> {
    setup();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    SEEN.lock().unwrap().clear();
    kmem::set_report_hook(Some(hook));
    f();
    kmem::set_report_hook(None);
    std::mem::take(&mut *SEEN.lock().unwrap())
}

fn one(r: &[Report], kind: ReportKind, p: *mut u8, what: &str) {
    assert_eq!(r.len(), 1, "{what}: {r:?}");
    assert_eq!(r[0].kind, kind, "{what}: {r:?}");
    assert_eq!(r[0].ptr, p as usize, "{what}");
}

const SIZES: [usize; 6] = [1, 24, 100, 1000, 5000, 30000];

#[test]
fn overflow_by_1_to_32_bytes_is_reported_on_free() {
    setup();
    for size in SIZES {
        for by in [1usize, 8, 17, 32] {
            let p = kmem::raw::alloc(size, 16);
            let r = reports(|| unsafe {
                p.write_bytes(0x11, size);
                p.add(size + by - 1).write(0x22);
                kmem::raw::free(p);
            });
            one(&r, ReportKind::Overflow, p, &format!("{size} + {by}"));
        }
    }
}

#[test]
fn underflow_by_1_to_32_bytes_is_reported_on_free() {
    setup();
    for size in SIZES {
        for by in [1usize, 8, 16, 24, 25, 32] {
            let p = kmem::raw::alloc(size, 16);
            let r = reports(|| unsafe {
                p.sub(by).write(0x33);
                kmem::raw::free(p);
            });
            one(&r, ReportKind::Underflow, p, &format!("{size} - {by}"));
        }
    }
}

#[test]
fn write_after_free_is_reported_when_the_block_comes_back() {
    setup();
    for size in [16usize, 200, 3000] {
        let r = reports(|| unsafe {
            let p = kmem::raw::alloc(size, 16);
            kmem::raw::free(p);
            p.add(size / 2).write(0x44);
            // The same inner block is the next one handed out (LIFO).
            let q = kmem::raw::alloc(size, 16);
            kmem::raw::free(q);
        });
        assert_eq!(r.len(), 1, "{size}: {r:?}");
        assert_eq!(r[0].kind, ReportKind::ModifiedAfterFree, "{size}: {r:?}");
    }
}

#[test]
fn double_free_is_reported() {
    setup();
    for size in [8usize, 64, 4000, 100_000] {
        let p = kmem::raw::alloc(size, 16);
        let r = reports(|| unsafe {
            assert!(kmem::raw::free(p));
            assert!(!kmem::raw::free(p));
        });
        one(&r, ReportKind::DoubleFree, p, &format!("{size}"));
    }
}

#[test]
fn contents_usable_size_realloc_and_zeroing() {
    setup();
    let r = reports(|| unsafe {
        let p = kmem::raw::alloc(40, 16);
        assert_eq!(p as usize % 16, 0);
        assert_eq!(kmem::raw::usable_size(p), 40, "the size asked for");
        // New blocks hold 0xbaddcafe.
        assert_eq!(
            std::slice::from_raw_parts(p, 4),
            &0xbadd_cafeu32.to_le_bytes()
        );
        p.write_bytes(7, 40);
        let q = kmem::raw::realloc(p, 5000, 16);
        assert!(!q.is_null() && q != p);
        assert!(std::slice::from_raw_parts(q, 40).iter().all(|&b| b == 7));
        assert_eq!(kmem::raw::usable_size(q), 5000);
        kmem::raw::free(q);
        let z = kmem::raw::alloc_zeroed(3000, 16);
        assert!(std::slice::from_raw_parts(z, 3000).iter().all(|&b| b == 0));
        kmem::raw::free(z);
        for align in [32usize, 64, 4096] {
            let a = kmem::raw::alloc(100, align);
            assert_eq!(a as usize % align, 0);
            a.write_bytes(1, 100);
            assert!(kmem::raw::free(a));
        }
    });
    assert!(r.is_empty(), "{r:?}");
}

#[test]
fn global_alloc_blocks_are_checked_too() {
    setup();
    let a = kmem::Kmem;
    let l = Layout::from_size_align(48, 8).unwrap();
    let r = reports(|| unsafe {
        let p = a.alloc(l);
        p.add(48).write(1);
        a.dealloc(p, l);
    });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].kind, ReportKind::Overflow);
    let r = reports(|| unsafe {
        let p = a.alloc(l);
        p.write_bytes(2, 48);
        let q = a.realloc(p, l, 4000);
        assert!(std::slice::from_raw_parts(q, 48).iter().all(|&b| b == 2));
        a.dealloc(q, Layout::from_size_align(4000, 8).unwrap());
    });
    assert!(r.is_empty(), "{r:?}");
    assert!(kmem::debug_stats().overflows >= 1);
}

/// Runs `f` in a forked child and returns the signal that ended it.
fn child_signal(f: impl FnOnce()) -> Option<i32> {
    setup();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the child only runs `f` and exits.
    match unsafe { libc::fork() } {
        0 => {
            f();
            unsafe { libc::_exit(0) };
        }
        pid => {
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
            libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
        }
    }
}

#[test]
fn a_large_overrun_faults_at_the_guard_page() {
    setup();
    for size in [40_000usize, 1 << 20] {
        let p = kmem::raw::alloc(size, 16);
        let sig = child_signal(|| unsafe {
            // A 1 MiB overrun: it faults at the guard page, before it
            // reaches any other block.
            for i in 0..size + (1 << 20) {
                std::ptr::write_volatile(p.add(i), 0x55);
            }
        });
        assert_eq!(sig, Some(libc::SIGSEGV), "{size}");
        assert!(unsafe { kmem::raw::free(p) });
    }
}

#[test]
fn a_freed_large_block_is_inaccessible() {
    setup();
    let p = kmem::raw::alloc(200_000, 16);
    assert!(unsafe { kmem::raw::free(p) });
    let sig = child_signal(|| unsafe { std::ptr::write_volatile(p, 1) });
    assert_eq!(sig, Some(libc::SIGSEGV));
    assert!(kmem::debug_stats().quarantined >= 1);
}

#[test]
fn audit_reports_carry_the_allocating_and_freeing_stacks() {
    setup();
    assert!(kmem::debug_mode().contains(DebugFlags::AUDIT));
    let p = kmem::raw::alloc(64, 16);
    let r = reports(|| unsafe {
        assert!(kmem::raw::free(p));
        assert!(!kmem::raw::free(p));
    });
    one(&r, ReportKind::DoubleFree, p, "audit");
    assert_ne!(r[0].alloc_stack[0], 0, "{:?}", r[0]);
    assert_ne!(r[0].free_stack[0], 0, "{:?}", r[0]);
    let text = r[0].to_string();
    assert!(
        text.contains("allocated by") && text.contains("freed by"),
        "{text}"
    );
    // An overflow of a live block: its allocation stack, no free stack.
    let q = kmem::raw::alloc(64, 16);
    let r = reports(|| unsafe {
        q.add(64).write(9);
        kmem::raw::free(q);
    });
    one(&r, ReportKind::Overflow, q, "audit overflow");
    assert_ne!(r[0].alloc_stack[0], 0);
    assert_eq!(r[0].free_stack, [0; kmem::AUDIT_FRAMES]);
}
