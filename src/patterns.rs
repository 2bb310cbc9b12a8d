//! Rust allocation patterns, timed whole (`pat-kmem` and `pat-system`,
//! `benches/patterns.sh`): what a Rust program does with its allocator,
//! beside the C suite's programs. Each pattern runs the same work under
//! whatever global allocator its binary has and returns seconds.
//!
//! | pattern | what |
//! |---|---|
//! | `vec_growth` | a `Vec<u64>` pushed to a million elements (8 MiB), 60 times: `realloc` through every size |
//! | `buffers` | four `Vec<u8>`s grown by appends of random length (up to half their length) to 16 MiB, in random turns, 20 times: `realloc` through many sizes, as a string builder or a read loop |
//! | `strings` | a million `format!` strings collected and dropped, 3 times |
//! | `hashmap` | a million `HashMap<u64, Vec<u8>>` inserts of 0-63 bytes, half removed, half a million more of 0-127 |
//! | `btree` | a million random `BTreeMap` inserts, half removed |
//! | `aligned` | blocks of 16-512 bytes aligned to 32, 64 or 128 (cache-padded nodes, as `crossbeam_utils::CachePadded` or `#[repr(align(64))]`), a pool of 10,000 replaced at random 3 million times, one byte written |
//! | `large_mixed` | 64 KiB-8 MiB blocks aligned to 8 B-4 KiB, 16 live, 20,000 allocations, first and last byte written |
//! | `large_touch` | as `large_mixed`, every page written |
//! | `large_aligned` | as `large_touch`, the blocks aligned to 64 KiB-2 MiB (`O_DIRECT` and huge-page buffers, `Layout`s of page-table or DMA alignment) |
//! | `channel` | a million 64-511 byte boxes sent to another thread, which drops them (every free a remote one) |
//! | `two_threads_strings` | two threads each collecting 300,000 `to_string`s, 4 times |
//! | `thread_churn` | eight threads at a time, each collecting 200 boxes of 16-515 bytes and exiting, 200 times: a thread's first allocations and its exit |
//! | `zeroed_large` | `vec![0u8; n]` of 1-33 MiB, written at the start and in the middle, 4,000 times: large zeroed blocks whose pages are mostly never touched |
//! | `tree_nodes` | a binary tree of 2^19 boxed 40-byte nodes (the inner ones with a short `String`) built, summed and dropped, 12 times |
//! | `vec_of_vecs` | 3 million pushes at random into 200,000 `Vec<u32>`s, 6 times: many small vectors growing a step at a time |
//! | `shared_pool` | four threads pushing 8-1007 byte `Vec`s into one `Mutex`ed pool and dropping one at random: blocks freed by threads that did not allocate them |

use std::alloc::{alloc, dealloc, Layout};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::Instant;

/// The patterns, by name.
pub const ALL: &[&str] = &[
    "vec_growth",
    "buffers",
    "strings",
    "hashmap",
    "btree",
    "aligned",
    "large_mixed",
    "large_touch",
    "large_aligned",
    "channel",
    "two_threads_strings",
    "thread_churn",
    "zeroed_large",
    "tree_nodes",
    "vec_of_vecs",
    "shared_pool",
];

/// xorshift64: the same sequence under every allocator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn vec_growth() {
    for _ in 0..60 {
        let mut v = Vec::new();
        for i in 0..1_000_000u64 {
            v.push(i);
        }
        black_box(&v);
    }
}

fn buffers() {
    let mut r = Rng(88172645463325252);
    for round in 0..20u8 {
        let mut bufs: [Vec<u8>; 4] = Default::default();
        let top = 16 << 20;
        while bufs.iter().any(|b| b.len() < top) {
            let b = &mut bufs[(r.next() % 4) as usize];
            if b.len() >= top {
                continue;
            }
            let step = 1 + (r.next() >> 20) as usize % (b.len() / 2 + 4096);
            b.resize(b.len() + step, round);
        }
        black_box(&bufs);
    }
}

fn strings() {
    for _ in 0..3 {
        let v: Vec<String> = (0..1_000_000).map(|i| format!("{i}-{}", i * 7)).collect();
        black_box(&v);
    }
}

fn hashmap() {
    let mut r = Rng(7);
    let mut m: HashMap<u64, Vec<u8>> = HashMap::new();
    for i in 0..1_000_000u64 {
        m.insert(i, vec![0u8; (r.next() % 64) as usize]);
    }
    for i in (0..1_000_000u64).step_by(2) {
        m.remove(&i);
    }
    for i in 0..500_000u64 {
        m.insert(i * 2, vec![1u8; (r.next() % 128) as usize]);
    }
    black_box(&m);
}

