#![allow(dead_code)]
//! Helpers shared by the integration tests.

use std::ptr::NonNull;
use uma::{global, Flags, TestSource, Uma, Zone, ZoneArgs};

pub fn leak_source() -> &'static TestSource {
    Box::leak(Box::new(TestSource::new()))
}

pub fn uma() -> &'static Uma {
    global()
}

pub fn zone(args: ZoneArgs) -> &'static Zone {
    uma().create_zone(&args).expect("zone")
}

pub fn alloc(z: &Zone, flags: Flags) -> NonNull<u8> {
    z.alloc(flags).expect("alloc")
}

pub fn free(z: &Zone, p: NonNull<u8>) {
    // SAFETY: p came from z.alloc and is freed once.
    unsafe { z.free(p) }
}

pub fn destroy(z: &'static Zone) -> usize {
    // SAFETY: nobody uses z afterwards.
    unsafe { uma().destroy(z) }
}

pub fn write(p: NonNull<u8>, size: usize, v: u8) {
    // SAFETY: p is a live item of at least `size` bytes.
    unsafe { std::ptr::write_bytes(p.as_ptr(), v, size) }
}

pub fn check(p: NonNull<u8>, size: usize, v: u8) {
    // SAFETY: p is a live item of at least `size` bytes.
    let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
    assert!(
        s.iter().all(|&b| b == v),
        "item {:p} content changed (want {v:#x})",
        p
    );
}
