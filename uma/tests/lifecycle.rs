//! ctor/dtor/init/fini call counts, zinit/zfini of secondary zones, ZERO.

#![cfg(not(loom))]
// Test code: its unsafe blocks free items to the zone that allocated them,
// destroy zones nobody uses afterwards, or touch live items' bytes.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;
use common::*;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use uma::{Flags, Reclaim, ZoneArgs};

macro_rules! counters {
    ($($n:ident),*) => { $(static $n: AtomicUsize = AtomicUsize::new(0);)* };
}

counters!(A_CTOR, A_DTOR, A_INIT, A_FINI);
fn a_ctor(p: NonNull<u8>, size: usize, arg: usize, _f: Flags) -> bool {
    assert_eq!(arg, 77);
    unsafe { std::ptr::write_bytes(p.as_ptr(), 0xcc, size) };
    A_CTOR.fetch_add(1, SeqCst);
    true
}
fn a_dtor(_p: NonNull<u8>, _s: usize, arg: usize) {
    assert_eq!(arg, 77);
    A_DTOR.fetch_add(1, SeqCst);
}
fn a_init(p: NonNull<u8>, _s: usize, _f: Flags) -> bool {
    unsafe { *(p.as_ptr() as *mut u64) = 0x1234 };
    A_INIT.fetch_add(1, SeqCst);
    true
}
fn a_fini(p: NonNull<u8>, _s: usize) {
    A_FINI.fetch_add(1, SeqCst);
    let _ = p;
}

#[test]
fn ctor_dtor_every_time_init_fini_per_slab() {
    let z = zone(
        ZoneArgs::new("life", 64)
            .ctor(a_ctor)
            .dtor(a_dtor)
            .init(a_init)
            .fini(a_fini)
            .arg(77)
            .max_ipers(8),
    );
    let ipers = z.keg_info().unwrap().layout.ipers;
    let mut v = Vec::new();
    for _ in 0..100 {
        let p = alloc(z, Flags::NOWAIT);
        check(p, 64, 0xcc);
        v.push(p);
    }
    assert_eq!(A_CTOR.load(SeqCst), 100);
    let slabs = z.keg_info().unwrap().slabs;
    assert_eq!(
        A_INIT.load(SeqCst),
        slabs * ipers,
        "init once per item per slab"
    );
    for p in v.drain(..) {
        free(z, p);
    }
    assert_eq!(A_DTOR.load(SeqCst), 100);
    // reuse: ctor again, no new init
    for _ in 0..10 {
        v.push(alloc(z, Flags::NOWAIT));
    }
    assert_eq!(A_CTOR.load(SeqCst), 110);
    for p in v.drain(..) {
        free(z, p);
    }
    assert_eq!(A_FINI.load(SeqCst), 0);
    z.reclaim(Reclaim::DrainCpu);
    z.check_invariants();
    let left = z.keg_info().unwrap().slabs;
    assert_eq!(left, 0);
    assert_eq!(
        A_FINI.load(SeqCst),
        A_INIT.load(SeqCst),
        "fini once per item when slabs go"
    );
    destroy(z);
}

counters!(F_CTOR, F_DTOR);
fn failing_ctor(_p: NonNull<u8>, _s: usize, _a: usize, _f: Flags) -> bool {
    F_CTOR.fetch_add(1, SeqCst) % 2 == 0
}
fn counting_dtor(_p: NonNull<u8>, _s: usize, _a: usize) {
    F_DTOR.fetch_add(1, SeqCst);
}

#[test]
fn ctor_failure_fails_the_alloc_without_dtor() {
    let z = zone(
        ZoneArgs::new("ctorfail", 32)
            .ctor(failing_ctor)
            .dtor(counting_dtor),
    );
    let a = z.alloc(Flags::NOWAIT);
    let b = z.alloc(Flags::NOWAIT);
    assert!(a.is_some() && b.is_none());
    assert_eq!(z.stats().fails, 1);
    free(z, a.unwrap());
    assert_eq!(F_DTOR.load(SeqCst), 1);
    z.check_invariants();
    assert_eq!(z.stats().used, 0);
    assert_eq!(destroy(z), 0);
}

counters!(I_CALLS);
fn failing_init(_p: NonNull<u8>, _s: usize, _f: Flags) -> bool {
    I_CALLS.fetch_add(1, SeqCst);
    false
}

#[test]
fn keg_init_failure_fails_the_slab() {
    let src = leak_source();
    let z = zone(ZoneArgs::new("initfail", 32).init(failing_init).source(src));
    assert!(z.alloc(Flags::NOWAIT).is_none());
    assert_eq!(src.in_use(), 0, "failed slab given back");
    assert!(I_CALLS.load(SeqCst) >= 1);
    z.check_invariants();
    destroy(z);
}

fn ctor_writes(p: NonNull<u8>, size: usize, _a: usize, _f: Flags) -> bool {
    unsafe { std::ptr::write_bytes(p.as_ptr(), 0xab, size) };
    true
}

#[test]
fn zero_runs_after_the_ctor() {
    let z = zone(ZoneArgs::new("zero", 100).ctor(ctor_writes));
    let p = alloc(z, Flags::NOWAIT | Flags::ZERO);
    check(p, 100, 0);
    let q = alloc(z, Flags::NOWAIT);
    check(q, 100, 0xab);
    free(z, p);
    free(z, q);
    destroy(z);
}

