//! Randomized model test: an arena against a plain interval model.
//!
//! Every step runs one random operation — `alloc`, constrained `xalloc`
//! under each policy, either of them by handle (`alloc_handle`,
//! `xalloc_handle`), `free`/`xfree`/`free_handle`, adding a span — on the
//! arena and on a
//! `BTreeMap` of live allocations, then checks:
//! - `check_invariants()` (the arena's own walker);
//! - every returned range is rounded, inside managed space, disjoint from
//!   every live range, and meets its constraints;
//! - the arena's busy segments are exactly the model's live ranges (plus
//!   whatever the quantum cache holds), and its size is what was added and
//!   imported;
//! - bad constraints are rejected with the error the model predicts;
//! - a `NOWAIT` failure is honest: no free segment could have held it.
#![cfg(not(loom))]

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use vmem::{Allocation, Arena, Constraints, Error, Flags, SegmentKind, SimpleQuantumCache, Source};

/// Operations per configuration; 4 configurations, so > 100,000 in all.
const OPS: usize = 26_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Config {
    /// Static spans only, some added during the run.
    Static,
    /// Spans imported from a source and released when free.
    Import,
    /// Static spans with a quantum cache in front.
    Cache,
    /// Static spans at address 0 and at the top of the address space.
    Edges,
}

/// Imports from a large space with gaps between spans.
struct Spans {
    next: AtomicUsize,
    live: AtomicUsize,
}

impl Source for Spans {
    fn import(&self, size: usize, _flags: Flags) -> Option<usize> {
        self.live.fetch_add(size, Ordering::Relaxed);
        Some(self.next.fetch_add(size + 0x4_0000, Ordering::Relaxed))
    }
    fn release(&self, _addr: usize, size: usize) {
        self.live.fetch_sub(size, Ordering::Relaxed);
    }
}

struct Model {
    live: BTreeMap<usize, (usize, bool)>, // start -> (rounded size, via alloc())
    static_total: usize,
}

fn pick_constraints(
    rng: &mut SmallRng,
    q: usize,
    size: usize,
    span_lo: usize,
    span_hi: usize,
) -> Constraints {
    let mut c = Constraints::new();
    if rng.gen_bool(0.5) {
        c.align = q << rng.gen_range(0..7);
        if rng.gen_bool(0.5) {
            c.phase = q * rng.gen_range(0..c.align / q);
        }
    }
    if rng.gen_bool(0.3) {
        c.nocross = size.next_power_of_two().max(q) << rng.gen_range(0..3);
    }
    if rng.gen_bool(0.25) {
        let a = rng.gen_range(span_lo..=span_hi);
        let b = rng.gen_range(span_lo..=span_hi);
        c.min_addr = a.min(b);
        c.max_addr = a.max(b);
    }
    c
}

/// The error the arena must return for these constraints, if any.
fn expected_error(c: &Constraints, q: usize, size: usize) -> Option<Error> {
    let align = if c.align == 0 { q } else { c.align };
    if c.phase >= align {
        return Some(Error::BadPhase {
            phase: c.phase,
            align,
        });
    }
    if c.nocross != 0 && (c.phase % c.nocross) + size > c.nocross {
        return Some(Error::PhaseCrossesNocross {
            phase: c.phase,
            size,
            nocross: c.nocross,
        });
    }
    None
}

fn satisfies(addr: usize, size: usize, c: &Constraints, q: usize) -> bool {
    let align = if c.align == 0 { q } else { c.align };
    let last = addr as u128 + size as u128 - 1;
    addr % align == c.phase
        && (c.nocross == 0 || addr / c.nocross == (last / c.nocross as u128) as usize)
        && addr >= c.min_addr
        && last <= c.max_addr as u128
}

/// Whether any single free segment of the arena can hold the request.
fn some_free_segment_fits(a: &Arena<'_>, size: usize, c: &Constraints, q: usize) -> Option<usize> {
    let mut free = Vec::new();
    a.for_each_segment(|s| {
        if s.kind == SegmentKind::Free {
            free.push(s);
        }
    });
    let align = if c.align == 0 { q } else { c.align };
    for s in free {
        let end = s.start as u128 + s.size as u128; // exclusive
        let mut x = (s.start as u128).max(c.min_addr as u128);
        let rem = (x % align as u128) as usize;
        x += ((c.phase + align - rem) % align) as u128;
        while x + size as u128 <= end {
            if satisfies(x as usize, size, c, q) {
                return Some(x as usize);
            }
            if x > c.max_addr as u128 {
                break;
            }
            x += align as u128;
        }
    }
    None
}

