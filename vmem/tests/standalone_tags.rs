//! `StandaloneTags`: every tag distinct and aligned, freed tags handed out
//! again before fresh ones, chunks mapped only when the carved ones run
//! out (64 KiB ones first, then 2 MiB ones), and the `Debug` counts true.

#![cfg(not(loom))]

use std::collections::HashSet;
use vmem::{Flags, StandaloneTags, TagSource, TAG_ALIGN, TAG_SIZE};

#[test]
fn carves_on_demand_and_reuses_freed_tags_first() {
    let src = StandaloneTags::new();
    assert_eq!(
        src.mapped_bytes(),
        0,
        "nothing is mapped before the first tag"
    );
    let first = src.alloc_tag(Flags::NOWAIT).expect("a tag");
    assert_eq!(src.mapped_bytes(), 64 << 10, "one small chunk");
    assert!(format!("{src:?}").contains("spare: 1023"), "{src:?}");

    // Past the small chunks (2 MiB of them) and into a huge one: every tag
    // distinct, aligned, and a whole stride apart from the others.
    let n = (2 << 20) / 64 + 100;
    let mut tags = vec![first];
    let mut seen = HashSet::new();
    seen.insert(first.as_ptr() as usize);
    for _ in 1..n {
        let t = src.alloc_tag(Flags::NOWAIT).expect("a tag");
        let a = t.as_ptr() as usize;
        assert_eq!(a % TAG_ALIGN, 0);
        assert!(seen.insert(a), "tag {a:#x} handed out twice");
        tags.push(t);
    }
    let mut addrs: Vec<usize> = seen.iter().copied().collect();
    addrs.sort_unstable();
    assert!(addrs.windows(2).all(|w| w[1] - w[0] >= TAG_SIZE));
    assert_eq!(
        src.mapped_bytes(),
        (2 << 20) + (2 << 20),
        "the small chunks, then one huge"
    );

    // Freed tags come back first, newest first; nothing new is mapped.
    let (a, b) = (tags.pop().unwrap(), tags.pop().unwrap());
    // SAFETY: both came from `src` and are not used again.
    unsafe {
        src.free_tag(b);
        src.free_tag(a);
    }
    assert_eq!(src.alloc_tag(Flags::NOWAIT), Some(a));
    assert_eq!(src.alloc_tag(Flags::NOWAIT), Some(b));
    assert_eq!(src.mapped_bytes(), 4 << 20);
    for t in tags.into_iter().chain([a, b]) {
        // SAFETY: as above.
        unsafe { src.free_tag(t) };
    }
    // The huge chunk's uncarved slots and every freed tag are spare.
    let spare = (4 << 20) / 64;
    assert!(
        format!("{src:?}").contains(&format!("spare: {spare}")),
        "{src:?}"
    );
}
