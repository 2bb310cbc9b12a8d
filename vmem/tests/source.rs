//! Import sources that say more than `Source` requires: spans aligned
//! beyond the quantum (`Source::span_align`).
#![cfg(not(loom))]

use std::sync::atomic::{AtomicUsize, Ordering};
use vmem::{Arena, Constraints, Flags, Source};

const NOWAIT: Flags = Flags::NOWAIT;

mod common;
use common::check;

/// A source whose spans are aligned (`Source::span_align`): an allocation
/// aligned to at most that imports only its size, where one aligned to
/// more (or a source promising nothing) asks for two alignments more. A
/// source that breaks its promise costs one more import (with the
/// overestimate), never a misaligned segment or a failed allocation.
#[test]
fn aligned_source_imports_only_the_size() {
    struct Aligned {
        next: AtomicUsize,
        align: usize,
        lie: bool,
        sizes: std::sync::Mutex<Vec<usize>>,
    }
    impl Source for Aligned {
        fn import(&self, size: usize, _flags: Flags) -> Option<usize> {
            self.sizes.lock().unwrap().push(size);
            let at = self.next.fetch_add(size + (1 << 24), Ordering::SeqCst);
            Some(if self.lie { at + 0x1000 } else { at })
        }
        fn release(&self, _addr: usize, _size: usize) {}
        fn span_align(&self) -> usize {
            self.align
        }
    }
    let source = |align, lie| Aligned {
        next: AtomicUsize::new(1 << 32),
        align,
        lie,
        sizes: std::sync::Mutex::new(Vec::new()),
    };
    let mib = 1 << 20;
    fn arena<'s>(name: &str, src: &'s Aligned) -> Arena<'s> {
        let (q, mib) = (0x1000, 1 << 20);
        Arena::builder(name)
            .quantum(q)
            .source(src, 2 * mib)
            .build()
            .unwrap()
    }
    for (span_align, align, want) in [
        (2 * mib, 2 * mib, 4 * mib),
        (2 * mib, mib, 4 * mib),
        (2 * mib, 4 * mib, 12 * mib),
        (0, 2 * mib, 8 * mib),
    ] {
        let src = source(span_align, false);
        let a = arena("aligned source", &src);
        let p = a
            .xalloc(4 * mib, &Constraints::new().align(align), NOWAIT)
            .unwrap();
        assert_eq!(p % align, 0);
        assert_eq!(
            *src.sizes.lock().unwrap(),
            [want],
            "spans aligned to {span_align}, a block aligned to {align}"
        );
        a.xfree(p, 4 * mib).unwrap();
        check(&a);
    }
    // A span off its promised alignment: handed back, and the arena
    // imports once more with FreeBSD's overestimate.
    let src = source(2 * mib, true);
    let a = arena("lying source", &src);
    let p = a
        .xalloc(4 * mib, &Constraints::new().align(2 * mib), NOWAIT)
        .unwrap();
    assert_eq!(p % (2 * mib), 0);
    assert_eq!(*src.sizes.lock().unwrap(), [4 * mib, 8 * mib]);
    assert_eq!(a.size_total(), 8 * mib);
    a.xfree(p, 4 * mib).unwrap();
    check(&a);
}

/// A source that hands out spans of one size from a fixed set of slots in
/// scrambled order, and a released slot first again (as `mmap` refills the
/// holes that `munmap` leaves): spans arrive anywhere in the address
/// range, in no order. The arena keeps its segment list and its span list
/// in address order (`State::span_position` searches the spans only), as
/// the invariant walker checks after every step; every busy segment stays
/// inside a span the source handed out and has not taken back.
#[test]
fn spans_arriving_in_holes_keep_address_order() {
    const SPAN: usize = 1 << 16;
    const SLOTS: usize = 64;
    struct Holes {
        free: std::sync::Mutex<Vec<usize>>,
        out: std::sync::Mutex<Vec<usize>>,
        /// Imports, and those landing between two spans already held.
        imports: AtomicUsize,
        between: AtomicUsize,
    }
    impl Source for Holes {
        fn import(&self, size: usize, _flags: Flags) -> Option<usize> {
            assert_eq!(size, SPAN, "one span size: requests fit a span");
            let at = self.free.lock().unwrap().pop()?;
            let mut out = self.out.lock().unwrap();
            self.imports.fetch_add(1, Ordering::SeqCst);
            if out.iter().any(|&s| s < at) && out.iter().any(|&s| s > at) {
                self.between.fetch_add(1, Ordering::SeqCst);
            }
            out.push(at);
            Some(at)
        }
        fn release(&self, addr: usize, size: usize) {
            assert_eq!(size, SPAN);
            let mut out = self.out.lock().unwrap();
            let i = out.iter().position(|&a| a == addr).expect("a span of ours");
            out.swap_remove(i);
            self.free.lock().unwrap().push(addr);
        }
    }
    // Slot i at base + scramble(i) * 2 * SPAN: neighbours in the free list
    // are far apart in the address range.
    let base = 1usize << 36;
    let slots: Vec<usize> = (0..SLOTS)
        .map(|i| base + ((i * 37) % SLOTS) * 2 * SPAN)
        .collect();
    let src = Holes {
        free: std::sync::Mutex::new(slots),
        out: std::sync::Mutex::new(Vec::new()),
        imports: AtomicUsize::new(0),
        between: AtomicUsize::new(0),
    };
    let a = Arena::builder("holes")
        .quantum(0x1000)
        .source(&src, SPAN)
        .build()
        .unwrap();
    let mut live: Vec<(usize, usize)> = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for step in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Grow to a few hundred segments, then churn, then drain: spans
        // come and go all along.
        let grow = match step {
            0..=4_999 => x % 4 != 0,
            5_000..=14_999 => x % 2 == 0,
            _ => false,
        };
        if grow || live.is_empty() {
            let size = 0x1000 * (1 + (x >> 8) as usize % 8);
            match a.xalloc(size, &Constraints::NONE, NOWAIT) {
                Ok(p) => live.push((p, size)),
                Err(_) => assert!(
                    src.free.lock().unwrap().is_empty(),
                    "failed with slots free"
                ),
            }
        } else {
            let (p, size) = live.swap_remove((x >> 8) as usize % live.len());
            a.xfree(p, size).unwrap();
        }
        if step % 97 == 0 {
            check(&a);
        }
        let out = src.out.lock().unwrap();
        if let Some(&(p, size)) = live.last() {
            assert!(
                out.iter().any(|&s| s <= p && p + size <= s + SPAN),
                "a busy segment outside the spans held"
            );
        }
    }
    check(&a);
    for (p, size) in live.drain(..) {
        a.xfree(p, size).unwrap();
    }
    check(&a);
    let (imports, between) = (
        src.imports.load(Ordering::SeqCst),
        src.between.load(Ordering::SeqCst),
    );
    assert!(
        imports > 100 && between > 50,
        "the walk saw too few spans in holes: {imports} imports, {between} between two held"
    );
    assert_eq!(a.size_total(), 0, "every span went back");
    assert!(src.out.lock().unwrap().is_empty());
}