fn check_against_model(
    a: &Arena<'_>,
    m: &Model,
    cfg: Config,
    src: &Spans,
    cache: &SimpleQuantumCache,
) {
    if let Err(e) = a.check_invariants() {
        let mut out = String::new();
        let _ = a.dump(&mut out);
        if std::env::var_os("VMEM_MODEL_DUMP").is_some() {
            eprintln!("{out}");
        }
        panic!("{e}");
    }
    let mut busy = BTreeMap::new();
    a.for_each_segment(|s| {
        if s.kind == SegmentKind::Busy {
            busy.insert(s.start, s.size);
        }
    });
    for (&start, &(size, _)) in &m.live {
        assert_eq!(
            busy.remove(&start),
            Some(size),
            "live range {start:#x} not busy in the arena"
        );
    }
    // Only the quantum cache may hold busy segments the model does not know.
    if cfg == Config::Cache {
        assert_eq!(busy.len(), cache.cached(), "unexplained busy segments");
    } else {
        assert!(
            busy.is_empty(),
            "arena has busy segments the model lacks: {busy:x?}"
        );
    }
    let expected = m.static_total + src.live.load(Ordering::Relaxed);
    assert_eq!(a.size_total(), expected, "arena size");
}

fn run(cfg: Config, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let q = [1usize, 16, 4096][rng.gen_range(0..3)];
    let src = Spans {
        next: AtomicUsize::new(0x1000_0000),
        live: AtomicUsize::new(0),
    };
    let cache = SimpleQuantumCache::new();
    let mut b = Arena::builder("model").quantum(q);
    match cfg {
        Config::Import => b = b.source(&src, q * 64),
        Config::Cache => b = b.qcache(q * 8, &cache),
        _ => {}
    }
    let a = b.build().unwrap();
    let mut m = Model {
        live: BTreeMap::new(),
        static_total: 0,
    };
    let span_q = 2048; // quanta per span
    let next_span = std::cell::Cell::new(1usize);
    let add_span = |a: &Arena<'_>, m: &mut Model, rng: &mut SmallRng| {
        let size = q * rng.gen_range(span_q / 4..=span_q);
        let base = match cfg {
            Config::Edges if next_span.get() == 1 => 0,
            Config::Edges if next_span.get() == 2 => usize::MAX - size + 1,
            _ => next_span.get() * q * span_q * 2,
        };
        next_span.set(next_span.get() + 1);
        a.add(base, size, Flags::NOWAIT).unwrap();
        m.static_total += size;
    };
    if cfg != Config::Import {
        for _ in 0..3 {
            add_span(&a, &mut m, &mut rng);
        }
    }
    let (lo, hi) = match cfg {
        Config::Import => (0x1000_0000, 0x1000_0000 + 64 * 0x4_0000),
        Config::Edges => (0, usize::MAX),
        _ => (0, 8 * q * span_q),
    };
    let (mut allocs, mut fails, mut frees) = (0, 0, 0);
    // Live segments held by handles, by address (also in `m.live`).
    let mut handles: HashMap<usize, Allocation<'_>> = HashMap::new();
    for step in 0..OPS {
        let r = rng.gen_range(0..100);
        if r < 45 && m.live.len() < 300 {
            // Allocate.
            let size = if rng.gen_bool(0.05) {
                q * rng.gen_range(100..400)
            } else {
                rng.gen_range(1..=q * 24)
            };
            let rsize = size.div_ceil(q) * q;
            let policy = [
                Flags::FIRSTFIT,
                Flags::BESTFIT,
                Flags::NEXTFIT,
                Flags::empty(),
            ][rng.gen_range(0..4)];
            let flags = Flags::NOWAIT | policy;
            let plain = rng.gen_bool(0.4);
            let c = if plain {
                Constraints::NONE
            } else {
                pick_constraints(&mut rng, q, rsize, lo, hi)
            };
            let expect_err = if plain {
                None
            } else {
                expected_error(&c, q, rsize)
            };
            let got = match (plain, rng.gen_bool(0.3)) {
                (true, false) => a.alloc(size, flags),
                (false, false) => a.xalloc(size, &c, flags),
                (true, true) => a.alloc_handle(size, flags).map(|h| {
                    assert_eq!(h.size(), rsize, "step {step}: handle size");
                    let p = h.addr();
                    handles.insert(p, h);
                    p
                }),
                (false, true) => a.xalloc_handle(size, &c, flags).map(|h| {
                    let p = h.addr();
                    handles.insert(p, h);
                    p
                }),
            };
            match (got, expect_err) {
                (Err(e), Some(want)) => assert_eq!(e, want, "step {step}"),
                (Ok(p), Some(want)) => panic!("step {step}: expected {want:?}, got {p:#x}"),
                (Ok(p), None) => {
                    allocs += 1;
                    assert!(
                        satisfies(p, rsize, &c, q),
                        "step {step}: {p:#x}+{rsize:#x} violates {c:?}"
                    );
                    if let Some((&s, &(sz, _))) =
                        m.live.range(..p.saturating_add(rsize)).next_back()
                    {
                        assert!(
                            s as u128 + sz as u128 <= p as u128,
                            "step {step}: {p:#x} overlaps {s:#x}+{sz:#x}"
                        );
                    }
                    m.live.insert(p, (rsize, plain));
                }
                (Err(Error::NoMemory { .. }), None) => {
                    fails += 1;
                    if let Some(x) = some_free_segment_fits(&a, rsize, &c, q) {
                        panic!(
                            "step {step}: {flags:?} {rsize:#x} {c:?} failed, but {x:#x} was free"
                        );
                    }
                }
                (Err(e), None) => panic!("step {step}: unexpected {e:?} for {c:?} size {rsize:#x}"),
            }
        } else if r < 93 || m.live.len() >= 300 {
            // Free a random live range.
            if m.live.is_empty() {
                continue;
            }
            let nth = rng.gen_range(0..m.live.len());
            let (&p, &(size, plain)) = m.live.iter().nth(nth).unwrap();
            m.live.remove(&p);
            frees += 1;
            if let Some(h) = handles.remove(&p) {
                a.free_handle(h)
            } else if plain {
                a.free(p, size)
            } else {
                a.xfree(p, size)
            }
            .unwrap();
        } else if r < 96 && matches!(cfg, Config::Static | Config::Cache) && next_span.get() < 8 {
            add_span(&a, &mut m, &mut rng);
        } else if let Some((&p, &(size, false))) = m.live.iter().next() {
            // Bad frees leave the arena unchanged.
            if handles.contains_key(&p) {
                // Held by a handle: unknown by address.
                assert!(matches!(a.xfree(p, size), Err(Error::NotAllocated { .. })));
            } else {
                if !m.live.contains_key(&(p + q)) && cfg != Config::Cache {
                    assert!(matches!(
                        a.xfree(p + q, size),
                        Err(Error::NotAllocated { .. })
                    ));
                }
                assert!(matches!(
                    a.xfree(p, size + q),
                    Err(Error::SizeMismatch { .. })
                ));
            }
        }
        if std::env::var_os("VMEM_MODEL_DUMP").is_some() {
            eprintln!("step {step} r {r}");
        }
        check_against_model(&a, &m, cfg, &src, &cache);
    }
    assert!(
        allocs > OPS / 5 && frees > OPS / 5,
        "{cfg:?}: {allocs} allocs, {fails} fails, {frees} frees"
    );
    // Free everything: imported spans all go back.
    for (p, (size, plain)) in std::mem::take(&mut m.live) {
        if let Some(h) = handles.remove(&p) {
            a.free_handle(h)
        } else if plain {
            a.free(p, size)
        } else {
            a.xfree(p, size)
        }
        .unwrap();
    }
    vmem::QuantumCache::drain(&cache, &a);
    if std::env::var_os("VMEM_MODEL_END").is_some() {
        let mut out = String::new();
        a.dump(&mut out).unwrap();
        eprintln!("{out}");
    }
    assert_eq!(a.size_allocated(), 0);
    assert_eq!(
        src.live.load(Ordering::Relaxed),
        0,
        "imported spans released"
    );
    a.check_invariants().unwrap();
}

#[test]
fn model_static_spans() {
    run(Config::Static, 1);
}

#[test]
fn model_imported_spans() {
    run(Config::Import, 2);
}

#[test]
fn model_quantum_cache() {
    run(Config::Cache, 3);
}

#[test]
fn model_address_space_edges() {
    run(Config::Edges, 4);
}