fn btree() {
    let mut r = Rng(9);
    let mut m = BTreeMap::new();
    for _ in 0..1_000_000 {
        m.insert(r.next(), r.next());
    }
    let keys: Vec<u64> = m.keys().copied().step_by(2).collect();
    for k in keys {
        m.remove(&k);
    }
    black_box(&m);
}

fn aligned() {
    let mut r = Rng(7);
    let mut pool: Vec<(*mut u8, Layout)> = Vec::with_capacity(10_000);
    for i in 0..3_000_000 + 10_000 {
        let size = 16 + (r.next() % 497) as usize;
        let align = 32usize << (r.next() % 3);
        let l = Layout::from_size_align(size, align).expect("a valid layout");
        // SAFETY: a non-zero layout.
        let p = unsafe { alloc(l) };
        assert!(
            !p.is_null() && p as usize % align == 0,
            "a block aligned to {align}"
        );
        // SAFETY: inside the block.
        unsafe { p.write(1) };
        if i < 10_000 {
            pool.push((p, l));
        } else {
            let k = r.next() as usize % pool.len();
            let (q, ql) = std::mem::replace(&mut pool[k], (p, l));
            // SAFETY: allocated above with `ql`, freed once.
            unsafe { dealloc(q, ql) };
        }
    }
    for (p, l) in pool {
        // SAFETY: as above.
        unsafe { dealloc(p, l) };
    }
}

/// `large_mixed`, `large_touch` and `large_aligned`: alignments of 8 B-4
/// KiB, or with `over_aligned` of 64 KiB-2 MiB.
fn large(touch_every_page: bool, over_aligned: bool) {
    let mut r = Rng(11);
    let mut live: Vec<(*mut u8, Layout)> = Vec::new();
    for _ in 0..20_000 {
        let size = (64 << 10) + (r.next() as usize % ((8 << 20) - (64 << 10)));
        let align = if over_aligned {
            (64usize << 10) << (r.next() % 6)
        } else {
            8usize << (r.next() % 10)
        };
        let l = Layout::from_size_align(size, align).expect("a valid layout");
        // SAFETY: a non-zero layout.
        let p = unsafe { alloc(l) };
        assert!(!p.is_null(), "out of memory");
        let step = if touch_every_page { 4096 } else { size - 1 };
        let mut o = 0;
        while o < size {
            // SAFETY: `o < size`, inside the block.
            unsafe { p.add(o).write(1) };
            o += step;
        }
        // SAFETY: the block's last byte.
        unsafe { p.add(size - 1).write(1) };
        live.push((p, l));
        if live.len() > 16 {
            let (p, l) = live.swap_remove(r.next() as usize % live.len());
            // SAFETY: allocated above with `l`, freed once.
            unsafe { dealloc(p, l) };
        }
    }
    for (p, l) in live {
        // SAFETY: as above.
        unsafe { dealloc(p, l) };
    }
}

fn channel() {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Box<[u8]>>(1024);
    let t = std::thread::spawn(move || rx.into_iter().map(|b| b.len()).sum::<usize>());
    let mut r = Rng(13);
    for _ in 0..1_000_000 {
        let n = 64 + (r.next() % 448) as usize;
        tx.send(vec![0u8; n].into_boxed_slice())
            .expect("the receiver lives");
    }
    drop(tx);
    black_box(t.join().expect("the receiver does not panic"));
}

fn two_threads_strings() {
    let ts: Vec<_> = (0..2)
        .map(|k| {
            std::thread::spawn(move || {
                let mut n = 0;
                for _ in 0..4 {
                    let v: Vec<String> = (0..300_000).map(|i| (i * k).to_string()).collect();
                    n += v.len();
                }
                n
            })
        })
        .collect();
    for t in ts {
        black_box(t.join().expect("the thread does not panic"));
    }
}

/// Eight threads at a time, each collecting 200 boxes of 16-515 bytes and
/// exiting, 200 times: a thread's first allocations and its exit.
fn thread_churn() {
    for round in 0..200 {
        let ts: Vec<_> = (0..8)
            .map(|k| {
                std::thread::spawn(move || {
                    let v: Vec<Box<[u8]>> = (0..200)
                        .map(|i| vec![0u8; 16 + (i * k + round) % 500].into_boxed_slice())
                        .collect();
                    v.len()
                })
            })
            .collect();
        for t in ts {
            black_box(t.join().expect("the thread does not panic"));
        }
    }
}

