//! Fork safety of UMA alone: `pthread_atfork` handlers around
//! `uma::fork::{prepare, parent, child}`; forks while threads allocate and
//! free on zones of the default instance (one with a limit, so threads
//! sleep on it); every child allocates, frees, creates and destroys a zone,
//! drains every cache (orphans of vanished threads included) and exits 0
//! in time, and the parent's threads keep going. A hang fails the test:
//! the parent polls each child with `waitpid(WNOHANG)` against a deadline
//! and kills it when the deadline passes.
#![cfg(not(loom))]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use uma::{Flags, Reclaim, Zone, ZoneArgs};

const CHILD_DEADLINE: Duration = Duration::from_secs(30);
const PARENT_DEADLINE: Duration = Duration::from_secs(30);

extern "C" fn prepare() {
    // SAFETY: the forking thread, in its prepare handler, holds no UMA lock
    // (nothing forks from inside UMA); parent or child follows.
    unsafe { uma::fork::prepare() }
}

extern "C" fn parent() {
    // SAFETY: after `prepare` in this thread.
    unsafe { uma::fork::parent() }
}

extern "C" fn child() {
    // SAFETY: the child's only thread, whose `prepare` took the locks.
    unsafe { uma::fork::child() }
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: extern "C" handlers that never unwind.
        let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        assert_eq!(r, 0, "pthread_atfork");
    });
}

struct Zones {
    small: &'static Zone,
    big: &'static Zone,
    limited: &'static Zone,
}

fn zones() -> &'static Zones {
    static Z: std::sync::OnceLock<Zones> = std::sync::OnceLock::new();
    Z.get_or_init(|| {
        let u = uma::global();
        let limited = u
            .create_zone(&ZoneArgs::new("fork limited", 96))
            .expect("zone");
        limited.set_max(600);
        Zones {
            small: u.create_zone(&ZoneArgs::new("fork 64", 64)).expect("zone"),
            big: u
                .create_zone(&ZoneArgs::new("fork 3000", 3000))
                .expect("zone"),
            limited,
        }
    })
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fill(p: NonNull<u8>, size: usize, v: u8) {
    // SAFETY: a live item of `size` bytes.
    unsafe { p.as_ptr().write_bytes(v, size) }
}

fn intact(p: NonNull<u8>, size: usize, v: u8) -> bool {
    // SAFETY: a live item of `size` bytes.
    unsafe { *p.as_ptr() == v && *p.as_ptr().add(size - 1) == v }
}

/// What a child does; returns its exit status.
fn child_work() -> i32 {
    let z = zones();
    // Allocate and free on every zone, items checked.
    for (zone, size) in [(z.small, 64), (z.big, 3000), (z.limited, 96)] {
        let mut items = Vec::with_capacity(200);
        for i in 0..200 {
            match zone.alloc(Flags::NOWAIT) {
                Some(p) => {
                    fill(p, size, i as u8);
                    items.push((p, i as u8));
                }
                // The limited zone may be full of the parent's items.
                None if std::ptr::eq(zone, z.limited) => break,
                None => return 10,
            }
        }
        for (p, v) in items {
            if !intact(p, size, v) {
                return 11;
            }
            // SAFETY: allocated above, freed once.
            unsafe { zone.free(p) };
        }
    }
    // Every cache back to the zones, orphans included, then statistics
    // (both walk every registered cache through the drain protocol).
    uma::global().reclaim(Reclaim::DrainCpu);
    if z.small.stats().cached_pcpu != 0 {
        return 12;
    }
    // A zone made and unmade in the child (slot ids, zone list, kegs).
    let Some(tmp) = uma::global().create_zone(&ZoneArgs::new("fork child", 200)) else {
        return 13;
    };
    let Some(p) = tmp.alloc(Flags::WAITOK) else {
        return 14;
    };
    // SAFETY: allocated above.
    unsafe { tmp.free(p) };
    // SAFETY: nobody else uses `tmp`.
    if unsafe { uma::global().destroy(tmp) } != 0 {
        return 15;
    }
    // A WAITOK allocation on the limited zone: vanished threads' sleepers
    // were forgotten, and DrainCpu gave their cached items back.
    match z.limited.alloc(Flags::WAITOK) {
        // SAFETY: allocated here.
        Some(p) => unsafe { z.limited.free(p) },
        None => return 16,
    }
    0
}

