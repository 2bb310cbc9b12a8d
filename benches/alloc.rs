//! Allocators side by side, in one process: each is called directly
//! through the `GlobalAlloc` trait on an instance (not installed as the
//! global allocator, which stays the system's for criterion itself), so
//! every group compares the same operation across allocators.
//!
//! Groups (ids are `<allocator>/<parameter>`):
//!
//! - `hot_pair`: one alloc+free pair of 16..4096 B, the fast path with a
//!   warm per-thread cache;
//! - `batch_1000`: allocate 1000 blocks (all 64 B, or sizes cycling
//!   through 16..1024 B), then free them in allocation order;
//! - `realloc_growth`: 16 B grown by `realloc`, doubling up to 64 KiB,
//!   then freed (one iteration = 13 reallocs);
//! - `large`: an alloc+free pair of 64 KiB, 1 MiB and 8 MiB, writing the
//!   first and last byte (the span path, not page faulting);
//! - `aligned`: alloc+free pairs over-aligned to 64 (256 B) and 4096
//!   (4096 B);
//! - `cross_thread_free`: this thread allocates 64 B blocks and a second
//!   thread frees them, in batches of 256 sent over a channel (per block).
//!
//! Allocators: the system's, kmem's, and mimalloc and jemalloc with
//! `--features compare` (off by default: jemalloc builds from C source).
//! Run with `cargo bench --bench alloc --features compare` (a filter
//! narrows it, e.g. `cargo bench --bench alloc -- hot_pair/kmem`).

use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `$f(name, &'static allocator, args...)` for every allocator.
macro_rules! each_allocator {
    ($f:ident $(, $arg:expr)*) => {{
        $f("system", &System $(, $arg)*);
        $f("kmem", &kmem::Kmem $(, $arg)*);
        #[cfg(feature = "compare")]
        $f("mimalloc", &mimalloc::MiMalloc $(, $arg)*);
        #[cfg(feature = "compare")]
        $f("jemalloc", &tikv_jemallocator::Jemalloc $(, $arg)*);
    }};
}

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn configure(g: &mut Group<'_>) {
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).expect("valid benchmark layout")
}

/// Allocates with `a`, panicking on failure (a benchmark has no use for a
/// null pointer).
///
/// # Safety
/// `l` has a non-zero size.
unsafe fn must_alloc<A: GlobalAlloc>(a: &A, l: Layout) -> *mut u8 {
    // SAFETY: the caller guarantees a non-zero size.
    let p = unsafe { a.alloc(l) };
    assert!(!p.is_null(), "allocation of {l:?} failed");
    p
}

fn hot_pair<A: GlobalAlloc>(name: &str, a: &A, g: &mut Group<'_>, size: usize) {
    let l = layout(size, 8);
    g.bench_with_input(BenchmarkId::new(name, size), &l, |b, &l| {
        b.iter(|| {
            // SAFETY: non-zero size; freed with the same layout.
            unsafe {
                let p = must_alloc(a, black_box(l));
                p.write(1);
                a.dealloc(black_box(p), l);
            }
        })
    });
}

fn batch<A: GlobalAlloc>(name: &str, a: &A, g: &mut Group<'_>, mixed: bool) {
    let layouts: Vec<Layout> = (0..1000)
        .map(|i| {
            let size = if mixed { 16 << (i % 7) } else { 64 };
            layout(size, 8)
        })
        .collect();
    let mut ptrs = vec![std::ptr::null_mut::<u8>(); layouts.len()];
    let id = BenchmarkId::new(name, if mixed { "16..1024" } else { "64" });
    g.bench_function(id, |b| {
        b.iter(|| {
            for (p, &l) in ptrs.iter_mut().zip(&layouts) {
                // SAFETY: non-zero size.
                *p = unsafe { must_alloc(a, l) };
            }
            for (&p, &l) in ptrs.iter().zip(&layouts) {
                // SAFETY: allocated just above with this layout.
                unsafe { a.dealloc(black_box(p), l) };
            }
        })
    });
}

fn realloc_growth<A: GlobalAlloc>(name: &str, a: &A, g: &mut Group<'_>) {
    g.bench_function(BenchmarkId::new(name, "16..64KiB"), |b| {
        b.iter(|| {
            let mut l = layout(16, 8);
            // SAFETY: non-zero size; each realloc passes the block's current
            // layout and a larger size; the last layout frees it.
            unsafe {
                let mut p = must_alloc(a, l);
                p.write(7);
                while l.size() < 64 << 10 {
                    let new = l.size() * 2;
                    p = a.realloc(p, l, new);
                    assert!(!p.is_null(), "realloc to {new} B failed");
                    l = layout(new, 8);
                    p.add(new - 1).write(7);
                }
                assert_eq!(p.read(), 7, "realloc lost the contents");
                a.dealloc(black_box(p), l);
            }
        })
    });
}

