//! Bad input through the malloc API: each mistake gives a report naming
//! the pointer and the zone, and the bad operation is dropped (with the
//! hook installed; without one the process would abort).

#![cfg(not(loom))]
// Test code: its unsafe blocks pass deliberately bad pointers to APIs that
// validate them, or free blocks they allocated.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::sync::Mutex;

use kmem::{Flags, Report, ReportKind};

kmem::malloc_define!(M_BAD, "bad-input", "bad input tests");

static SEEN: Mutex<Vec<Report>> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());

fn hook(r: &Report) {
    SEEN.lock().unwrap().push(*r);
}

/// Runs `f` with the hook installed and returns the reports it produced.
fn reports(f: impl FnOnce()) -> Vec<Report> {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    SEEN.lock().unwrap().clear();
    kmem::set_report_hook(Some(hook));
    f();
    kmem::set_report_hook(None);
    std::mem::take(&mut *SEEN.lock().unwrap())
}

#[test]
fn foreign_pointer_is_reported_not_freed() {
    let mut on_stack = [0u64; 4];
    let p = on_stack.as_mut_ptr().cast::<u8>();
    let r = reports(|| unsafe { kmem::free(p, &M_BAD) });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].kind, ReportKind::ForeignPointer);
    assert_eq!(r[0].ptr, p as usize);
    let msg = r[0].to_string();
    assert!(
        msg.contains(&format!("{:#x}", p as usize)) && msg.contains("not allocated by kmem"),
        "{msg}"
    );
    assert_eq!(on_stack, [0; 4], "a refused free must not touch the memory");
}

#[test]
fn interior_pointer_is_reported_with_its_zone() {
    let p = kmem::malloc(100, &M_BAD, Flags::WAITOK).unwrap();
    let inner = unsafe { p.as_ptr().add(8) };
    let r = reports(|| unsafe { kmem::free(inner, &M_BAD) });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].kind, ReportKind::NotAllocationStart);
    assert_eq!(r[0].zone, "malloc-112");
    assert!(r[0].to_string().contains("malloc-112"));
    // The real block is intact and frees normally.
    assert_eq!(
        reports(|| unsafe { kmem::free(p.as_ptr(), &M_BAD) }),
        vec![]
    );
}

#[test]
fn interior_of_a_large_block_is_reported() {
    let p = kmem::malloc(1 << 20, &M_BAD, Flags::WAITOK).unwrap();
    let inner = unsafe { p.as_ptr().add(5 * 4096) };
    let r = reports(|| unsafe { kmem::free(inner, &M_BAD) });
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, ReportKind::NotAllocationStart);
    unsafe { kmem::free(p.as_ptr(), &M_BAD) };
}

#[test]
fn double_free_of_a_large_block_is_reported() {
    let p = kmem::malloc(200_000, &M_BAD, Flags::WAITOK).unwrap();
    unsafe { kmem::free(p.as_ptr(), &M_BAD) };
    let r = reports(|| unsafe { kmem::free(p.as_ptr(), &M_BAD) });
    assert_eq!(r.len(), 1, "{r:?}");
    // Its pages are still labelled dirty (freed, data kept): a double free.
    assert_eq!(r[0].kind, ReportKind::DoubleFree);
    assert_eq!(r[0].zone, "large");
}

#[test]
fn wrong_size_to_kmem_free_is_reported() {
    let p = kmem::kmem_malloc(8 * 4096, Flags::WAITOK).unwrap();
    let r = reports(|| unsafe { kmem::kmem_free(p, 3 * 4096) });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].kind, ReportKind::WrongSize);
    assert_eq!((r[0].size, r[0].actual), (3 * 4096, 8 * 4096));
    unsafe { kmem::kmem_free(p, 8 * 4096) };
}

#[test]
fn wrong_size_to_global_dealloc_of_a_large_block_is_reported() {
    use std::alloc::{GlobalAlloc, Layout};
    let l = Layout::from_size_align(300_000, 8).unwrap();
    let p = unsafe { kmem::Kmem.alloc(l) };
    assert!(!p.is_null());
    let wrong = Layout::from_size_align(100_000, 8).unwrap();
    let r = reports(|| unsafe { kmem::Kmem.dealloc(p, wrong) });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].kind, ReportKind::WrongSize);
    unsafe { kmem::Kmem.dealloc(p, l) };
}

#[test]
fn allocator_internal_memory_is_refused() {
    // A boundary tag of the kernel arena: UMA-internal memory.
    let z = kmem::btag_zone().unwrap();
    let t = z.alloc(Flags::NOWAIT).unwrap();
    let r = reports(|| unsafe { kmem::free(t.as_ptr(), &M_BAD) });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].kind, ReportKind::InternalMemory);
    unsafe { z.free(t) };
}

#[test]
fn usable_size_and_realloc_validate_too() {
    let x = 5u32;
    let p = &x as *const u32 as *const u8;
    let r = reports(|| assert_eq!(kmem::malloc_usable_size(p), 0));
    assert_eq!(r.len(), 1);
    let r = reports(|| {
        let q = unsafe { kmem::realloc(p as *mut u8, 10, &M_BAD, Flags::NOWAIT) };
        assert!(q.is_none());
    });
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].op, "realloc");
}

#[test]
fn null_is_a_no_op() {
    assert_eq!(
        reports(|| unsafe { kmem::free(std::ptr::null_mut(), &M_BAD) }),
        vec![]
    );
    assert_eq!(kmem::malloc_usable_size(std::ptr::null()), 0);
}
