//! Fork safety with kmem as the global allocator: a child forked while
//! other threads allocate and free must be able to allocate and free (and
//! exit), and the parent's threads must keep going. A hang fails the test:
//! the parent polls each child with `waitpid(WNOHANG)` against a deadline
//! and kills it when the deadline passes.
//!
//! The children only run the allocator (through std collections) and
//! `_exit`: no stdio, no locks of std that another thread could have held.
#![cfg(not(loom))]

use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/util.rs"]
mod util;
use util::Rng;

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

/// The tests fork one at a time (the single-threaded one wants no other
/// thread of its own allocating).
static SERIAL: Mutex<()> = Mutex::new(());

/// How long a child may take before it counts as hung.
const CHILD_DEADLINE: Duration = Duration::from_secs(30);
/// How long the parent's threads may take to show progress after a fork.
const PARENT_DEADLINE: Duration = Duration::from_secs(30);

const MIB: usize = 1 << 20;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A block filled with a pattern derived from its seed, checked on drop.
struct Block {
    data: Box<[u8]>,
    seed: u8,
}

impl Block {
    fn new(len: usize, seed: u8) -> Block {
        let data: Box<[u8]> = (0..len)
            .map(|i| seed.wrapping_add(i as u8))
            .collect::<Vec<u8>>()
            .into_boxed_slice();
        Block { data, seed }
    }
    fn intact(&self) -> bool {
        // Checking a few bytes keeps big blocks cheap.
        let n = self.data.len();
        let step = (n / 64).max(1);
        (0..n)
            .step_by(step)
            .chain(n.checked_sub(1))
            .all(|i| self.data[i] == self.seed.wrapping_add(i as u8))
    }
}

/// What a child does: allocations and frees of every kind, checked.
/// Returns the exit status (0: all good; otherwise which check failed).
fn child_work() -> i32 {
    // Vec growth (realloc through every small class into large blocks).
    let mut v: Vec<u64> = Vec::new();
    for i in 0..20_000u64 {
        v.push(i);
    }
    if v.iter().sum::<u64>() != 20_000 * 19_999 / 2 {
        return 10;
    }
    drop(v);
    // Strings.
    let mut strings = Vec::new();
    for i in 0..2_000 {
        strings.push(format!("string number {i} of the child"));
    }
    for (i, s) in strings.iter().enumerate() {
        if *s != format!("string number {i} of the child") {
            return 11;
        }
    }
    drop(strings);
    // Small blocks of every size class, freed out of order.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut blocks: Vec<Block> = (0..3_000)
        .map(|i| Block::new(1 + rng.below(4096), i as u8))
        .collect();
    for _ in 0..blocks.len() {
        let b = blocks.swap_remove(rng.below(blocks.len()));
        if !b.intact() {
            return 12;
        }
    }
    // Large blocks (kmem_malloc: straight from the kernel arena).
    // (100,000 and 200,000 bytes: the large classes, their own arena.)
    for size in [64 << 10, 100_000, 200_000, 300 << 10, MIB, 5 * MIB] {
        let b = Block::new(size, size as u8);
        if !b.intact() {
            return 13;
        }
    }
    // 2 MiB-aligned blocks (vmem_xalloc constraints), zeroed and not.
    for (size, zeroed) in [(MIB, false), (3 * MIB, true), (2 * MIB, false)] {
        let l = Layout::from_size_align(size, 2 * MIB).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe {
            if zeroed {
                alloc_zeroed(l)
            } else {
                alloc(l)
            }
        };
        if p.is_null() || p as usize % (2 * MIB) != 0 {
            return 14;
        }
        // SAFETY: `size` bytes of ours.
        unsafe {
            if zeroed && (*p != 0 || *p.add(size - 1) != 0) {
                return 15;
            }
            p.write_bytes(0xa5, size);
            dealloc(p, l);
        }
    }
    // Take back every cache, the orphaned ones of threads that vanished
    // with the fork included (their owners may have been inside an
    // operation: the drain must not wait on them), and allocate again.
    kmem::reclaim(uma::Reclaim::DrainCpu);
    let again: Vec<Block> = (0..500).map(|i| Block::new(8 + i, i as u8)).collect();
    if !again.iter().all(Block::intact) {
        return 16;
    }
    0
}

