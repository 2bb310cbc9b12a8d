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
