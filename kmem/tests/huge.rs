//! Requests no machine can back fail at once and cleanly: a block larger
//! than physical memory plus swap, an alignment beyond 1 GiB. The kernel
//! arena maps its address space with `MAP_NORESERVE`, so without the cap a
//! terabyte request succeeded (glibc refuses it) and its free cost
//! gigabytes of page metadata. A block over the dirty budget goes back
//! unbacked at once, without being listed. Its own process (it reads
//! process-wide figures).
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;

/// The figures are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Physical memory plus swap, as `sysinfo` says.
fn ram_and_swap() -> usize {
    // SAFETY: an all-zero sysinfo is a valid value of the plain C struct.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer.
    assert_eq!(unsafe { libc::sysinfo(&mut si) }, 0);
    (si.totalram as usize + si.totalswap as usize) * (si.mem_unit as usize).max(1)
}

#[test]
fn requests_beyond_memory_and_swap_fail_at_once() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mapped = kmem::os_stats().mapped;
    let too_big = ram_and_swap().saturating_mul(2);
    assert!(kmem::raw::alloc(too_big, 16).is_null());
    assert!(kmem::raw::alloc_zeroed(too_big, 16).is_null());
    assert!(kmem::kmem_malloc(too_big, kmem::Flags::WAITOK).is_none());
    // SAFETY: a valid layout; a null result is the expected answer.
    let p = unsafe { kmem::Kmem.alloc(Layout::from_size_align(too_big, 8).unwrap()) };
    assert!(p.is_null());
    // Alignments beyond 1 GiB, even for one byte.
    assert!(kmem::raw::alloc(1, 1 << 31).is_null());
    assert!(kmem::raw::alloc(1, 1 << 40).is_null());
    assert!(
        kmem::os_stats().mapped <= mapped + (64 << 20),
        "a refused request mapped address space"
    );
    // What fits still works.
    let p = kmem::raw::alloc(1, 1 << 30);
    assert!(!p.is_null() && p as usize % (1 << 30) == 0);
    // SAFETY: live, unused afterwards.
    assert!(unsafe { kmem::raw::free(p) });
}

#[test]
fn a_block_over_the_dirty_budget_goes_back_unbacked() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The budget follows the most bytes of large blocks in use lately,
    // this block's included, up to 1 GiB: only a block over that is over
    // the budget at its free. One byte written per page (all backed).
    let size = (1 << 30) + (16 << 20);
    let p = kmem::raw::alloc(size, 4096);
    assert!(!p.is_null());
    for off in (0..size).step_by(4096) {
        // SAFETY: `size` bytes of ours.
        unsafe { p.add(off).write(0x5a) };
    }
    assert!(kmem::dirty_budget() < size);
    let unbacked = kmem::os_stats().unbacked_total;
    // SAFETY: live, unused afterwards.
    assert!(unsafe { kmem::raw::free(p) });
    assert!(
        kmem::os_stats().unbacked_total >= unbacked + size,
        "the block was not unbacked at its free"
    );
    assert!(
        kmem::dirty_stats().dirty < size,
        "the block was kept as dirty pages"
    );
    // Its pages read as zero again.
    let q = kmem::raw::alloc_zeroed(size, 4096);
    assert!(!q.is_null());
    for off in (0..size).step_by(4096) {
        // SAFETY: `size` bytes of ours.
        assert_eq!(unsafe { q.add(off).read() }, 0, "at {off:#x}");
    }
    // SAFETY: live, unused afterwards.
    assert!(unsafe { kmem::raw::free(q) });
}