/// Waits for `pid`; kills it at the deadline. Ok(exit status) or Err(why).
fn wait_child(pid: libc::pid_t) -> Result<i32, String> {
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        let mut status = 0;
        // SAFETY: plain syscall on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status));
            }
            return Err(format!("child {pid} died: wait status {status:#x}"));
        }
        if r < 0 {
            return Err(format!(
                "waitpid({pid}): {}",
                std::io::Error::last_os_error()
            ));
        }
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(format!(
                "child {pid} hung: no exit within {CHILD_DEADLINE:?} (killed)"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Forks; the child runs `f` and `_exit`s with its result (99 on a panic).
/// The parent drops `f` (its copy of whatever `f` owns) and waits.
fn fork_and_wait(f: impl FnOnce() -> i32) -> Result<i32, String> {
    // SAFETY: the child only runs `f` (allocations through kmem) and exits
    // with _exit, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = catch_unwind(AssertUnwindSafe(f)).unwrap_or(99);
        // SAFETY: ends the child at once (no atexit, no stdio flush).
        unsafe { libc::_exit(code) };
    }
    drop(f);
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    wait_child(pid)
}

#[test]
fn fork_from_single_threaded_parent_child_allocates() {
    let _s = serial();
    // Warm up: caches registered, blocks live in the parent.
    let live: Vec<Block> = (0..1_000).map(|i| Block::new(1 + i * 7, i as u8)).collect();
    let big = Block::new(3 * MIB, 7);
    for round in 0..3 {
        // Blocks allocated before the fork, freed by the child (and by the
        // parent, its own copies, when it drops the closure).
        let pre: Vec<Block> = (0..300).map(|i| Block::new(1 + i * 13, i as u8)).collect();
        let pre_big = Block::new(2 * MIB + 5, 9);
        let r = fork_and_wait(move || {
            if !pre.iter().all(Block::intact) || !pre_big.intact() {
                return 20;
            }
            drop(pre);
            drop(pre_big);
            child_work()
        });
        assert_eq!(r, Ok(0), "round {round}");
    }
    // The parent still works, its blocks intact.
    assert!(live.iter().all(Block::intact));
    assert!(big.intact());
    let fresh = Block::new(5 * MIB, 3);
    assert!(fresh.intact());
}

/// Forks 50 times while 4 threads allocate and free (small, large, freed
/// by another thread, reclaims): every child allocates and exits 0 in
/// time; the parent's threads keep going after every fork.
#[test]
fn fork_while_threads_allocate() {
    let _s = serial();
    const THREADS: usize = 4;
    const FORKS: usize = 50;
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..THREADS).map(|_| AtomicU64::new(0)).collect());
    let corrupt = Arc::new(AtomicU64::new(0));
    // Thread i sends blocks to thread (i + 1) % THREADS, which frees them.
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Block>()).unzip();
    let mut handles = Vec::new();
    for (i, rx) in rxs.into_iter().enumerate() {
        let tx = txs[(i + 1) % THREADS].clone();
        let (stop, progress, corrupt) = (stop.clone(), progress.clone(), corrupt.clone());
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng(0x1234_5678 + i as u64 * 0x9e37_79b9);
            let mut live: Vec<Block> = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match rng.below(100) {
                    0..=59 => live.push(Block::new(1 + rng.below(2048), n as u8)),
                    60..=61 => live.push(Block::new(8 << 10 << rng.below(7), n as u8)),
                    // The large classes (64-256 KiB): their cache zones
                    // and their arena, whose lock the fork takes too.
                    62 => live.push(Block::new((64 << 10) + 1 + rng.below(192 << 10), n as u8)),
                    63..=79 => {
                        if !live.is_empty() {
                            let b = live.swap_remove(rng.below(live.len()));
                            if !b.intact() {
                                corrupt.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    80..=89 => {
                        if !live.is_empty() {
                            let b = live.swap_remove(rng.below(live.len()));
                            let _ = tx.send(b);
                        }
                    }
                    90..=98 => {
                        while let Ok(b) = rx.try_recv() {
                            if !b.intact() {
                                corrupt.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    _ => {
                        if n % 64 == 0 {
                            let how = if i == 0 {
                                uma::Reclaim::DrainCpu
                            } else {
                                uma::Reclaim::Drain
                            };
                            kmem::reclaim(how);
                        }
                    }
                }
                if live.len() > 512 {
                    for b in live.drain(..256) {
                        if !b.intact() {
                            corrupt.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                progress[i].fetch_add(1, Ordering::Relaxed);
            }
            while let Ok(b) = rx.try_recv() {
                drop(b);
            }
        }));
    }
    drop(txs);
    let mut failures = Vec::new();
    for f in 0..FORKS {
        // Let the threads get going between forks.
        std::thread::sleep(Duration::from_millis(5));
        match fork_and_wait(child_work) {
            Ok(0) => {}
            Ok(code) => failures.push(format!("fork {f}: child exited with {code}")),
            Err(e) => failures.push(format!("fork {f}: {e}")),
        }
        // Every parent thread makes progress after the fork.
        let before: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
        let deadline = Instant::now() + PARENT_DEADLINE;
        while progress
            .iter()
            .zip(&before)
            .any(|(p, b)| p.load(Ordering::Relaxed) < b + 100)
        {
            assert!(
                Instant::now() < deadline,
                "fork {f}: parent threads stopped after the fork (progress {:?} from {before:?})",
                progress
                    .iter()
                    .map(|p| p.load(Ordering::Relaxed))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        if failures.len() > 3 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(corrupt.load(Ordering::Relaxed), 0, "corrupt blocks");
}

/// Forks 200 times while a thread keeps the large classes' arena busy (it
/// drains the class caches, which gives their ranges back to that arena,
/// and takes new ones, which imports them from it): each child drains the
/// caches too and allocates a block of each class, which takes that
/// arena's lock. Without the arena's lock in the fork handlers, a child
/// forked while the thread held it hangs here.
#[test]
fn fork_while_the_large_classes_arena_is_busy() {
    let _s = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let blocks: Vec<Block> = (0..128)
                    .map(|i| Block::new((80 << 10) + (i % 8) * (24 << 10), n as u8))
                    .collect();
                drop(blocks);
                kmem::reclaim(uma::Reclaim::Drain);
                n += 1;
            }
        })
    };
    for round in 0..200 {
        let r = fork_and_wait(|| {
            kmem::reclaim(uma::Reclaim::Drain);
            let blocks: Vec<Block> = (0..8)
                .map(|i| Block::new((80 << 10) + i * (24 << 10), i as u8))
                .collect();
            if blocks.iter().all(Block::intact) {
                0
            } else {
                30
            }
        });
        assert_eq!(r, Ok(0), "round {round}");
    }
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
}