fn wait_child(pid: libc::pid_t) -> Result<i32, String> {
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        let mut status = 0;
        // SAFETY: our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status));
            }
            return Err(format!("child {pid} died: wait status {status:#x}"));
        }
        if r < 0 {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(format!(
                "child {pid} hung (killed after {CHILD_DEADLINE:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn fork_and_wait() -> Result<i32, String> {
    // SAFETY: the child runs UMA code and `_exit`s; it never returns into
    // the harness (the system allocator handles its own fork safety).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = std::panic::catch_unwind(child_work).unwrap_or(99);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    wait_child(pid)
}

#[test]
fn fork_while_threads_use_zones() {
    install();
    let z = zones();
    const THREADS: usize = 4;
    const FORKS: usize = 40;
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..THREADS).map(|_| AtomicU64::new(0)).collect());
    let corrupt = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let (stop, progress, corrupt) = (stop.clone(), progress.clone(), corrupt.clone());
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng(0xfeed + t as u64 * 0x9e37_79b9);
            let mut live: Vec<(usize, NonNull<u8>, u8)> = Vec::new();
            let sizes = [64, 3000, 96];
            let zs = [z.small, z.big, z.limited];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r = rng.below(100);
                if r < 55 {
                    let k = rng.below(3);
                    // WAITOK on the limited zone only with few items held,
                    // so the sleepers can always be woken.
                    let flags = if k == 2 && live.len() < 32 {
                        Flags::WAITOK
                    } else {
                        Flags::NOWAIT
                    };
                    if let Some(p) = zs[k].alloc(flags) {
                        fill(p, sizes[k], n as u8);
                        live.push((k, p, n as u8));
                    }
                } else if r < 98 {
                    if !live.is_empty() {
                        let (k, p, v) = live.swap_remove(rng.below(live.len()));
                        if !intact(p, sizes[k], v) {
                            corrupt.fetch_add(1, Ordering::Relaxed);
                        }
                        // SAFETY: allocated by this thread from zs[k].
                        unsafe { zs[k].free(p) };
                    }
                } else if n % 32 == 0 {
                    uma::global().reclaim(if t == 0 {
                        Reclaim::DrainCpu
                    } else {
                        Reclaim::Drain
                    });
                }
                if live.len() > 150 {
                    for (k, p, _) in live.drain(..) {
                        // SAFETY: as above.
                        unsafe { zs[k].free(p) };
                    }
                }
                progress[t].fetch_add(1, Ordering::Relaxed);
            }
            for (k, p, _) in live {
                // SAFETY: as above.
                unsafe { zs[k].free(p) };
            }
        }));
    }
    let mut failures = Vec::new();
    for f in 0..FORKS {
        std::thread::sleep(Duration::from_millis(5));
        match fork_and_wait() {
            Ok(0) => {}
            Ok(code) => failures.push(format!("fork {f}: child exited with {code}")),
            Err(e) => failures.push(format!("fork {f}: {e}")),
        }
        let before: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
        let deadline = Instant::now() + PARENT_DEADLINE;
        while progress
            .iter()
            .zip(&before)
            .any(|(p, b)| p.load(Ordering::Relaxed) < b + 100)
        {
            assert!(
                Instant::now() < deadline,
                "fork {f}: parent threads stopped after the fork"
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
    assert_eq!(corrupt.load(Ordering::Relaxed), 0, "corrupt items");
    for zone in [z.small, z.big, z.limited] {
        zone.check_invariants();
    }
}
