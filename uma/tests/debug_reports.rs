//! INVARIANTS reports (feature `invariants`): double free, foreign pointer,
//! wrong zone, misaligned pointer, memory modified after free; each names
//! the pointer, the zone and the slab. A report hook records them instead
//! of aborting. Run with `cargo test -p bsdalloc-uma --release --features invariants`.
#![cfg(all(feature = "invariants", not(loom)))]
#![allow(clippy::undocumented_unsafe_blocks)] // test code: deliberate bad frees

mod common;
use common::*;
use std::sync::Mutex;
use uma::debug::{set_report_hook, Report, ReportKind};
use uma::{Flags, ZoneArgs};

static SEEN: Mutex<Vec<Report>> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());

fn hook(r: &Report) {
    SEEN.lock().unwrap().push(*r);
}

fn expect(kind: ReportKind, f: impl FnOnce()) -> Report {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    SEEN.lock().unwrap().clear();
    set_report_hook(Some(hook));
    f();
    set_report_hook(None);
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let r = seen[0];
    assert_eq!(r.kind, kind);
    let text = r.to_string();
    assert!(text.contains(&format!("{:#x}", r.ptr)), "{text}");
    assert!(text.contains(r.zone), "{text}");
    r
}

#[test]
fn double_free_is_reported() {
    let z = zone(ZoneArgs::new("dbg-double", 64));
    let p = alloc(z, Flags::NOWAIT);
    free(z, p);
    let r = expect(ReportKind::DoubleFree, || free(z, p));
    assert_eq!((r.ptr, r.zone), (p.as_ptr() as usize, "dbg-double"));
    assert_ne!(r.slab, 0);
    assert!(r.to_string().contains("slab"));
    z.check_invariants();
}

#[test]
fn foreign_pointer_is_reported() {
    let z = zone(ZoneArgs::new("dbg-foreign", 64));
    let mut local = [0u64; 8];
    let p = std::ptr::NonNull::new(local.as_mut_ptr() as *mut u8).unwrap();
    let r = expect(ReportKind::ForeignPointer, || free(z, p));
    assert_eq!(r.slab, 0);
    assert!(r.to_string().contains("did not belong to zone"));
    z.check_invariants();
}

#[test]
fn wrong_zone_is_reported() {
    let a = zone(ZoneArgs::new("dbg-zone-a", 64));
    let b = zone(ZoneArgs::new("dbg-zone-b", 64));
    let p = alloc(a, Flags::NOWAIT);
    let r = expect(ReportKind::WrongZone, || free(b, p));
    assert_eq!(r.zone, "dbg-zone-b");
    assert_eq!(r.owner, Some("dbg-zone-a"));
    assert_ne!(r.slab, 0);
    free(a, p);
    a.check_invariants();
    b.check_invariants();
}

#[test]
fn misaligned_pointer_is_reported() {
    let z = zone(ZoneArgs::new("dbg-misaligned", 64));
    let p = alloc(z, Flags::NOWAIT);
    let q = std::ptr::NonNull::new(p.as_ptr().wrapping_add(8)).unwrap();
    let r = expect(ReportKind::Misaligned, || free(z, q));
    assert_ne!(r.slab, 0);
    free(z, p);
    z.check_invariants();
}

#[test]
fn modified_after_free_is_reported() {
    let z = zone(ZoneArgs::new("dbg-modified", 64).flags(uma::ZoneFlags::NOBUCKET));
    let p = alloc(z, Flags::NOWAIT);
    free(z, p);
    unsafe { *p.as_ptr().add(12) = 0x42 }; // use after free
    let r = expect(ReportKind::ModifiedAfterFree, || {
        let q = alloc(z, Flags::NOWAIT);
        assert_eq!(q, p, "NOBUCKET zone hands the same item back");
        free(z, q);
    });
    assert_eq!(r.offset, 12);
}

#[test]
fn is_allocated_follows_the_debug_bitset() {
    let z = zone(ZoneArgs::new("dbg-is-allocated", 64));
    let p = alloc(z, Flags::NOWAIT);
    assert_eq!(uma::debug::is_allocated(z, p.as_ptr()), Some(true));
    free(z, p);
    // Free, though cached in this thread's bucket.
    assert_eq!(uma::debug::is_allocated(z, p.as_ptr()), Some(false));
    // Not an item start, and not in any slab of the zone: no answer.
    assert_eq!(
        uma::debug::is_allocated(z, p.as_ptr().wrapping_add(8)),
        None
    );
    let local = 0u64;
    assert_eq!(
        uma::debug::is_allocated(z, (&local as *const u64).cast()),
        None
    );
    z.check_invariants();
}
