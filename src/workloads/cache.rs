//! `cache-scratch` and `cache-thrash`, after Berger, McKinley, Blumofe and
//! Wilson, "Hoard: A Scalable Memory Allocator for Multithreaded
//! Applications" (ASPLOS 2000).
//!
//! Both measure false sharing that the allocator causes: threads that
//! share no data still slow each other down when the allocator places
//! their objects in one cache line.
//!
//! - `cache-thrash` (active false sharing): each worker repeatedly
//!   allocates a small object, writes every byte of it many times, and
//!   frees it. An allocator that serves concurrent small requests of
//!   different threads from one cache line makes the writes ping-pong it.
//! - `cache-scratch` (passive false sharing): the main thread allocates one
//!   small object per worker, back to back, and hands them out; each
//!   worker frees the object it was given and then runs the thrash loop.
//!   An allocator that returns a freed object to the freeing thread's
//!   cache reuses the neighbouring bytes of another thread's object.
//!
//! Here: 8-byte objects, 10,000 writes of every byte per object, and 120,000
//! objects per worker at scale 1 (the Hoard paper's shape; counts scaled
//! to about a second). Writes are volatile so that they reach memory;
//! each object's bytes are verified before it is freed.

use super::block::{corruption, BLOCK_ALIGN};
use super::Params;
use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;
use std::thread;

const OBJ: usize = 8;
const WRITES: usize = 10_000;
/// Objects per worker at scale 1.
const OBJECTS: u64 = 120_000;

struct Obj(NonNull<u8>);
// SAFETY: an Obj owns its allocation; any thread may free it.
unsafe impl Send for Obj {}

fn layout() -> Layout {
    Layout::from_size_align(OBJ, BLOCK_ALIGN).expect("constant layout")
}

fn obj_alloc() -> Obj {
    // SAFETY: non-zero size.
    let p = unsafe { alloc(layout()) };
    Obj(NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout())))
}

fn obj_free(o: Obj) {
    // SAFETY: allocated by `obj_alloc` with this layout.
    unsafe { dealloc(o.0.as_ptr(), layout()) }
}

/// Writes every byte of a fresh object `WRITES` times, verifies, frees.
fn thrash_loop(objects: u64, tag: u8) {
    for i in 0..objects {
        let o = obj_alloc();
        let p = o.0.as_ptr();
        let mut last = 0;
        for w in 0..WRITES {
            last = tag ^ (i as u8) ^ (w as u8);
            for b in 0..OBJ {
                // SAFETY: b < OBJ, the object's size.
                unsafe { p.add(b).write_volatile(last.wrapping_add(b as u8)) };
            }
        }
        for b in 0..OBJ {
            // SAFETY: as above; written in the loop.
            let got = unsafe { p.add(b).read_volatile() };
            if got != last.wrapping_add(b as u8) {
                corruption(format_args!(
                    "cache object {p:p}: byte {b} is {got:#04x}, expected {:#04x}",
                    last.wrapping_add(b as u8)
                ));
            }
        }
        obj_free(o);
    }
}

pub(super) fn thrash(p: &Params) -> u64 {
    let objects = p.scaled(OBJECTS);
    thread::scope(|s| {
        for t in 0..p.threads {
            s.spawn(move || thrash_loop(objects, t as u8));
        }
    });
    p.threads as u64 * objects * (WRITES * OBJ) as u64
}

pub(super) fn scratch(p: &Params) -> u64 {
    let objects = p.scaled(OBJECTS);
    // Allocated back to back by this thread: likely neighbours in one line.
    let handed: Vec<Obj> = (0..p.threads).map(|_| obj_alloc()).collect();
    thread::scope(|s| {
        for (t, o) in handed.into_iter().enumerate() {
            s.spawn(move || {
                obj_free(o);
                thrash_loop(objects, t as u8);
            });
        }
    });
    p.threads as u64 * objects * (WRITES * OBJ) as u64
}
