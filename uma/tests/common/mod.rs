#![allow(dead_code)]
//! Helpers shared by the integration tests.

use std::ptr::NonNull;
use uma::{global, Flags, TestSource, Uma, Zone, ZoneArgs};

pub fn leak_source() -> &'static TestSource {
    Box::leak(Box::new(TestSource::new()))
}

pub fn uma() -> &'static Uma {
    global()
}

pub fn zone(args: ZoneArgs) -> &'static Zone {
    uma().create_zone(&args).expect("zone")
}

pub fn alloc(z: &Zone, flags: Flags) -> NonNull<u8> {
    z.alloc(flags).expect("alloc")
}

pub fn free(z: &Zone, p: NonNull<u8>) {
    // SAFETY: p came from z.alloc and is freed once.
    unsafe { z.free(p) }
}

pub fn destroy(z: &'static Zone) -> usize {
    // SAFETY: nobody uses z afterwards.
    unsafe { uma().destroy(z) }
}

pub fn write(p: NonNull<u8>, size: usize, v: u8) {
    // SAFETY: p is a live item of at least `size` bytes.
    unsafe { std::ptr::write_bytes(p.as_ptr(), v, size) }
}

pub fn check(p: NonNull<u8>, size: usize, v: u8) {
    // SAFETY: p is a live item of at least `size` bytes.
    let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
    assert!(
        s.iter().all(|&b| b == v),
        "item {:p} content changed (want {v:#x})",
        p
    );
}

/// Aborts the whole test process unless dropped within `secs` seconds: a
/// hang is reported as a failure instead of stalling the run.
pub struct Watchdog {
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn watchdog(what: &'static str, secs: u64) -> Watchdog {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            rx.recv_timeout(std::time::Duration::from_secs(secs))
        {
            eprintln!("watchdog: {what} did not finish in {secs} s; aborting");
            std::process::abort();
        }
    });
    Watchdog {
        done: Some(tx),
        thread: Some(thread),
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Spins (yielding) until `cond` holds; panics after 20 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

/// CPUs as UMA counts them (online CPUs) or as the scheduler lets us use
/// them, whichever is more.
pub fn cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let avail = std::thread::available_parallelism().map_or(1, |n| n.get());
    online.max(avail)
}

/// Threads for "more threads than CPUs" tests: 4x the CPUs, at least 16.
pub fn many_threads() -> usize {
    (4 * cpus()).max(16)
}
