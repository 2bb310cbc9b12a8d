//! `kmem::Kmem` as this binary's `#[global_allocator]`, under a std-heavy
//! multi-threaded workload: collections, strings, channels, thread churn,
//! cross-thread drops, large and over-aligned blocks, every result checked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

/// A cheap deterministic generator (no allocation, no dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed as usize ^ i.wrapping_mul(31)) as u8)
        .collect()
}

#[test]
fn collections_and_strings_on_many_threads() {
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = Lcg(t + 1);
                let mut map: HashMap<String, Vec<u64>> = HashMap::new();
                let mut tree = BTreeMap::new();
                let mut dq = VecDeque::new();
                for i in 0..20_000u64 {
                    let k = format!("key-{t}-{}", rng.next() % 2000);
                    map.entry(k.clone()).or_default().push(i);
                    tree.insert(i, k);
                    dq.push_back(i.to_string().repeat((i % 7) as usize + 1));
                    if dq.len() > 300 {
                        let s = dq.pop_front().unwrap();
                        assert!(s.chars().all(|c| c.is_ascii_digit()));
                    }
                    if i % 3 == 0 {
                        tree.remove(&(i / 2));
                    }
                }
                let total: usize = map.values().map(Vec::len).sum();
                assert_eq!(total, 20_000);
                for (k, v) in &tree {
                    assert!(v.starts_with(&format!("key-{t}-")), "{k} {v}");
                }
                map.len()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap() > 0);
    }
}

#[test]
fn channels_carry_blocks_freed_on_other_threads() {
    let (tx, rx) = mpsc::channel::<(u64, Vec<u8>)>();
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut rng = Lcg(100 + t);
                for i in 0..5_000u64 {
                    let len = (rng.next() % 5000) as usize + 1;
                    let seed = t * 1_000_000 + i;
                    tx.send((seed, pattern(seed, len))).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = thread::spawn(move || {
        let mut n = 0;
        for (seed, v) in rx {
            assert_eq!(v, pattern(seed, v.len()), "block {seed} corrupted");
            n += 1;
        }
        n
    });
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), 20_000);
}

#[test]
fn thread_churn_with_objects_outliving_their_threads() {
    let survivors: Arc<Mutex<Vec<Box<[u64]>>>> = Arc::new(Mutex::new(Vec::new()));
    for round in 0..40u64 {
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let survivors = survivors.clone();
                thread::spawn(move || {
                    let mut local = Vec::new();
                    for i in 0..500u64 {
                        let len = ((round + t + i) % 300 + 1) as usize;
                        local.push(vec![round ^ i; len].into_boxed_slice());
                    }
                    let mut s = survivors.lock().unwrap();
                    s.extend(local.drain(..50));
                    // the rest is dropped here, on this thread
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        // Objects from earlier rounds are freed by this thread.
        let mut s = survivors.lock().unwrap();
        if s.len() > 1000 {
            for b in s.drain(..500) {
                let v = b[0];
                assert!(b.iter().all(|&x| x == v));
            }
        }
    }
}

#[test]
fn large_and_over_aligned_blocks() {
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    #[repr(align(65536))]
    struct Big([u8; 100]);
    let pages: Vec<Box<Page>> = (0..50).map(|i| Box::new(Page([i as u8; 4096]))).collect();
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(&**p as *const Page as usize % 4096, 0);
        assert!(p.0.iter().all(|&b| b == i as u8));
    }
    let bigs: Vec<Box<Big>> = (0..10).map(|i| Box::new(Big([i; 100]))).collect();
    for (i, b) in bigs.iter().enumerate() {
        assert_eq!(&**b as *const Big as usize % 65536, 0);
        assert!(b.0.iter().all(|&x| x == i as u8));
    }
    let hs: Vec<_> = (0..3usize)
        .map(|t| {
            thread::spawn(move || {
                for mb in [1usize, 3, 8, 17] {
                    let mut v = vec![t as u8; mb << 20];
                    v[(mb << 20) - 1] = 0xee;
                    let w = v.clone();
                    assert_eq!(v, w);
                    v.truncate(10);
                    v.shrink_to_fit();
                    assert_eq!(v, vec![t as u8; 10]);
                }
                let layout = std::alloc::Layout::from_size_align(3 << 20, 2 << 20).unwrap();
                // SAFETY: non-zero layout; freed with the same layout.
                unsafe {
                    let p = std::alloc::alloc_zeroed(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % (2 << 20), 0);
                    assert!(std::slice::from_raw_parts(p, 3 << 20)
                        .iter()
                        .all(|&b| b == 0));
                    std::alloc::dealloc(p, layout);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn realloc_growth_keeps_contents() {
    let mut v: Vec<u32> = Vec::new();
    for i in 0..2_000_000u32 {
        v.push(i);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| i as u32 == x));
    let mut s = String::new();
    for i in 0..100_000 {
        s.push_str(&i.to_string());
    }
    assert!(s.starts_with("0123456789101112"));
}