fn large<A: GlobalAlloc>(name: &str, a: &A, g: &mut Group<'_>, size: usize) {
    let l = layout(size, 8);
    let label = if size >= 1 << 20 {
        format!("{}MiB", size >> 20)
    } else {
        format!("{}KiB", size >> 10)
    };
    g.bench_with_input(BenchmarkId::new(name, label), &l, |b, &l| {
        b.iter(|| {
            // SAFETY: non-zero size; both writes are in bounds.
            unsafe {
                let p = must_alloc(a, black_box(l));
                p.write(1);
                p.add(l.size() - 1).write(1);
                a.dealloc(black_box(p), l);
            }
        })
    });
}

fn aligned<A: GlobalAlloc>(name: &str, a: &A, g: &mut Group<'_>, (size, align): (usize, usize)) {
    let l = layout(size, align);
    g.bench_with_input(
        BenchmarkId::new(name, format!("align{align}")),
        &l,
        |b, &l| {
            b.iter(|| {
                // SAFETY: non-zero size; freed with the same layout.
                unsafe {
                    let p = must_alloc(a, black_box(l));
                    assert_eq!(p as usize % l.align(), 0, "misaligned block");
                    a.dealloc(black_box(p), l);
                }
            })
        },
    );
}

/// A batch of blocks in flight between the two threads (addresses as
/// `usize`, so the batch is `Send`).
type Batch = Vec<usize>;

fn cross_thread_free<A: GlobalAlloc + Sync>(name: &'static str, a: &'static A, g: &mut Group<'_>) {
    const BATCH: usize = 256;
    let l = layout(64, 8);
    g.bench_function(BenchmarkId::new(name, "64B"), |b| {
        b.iter_custom(|iters| {
            let (to_freer, batches) = mpsc::sync_channel::<Batch>(4);
            let (to_producer, empties) = mpsc::channel::<Batch>();
            let freer = std::thread::spawn(move || {
                for mut batch in batches {
                    for p in batch.drain(..) {
                        // SAFETY: allocated by the producer with `l`.
                        unsafe { a.dealloc(p as *mut u8, l) };
                    }
                    // The producer may be gone after its last batch.
                    let _ = to_producer.send(batch);
                }
            });
            let start = Instant::now();
            let mut batch = Batch::with_capacity(BATCH);
            for _ in 0..iters {
                // SAFETY: non-zero size.
                batch.push(unsafe { must_alloc(a, l) } as usize);
                if batch.len() == BATCH {
                    let next = empties
                        .try_recv()
                        .unwrap_or_else(|_| Batch::with_capacity(BATCH));
                    to_freer
                        .send(std::mem::replace(&mut batch, next))
                        .expect("freer thread alive");
                }
            }
            to_freer.send(batch).expect("freer thread alive");
            drop(to_freer);
            freer.join().expect("freer thread panicked");
            start.elapsed()
        })
    });
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("hot_pair");
    configure(&mut g);
    for size in [16usize, 32, 64, 256, 1024, 4096] {
        each_allocator!(hot_pair, &mut g, size);
    }
    g.finish();

    let mut g = c.benchmark_group("batch_1000");
    configure(&mut g);
    for mixed in [false, true] {
        each_allocator!(batch, &mut g, mixed);
    }
    g.finish();

    let mut g = c.benchmark_group("realloc_growth");
    configure(&mut g);
    each_allocator!(realloc_growth, &mut g);
    g.finish();

    let mut g = c.benchmark_group("large");
    configure(&mut g);
    for size in [64usize << 10, 1 << 20, 8 << 20] {
        each_allocator!(large, &mut g, size);
    }
    g.finish();

    let mut g = c.benchmark_group("aligned");
    configure(&mut g);
    for shape in [(256usize, 64usize), (4096, 4096)] {
        each_allocator!(aligned, &mut g, shape);
    }
    g.finish();

    let mut g = c.benchmark_group("cross_thread_free");
    configure(&mut g);
    each_allocator!(cross_thread_free, &mut g);
    g.finish();
}

criterion_group!(alloc_benches, benches);
criterion_main!(alloc_benches);