counters!(S_ZINIT, S_ZFINI, S_CTOR);
fn s_zinit(p: NonNull<u8>, _s: usize, _f: Flags) -> bool {
    unsafe { *(p.as_ptr() as *mut u64) = 0x5ec0 };
    S_ZINIT.fetch_add(1, SeqCst);
    true
}
fn s_zfini(_p: NonNull<u8>, _s: usize) {
    S_ZFINI.fetch_add(1, SeqCst);
}
fn s_ctor(p: NonNull<u8>, _s: usize, _a: usize, _f: Flags) -> bool {
    assert_eq!(
        unsafe { *(p.as_ptr() as *mut u64) },
        0x5ec0,
        "zinit ran before ctor"
    );
    S_CTOR.fetch_add(1, SeqCst);
    true
}

#[test]
fn secondary_zone_shares_the_keg_with_zinit_zfini() {
    let master = zone(ZoneArgs::new("master", 64).max_ipers(16));
    let sec = uma()
        .create_secondary(
            "secondary",
            Some(s_ctor),
            None,
            Some(s_zinit),
            Some(s_zfini),
            master,
        )
        .unwrap();
    let mut v = Vec::new();
    for _ in 0..40 {
        v.push(alloc(sec, Flags::NOWAIT));
    }
    let m = alloc(master, Flags::NOWAIT);
    assert_eq!(S_CTOR.load(SeqCst), 40);
    assert!(
        S_ZINIT.load(SeqCst) >= 40,
        "zinit when items enter the zone"
    );
    let info = master.keg_info().unwrap();
    assert_eq!(
        info.slabs * info.layout.ipers - info.free_items,
        S_ZINIT.load(SeqCst) + master.stats().items as usize
    );
    for p in v.drain(..) {
        free(sec, p);
    }
    sec.reclaim(Reclaim::DrainCpu);
    assert_eq!(
        S_ZFINI.load(SeqCst),
        S_ZINIT.load(SeqCst),
        "zfini when items leave the zone"
    );
    sec.check_invariants();
    assert_eq!(destroy(sec), 0);
    // master still works after the secondary is gone
    free(master, m);
    let again = alloc(master, Flags::NOWAIT);
    free(master, again);
    master.check_invariants();
    assert_eq!(destroy(master), 0);
}

#[test]
fn destroy_reports_leaks_by_count() {
    let z = zone(ZoneArgs::new("leaky", 64));
    let _a = alloc(z, Flags::NOWAIT);
    let _b = alloc(z, Flags::NOWAIT);
    let c = alloc(z, Flags::NOWAIT);
    free(z, c);
    assert_eq!(destroy(z), 2);
}

#[test]
fn a_freed_item_is_the_next_one_handed_out() {
    // LIFO through the per-thread cache (FreeBSD frees into the alloc
    // bucket first): the item freed last is still in this CPU's cache.
    let z = zone(ZoneArgs::new("lc-lifo", 64).bucket_size(16));
    let held: Vec<_> = (0..40).map(|_| alloc(z, Flags::NOWAIT)).collect();
    for &p in held.iter().rev().take(20) {
        free(z, p);
        let q = alloc(z, Flags::NOWAIT);
        assert_eq!(q, p, "the item just freed comes back first");
    }
    // Also across the bucket boundary: 16 frees fill the alloc bucket, the
    // 17th swaps in room, and the order still holds.
    let back: Vec<_> = held.iter().copied().take(17).collect();
    for &p in &back {
        free(z, p);
    }
    for &p in back.iter().rev() {
        assert_eq!(alloc(z, Flags::NOWAIT), p);
    }
    for p in held {
        free(z, p);
    }
    z.check_invariants();
    destroy(z);
}

/// A zone created inside a walk of the zones (an allocation in the walk's
/// code that needed a zone built on first use, as kmem's size classes
/// are) does not wait for the list its own thread holds: it is usable at
/// once and listed when the walk ends; one created and destroyed inside
/// the same walk leaves no trace; another thread's creation waits for the
/// walk and is listed.
#[test]
fn zones_created_inside_a_walk_are_listed_after_it() {
    let u = uma::Uma::bootstrap(leak_source()).unwrap();
    let before = u.zone_count();
    let mut made = None;
    let mut beside = None;
    let mut first = true;
    u.for_each_zone(|_| {
        if !first {
            return;
        }
        first = false;
        let z = u
            .create_zone(&ZoneArgs::new("made-in-walk", 48))
            .expect("zone");
        let p = z.alloc(Flags::NOWAIT).expect("item");
        unsafe { z.free(p) };
        let gone = u
            .create_zone(&ZoneArgs::new("gone-in-walk", 48))
            .expect("zone");
        assert_eq!(unsafe { u.destroy(gone) }, 0);
        made = Some(z);
        let t =
            std::thread::spawn(move || u.create_zone(&ZoneArgs::new("made-beside", 32)).is_some());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            !t.is_finished(),
            "another thread created a zone while the list was held"
        );
        beside = Some(t);
    });
    assert!(beside.unwrap().join().unwrap());
    let mut names = Vec::new();
    u.for_each_zone(|z| names.push(z.name()));
    for (name, listed) in [
        ("made-in-walk", true),
        ("gone-in-walk", false),
        ("made-beside", true),
    ] {
        assert_eq!(names.contains(&name), listed, "{name}: {names:?}");
    }
    assert_eq!(u.zone_count(), before + 2);
    let z = made.unwrap();
    let p = z.alloc(Flags::NOWAIT).expect("item");
    unsafe { z.free(p) };
}
