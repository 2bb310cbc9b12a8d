//! Debug mode `contents` alone (no guards): correct programs get no
//! report. A churn of large blocks of many sizes reuses pages that held
//! other blocks (a freed block's header and pattern, another block's
//! data); only small blocks are checked for writes after free when handed
//! out again, and freed large blocks are quarantined. Found by mstress and
//! malloc-large under `BSDALLOC_DEBUG=contents` (false "write before the
//! start" and "modified after free" reports). The binary runs in this mode.

#![cfg(not(any(loom, feature = "invariants")))]
#![allow(clippy::undocumented_unsafe_blocks)]

use std::sync::Mutex;

use kmem::{DebugFlags, Report, ReportKind};

static SEEN: Mutex<Vec<Report>> = Mutex::new(Vec::new());

fn hook(r: &Report) {
    SEEN.lock().unwrap().push(*r);
}

#[test]
fn large_and_small_churn_is_clean_and_a_double_free_still_shows() {
    kmem::set_debug(DebugFlags::CONTENTS).expect("before the first allocation");
    kmem::set_report_hook(Some(hook));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut held: Vec<(*mut u8, usize)> = Vec::new();
    for i in 0..600 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Mostly 64 KiB .. 576 KiB, some small.
        let size = if i % 3 == 0 {
            1 + (x % 3000) as usize
        } else {
            (64 << 10) + (x % (512 << 10)) as usize
        };
        let p = kmem::raw::alloc(size, 16);
        assert!(!p.is_null());
        unsafe {
            p.write_bytes(0x5a, size.min(4096));
            p.add(size - 1).write(0xa5);
        }
        held.push((p, size));
        if held.len() > 24 {
            let (q, _) = held.swap_remove((x >> 32) as usize % held.len());
            assert!(unsafe { kmem::raw::free(q) });
        }
    }
    for (q, _) in held.drain(..) {
        assert!(unsafe { kmem::raw::free(q) });
    }
    let seen = std::mem::take(&mut *SEEN.lock().unwrap());
    assert!(seen.is_empty(), "reports for a correct program: {seen:?}");
    // A large block freed twice is still caught (it is in quarantine).
    let p = kmem::raw::alloc(300 << 10, 16);
    assert!(unsafe { kmem::raw::free(p) });
    assert!(!unsafe { kmem::raw::free(p) });
    let seen = std::mem::take(&mut *SEEN.lock().unwrap());
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].kind, ReportKind::DoubleFree);
    kmem::set_report_hook(None);
}
