//! `ArenaBuilder::keep_idle`: the latest wholly free imported span stays
//! in the arena; the one kept before it is released when another is kept;
//! `release_idle` releases it; spans above the size and static spans are
//! not affected; every segment list stays consistent (`check`).
#![cfg(not(loom))]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::check;
use vmem::{Arena, Flags, Source};

const NOWAIT: Flags = Flags::NOWAIT;
const SPAN: usize = 0x1000;

/// Hands out spans with gaps between them and records the releases.
struct Spans {
    next: AtomicUsize,
    imported: AtomicUsize,
    released: Mutex<Vec<(usize, usize)>>,
}

impl Spans {
    const fn new(base: usize) -> Self {
        Spans {
            next: AtomicUsize::new(base),
            imported: AtomicUsize::new(0),
            released: Mutex::new(Vec::new()),
        }
    }
    fn imports(&self) -> usize {
        self.imported.load(Ordering::SeqCst)
    }
    fn releases(&self) -> Vec<(usize, usize)> {
        self.released.lock().unwrap().clone()
    }
}

impl Source for Spans {
    fn import(&self, size: usize, _flags: Flags) -> Option<usize> {
        self.imported.fetch_add(1, Ordering::SeqCst);
        Some(self.next.fetch_add(size + 0x10_0000, Ordering::SeqCst))
    }
    fn release(&self, addr: usize, size: usize) {
        self.released.lock().unwrap().push((addr, size));
    }
}

fn arena(src: &Spans, keep: usize) -> Arena<'_> {
    Arena::builder("keep")
        .quantum(16)
        .source(src, SPAN)
        .keep_idle(keep)
        .build()
        .unwrap()
}

#[test]
fn a_lone_segment_freed_and_taken_again_imports_once() {
    let src = Spans::new(0x100_0000);
    let a = arena(&src, SPAN);
    for _ in 0..100 {
        let x = a.alloc(0x800, NOWAIT).unwrap();
        a.free(x, 0x800).unwrap();
        check(&a);
    }
    assert_eq!(src.imports(), 1, "the span stayed in the arena");
    assert!(src.releases().is_empty());
    assert_eq!(a.size_total(), SPAN);
    assert_eq!(a.release_idle(), SPAN);
    assert_eq!(src.releases(), vec![(0x100_0000, SPAN)]);
    assert_eq!(a.size_total(), 0);
    assert_eq!(a.release_idle(), 0, "nothing kept any more");
    check(&a);
}

#[test]
fn keeping_a_span_releases_the_one_kept_before() {
    let src = Spans::new(0x100_0000);
    let a = arena(&src, SPAN);
    // Two spans, one segment each.
    let x = a.alloc(SPAN, NOWAIT).unwrap();
    let y = a.alloc(SPAN, NOWAIT).unwrap();
    assert_eq!(src.imports(), 2);
    a.free(x, SPAN).unwrap();
    assert!(src.releases().is_empty(), "x's span kept");
    a.free(y, SPAN).unwrap();
    assert_eq!(
        src.releases(),
        vec![(x, SPAN)],
        "x's span went when y's was kept"
    );
    assert_eq!(a.size_total(), SPAN);
    check(&a);
    a.release_idle();
    assert_eq!(src.releases(), vec![(x, SPAN), (y, SPAN)]);
    check(&a);
}

#[test]
fn a_kept_span_allocated_from_again_is_not_released() {
    let src = Spans::new(0x100_0000);
    let a = arena(&src, SPAN);
    let x = a.alloc(0x100, NOWAIT).unwrap();
    a.free(x, 0x100).unwrap();
    let y = a.alloc(0x100, NOWAIT).unwrap();
    assert_eq!(src.imports(), 1);
    assert_eq!(a.release_idle(), 0, "the kept span is in use");
    assert!(src.releases().is_empty());
    a.free(y, 0x100).unwrap();
    assert!(src.releases().is_empty(), "kept again");
    assert_eq!(a.release_idle(), SPAN);
    check(&a);
}

#[test]
fn spans_above_the_size_go_at_once() {
    let src = Spans::new(0x100_0000);
    let a = arena(&src, SPAN);
    let x = a.alloc(2 * SPAN, NOWAIT).unwrap();
    a.free(x, 2 * SPAN).unwrap();
    assert_eq!(src.releases(), vec![(x, 2 * SPAN)]);
    assert_eq!(a.size_total(), 0);
    check(&a);
}

#[test]
fn next_fit_leaves_the_cursor_inside_a_kept_span() {
    let src = Spans::new(0x100_0000);
    let a = arena(&src, SPAN);
    let next = Flags::NOWAIT | Flags::NEXTFIT;
    // The cursor moves behind each next-fit segment: free space on both
    // sides of it inside the span once they are freed.
    let p = a.xalloc(0x100, &vmem::Constraints::NONE, next).unwrap();
    let q = a.xalloc(0x100, &vmem::Constraints::NONE, next).unwrap();
    a.xfree(p, 0x100).unwrap();
    a.xfree(q, 0x100).unwrap();
    check(&a);
    assert!(src.releases().is_empty(), "kept, cursor and all");
    assert_eq!(a.release_idle(), SPAN);
    assert_eq!(a.size_total(), 0);
    check(&a);
    // And the arena goes on working.
    let r = a.xalloc(0x100, &vmem::Constraints::NONE, next).unwrap();
    a.xfree(r, 0x100).unwrap();
    check(&a);
}

#[test]
fn static_spans_are_never_kept_nor_released() {
    let src = Spans::new(0x100_0000);
    let a = Arena::builder("mixed")
        .quantum(16)
        .span(0x1000, 0x100)
        .source(&src, SPAN)
        .keep_idle(SPAN)
        .build()
        .unwrap();
    let x = a.alloc(0x100, NOWAIT).unwrap();
    a.free(x, 0x100).unwrap();
    assert_eq!(a.release_idle(), 0);
    assert_eq!(a.size_total(), 0x100);
    assert!(src.releases().is_empty());
    check(&a);
}

#[test]
fn without_keep_idle_spans_go_at_once() {
    let src = Spans::new(0x100_0000);
    let a = arena(&src, 0);
    let x = a.alloc(0x800, NOWAIT).unwrap();
    a.free(x, 0x800).unwrap();
    assert_eq!(src.releases().len(), 1);
    assert_eq!(a.release_idle(), 0);
    check(&a);
}