/// `vec![0u8; n]` of 1-33 MiB, written at the start and in the middle and
/// dropped, 4,000 times: large zeroed blocks (a buffer read into in part),
/// most of whose pages are never touched.
fn zeroed_large() {
    let mut r = Rng(17);
    for _ in 0..4000 {
        let n = (1usize << 20) + (r.next() as usize % (32 << 20));
        let mut v = vec![0u8; n];
        v[0] = 1;
        v[n / 2] = 1;
        black_box(&v);
    }
}

/// A binary tree of 2^19 boxed five-word nodes (each inner one with a
/// short `String`) built, summed and dropped, 12 times: a structure built
/// in allocation order, then walked.
fn tree_nodes() {
    enum T {
        Leaf(u64),
        Node(Box<T>, Box<T>, String),
    }
    fn build(d: u32, x: u64) -> T {
        if d == 0 {
            T::Leaf(x)
        } else {
            let l = Box::new(build(d - 1, x * 2));
            let r = Box::new(build(d - 1, x * 2 + 1));
            T::Node(l, r, x.to_string())
        }
    }
    fn sum(t: &T) -> u64 {
        match t {
            T::Leaf(x) => *x,
            T::Node(a, b, s) => sum(a) + sum(b) + s.len() as u64,
        }
    }
    for i in 0..12 {
        black_box(sum(&build(18, i)));
    }
}

/// 200,000 `Vec<u32>`s pushed to at random, 3 million pushes, 6 times: many
/// small vectors growing a step at a time.
fn vec_of_vecs() {
    let mut r = Rng(19);
    for _ in 0..6 {
        let mut vv: Vec<Vec<u32>> = (0..200_000).map(|_| Vec::new()).collect();
        for _ in 0..3_000_000 {
            let i = r.next() as usize % vv.len();
            vv[i].push(i as u32);
        }
        black_box(&vv);
    }
}

/// Four threads (more than this machine's cores) pushing 8-1007 byte
/// `Vec`s into one `Mutex`ed pool and dropping one at random once it holds
/// 1,000, 400,000 each: blocks freed by threads that did not allocate them.
fn shared_pool() {
    use std::sync::{Arc, Mutex};
    let q: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let ts: Vec<_> = (0..4u64)
        .map(|k| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut r = Rng(23 + k);
                for _ in 0..400_000 {
                    let b = vec![k as u8; 8 + (r.next() % 1000) as usize];
                    let old = {
                        let mut g = q.lock().expect("no thread panics holding the pool");
                        g.push(b);
                        let n = g.len();
                        (n > 1000).then(|| g.swap_remove(r.next() as usize % n))
                    };
                    black_box(old);
                }
            })
        })
        .collect();
    for t in ts {
        t.join().expect("the thread does not panic");
    }
}

/// Runs pattern `name` once: its seconds, or `None` for an unknown name.
pub fn run(name: &str) -> Option<f64> {
    let t = Instant::now();
    match name {
        "vec_growth" => vec_growth(),
        "buffers" => buffers(),
        "strings" => strings(),
        "hashmap" => hashmap(),
        "btree" => btree(),
        "aligned" => aligned(),
        "large_mixed" => large(false, false),
        "large_touch" => large(true, false),
        "large_aligned" => large(true, true),
        "channel" => channel(),
        "two_threads_strings" => two_threads_strings(),
        "thread_churn" => thread_churn(),
        "zeroed_large" => zeroed_large(),
        "tree_nodes" => tree_nodes(),
        "vec_of_vecs" => vec_of_vecs(),
        "shared_pool" => shared_pool(),
        _ => return None,
    }
    Some(t.elapsed().as_secs_f64())
}

/// `main` of the `pat-*` binaries: `pat-X NAME` prints the seconds.
pub fn main_with(mut args: impl Iterator<Item = String>) -> std::process::ExitCode {
    let name = args.nth(1).unwrap_or_default();
    match run(&name) {
        Some(s) => {
            println!("{s:.3}");
            std::process::ExitCode::SUCCESS
        }
        None => {
            eprintln!("usage: pat-* PATTERN   (one of: {})", ALL.join(", "));
            std::process::ExitCode::from(2)
        }
    }
}
