//! `LocalArena`: the arena owned by one thread at a time, whose common
//! handle operations skip the lock, behaves as the arena does.
#![cfg(not(loom))]

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use vmem::{Allocation, Arena, Error, Flags, LocalArena};

const NOWAIT: Flags = Flags::NOWAIT;

mod common;
use common::check;

/// The same random sequence of handle allocations and frees (every
/// policy, sizes of 1 to 4096, a third of the steps freeing a random live
/// segment) on an `Arena` and on a `LocalArena`: the same addresses, the
/// same failures, the same statistics, and the walker's checks pass all
/// along.
#[test]
fn a_local_arena_makes_the_arenas_choices() {
    for policy in [Flags::INSTANTFIT, Flags::BESTFIT, Flags::NEXTFIT] {
        let shared = common::arena("shared", 1, 0x1000, 1 << 16);
        let local = LocalArena::new(common::arena("local", 1, 0x1000, 1 << 16));
        let mut rng = SmallRng::seed_from_u64(42);
        let mut hs: Vec<(Allocation<'_>, Allocation<'_>)> = Vec::new();
        for step in 0..20_000 {
            let r: u64 = rng.gen();
            if r % 3 == 0 && !hs.is_empty() {
                let (a, b) = hs.swap_remove((r >> 8) as usize % hs.len());
                assert_eq!(a.addr(), b.addr());
                shared.free_handle(a).unwrap();
                local.free_handle(b).unwrap();
            } else {
                let size = 1 + (r >> 20) as usize % 4096;
                match (
                    shared.alloc_handle(size, NOWAIT | policy),
                    local.alloc_handle(size, NOWAIT | policy),
                ) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!((a.addr(), a.size()), (b.addr(), b.size()), "step {step}");
                        hs.push((a, b));
                    }
                    (Err(Error::NoMemory { .. }), Err(Error::NoMemory { .. })) => {}
                    (x, y) => panic!("step {step}: {:?} against {:?}", x.is_ok(), y.is_ok()),
                }
            }
            if step % 1000 == 0 {
                check(&shared);
                let (s, l) = (shared.stats(), local.stats());
                assert_eq!((s.inuse, s.busy_segments), (l.inuse, l.busy_segments));
            }
        }
        for (a, b) in hs {
            shared.free_handle(a).unwrap();
            local.free_handle(b).unwrap();
        }
        let mut local = local;
        check(local.get_mut());
        assert_eq!(local.stats().inuse, 0);
        assert_eq!(local.get_mut().size_free(), 1 << 16);
    }
}

#[test]
fn a_local_arena_refuses_a_foreign_handle() {
    let other = common::arena("other", 1, 0, 100);
    let local = LocalArena::new(common::arena("local", 1, 0, 100));
    let h = other.alloc_handle(10, NOWAIT).unwrap();
    let mine = local.alloc_handle(10, NOWAIT).unwrap();
    assert!(matches!(
        local.free_handle(h),
        Err(Error::ForeignHandle { addr: 0, .. })
    ));
    assert_eq!(other.size_allocated(), 10);
    local.free_handle(mine).unwrap();
    assert_eq!(local.stats().inuse, 0);
}

/// Imports and releases go through the source as the arena's do: the fast
/// free releases a span it empties.
#[test]
fn a_local_arena_imports_and_releases_spans() {
    let src = common::Spans::new(0x10_0000);
    let mut local = LocalArena::new(Arena::builder("import").source(&src, 4096).build().unwrap());
    for _ in 0..3 {
        let hs: Vec<Allocation<'_>> = (0..64)
            .map(|_| local.alloc_handle(1000, NOWAIT).unwrap())
            .collect();
        assert!(src.out() >= 64_000);
        for h in hs {
            local.free_handle(h).unwrap();
        }
        assert_eq!(src.out(), 0, "every span released");
        check(local.get_mut());
    }
    assert_eq!(local.get_mut().size_total(), 0);
}

/// Frees that coalesce hand their tags to the spare list; the surplus goes
/// back to the tag source as the arena's free sends it, so the spares stay
/// bounded.
#[test]
fn a_local_arena_keeps_its_spare_tags_bounded() {
    let mut local = LocalArena::new(common::arena("spares", 1, 0, 1 << 20));
    let hs: Vec<Allocation<'_>> = (0..4096)
        .map(|_| local.alloc_handle(8, NOWAIT | Flags::INSTANTFIT).unwrap())
        .collect();
    for h in hs {
        local.free_handle(h).unwrap();
    }
    let spare = local.get_mut().release_spare_tags();
    assert!(spare <= vmem::BT_MAXFREE, "{spare} spare tags");
    check(local.get_mut());
    assert_eq!(local.stats().inuse, 0);
}

/// The arena comes back out whole, to be shared again.
#[test]
fn a_local_arena_gives_its_arena_back() {
    let local = LocalArena::new(common::arena("back", 1, 0, 100));
    let h = local.alloc_handle(10, NOWAIT).unwrap();
    local.free_handle(h).unwrap();
    let a = local.into_inner();
    let p = a.alloc(10, NOWAIT).unwrap();
    a.free(p, 10).unwrap();
    check(&a);
}
