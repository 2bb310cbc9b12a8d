//! A sample's stack: the calling thread's return addresses, leaf first,
//! from the cached CFI walk ([`unwind`](super::unwind)) where it can, else
//! from `_Unwind_Backtrace` (libgcc's unwinder, which reads the loaded
//! objects' unwind tables and allocates nothing). The allocator's own
//! frames are trimmed when the profile is written.
//!
//! The rest of this file is the libgcc walk. Each frame costs the
//! unwinder about 2,000 instructions (find its FDE,
//! run its CFA program), and a sample's walk was most of what profiling
//! cost an allocation-bound program. So each thread remembers the two
//! outermost frames of its first complete walk (`_start` and
//! `__libc_start_main`, or `clone3` and `start_thread`: they never change
//! while the thread lives) and the frame just above them, by return
//! address *and* canonical frame address: a later walk that reaches that
//! very frame (same return address at the same place on the stack, so the
//! same activation, whose callers are the thread's roots) stops there and
//! appends the two it remembers.

use core::cell::Cell;

use super::table::MAX_FRAMES;
use crate::debugmode::{_Unwind_Backtrace, _Unwind_GetIP, UnwindContext};

extern "C" {
    fn _Unwind_GetCFA(ctx: *mut UnwindContext) -> usize;
}

/// Outermost frames remembered per thread.
const ROOT: usize = 2;

/// The thread's roots (`const`-initialised, no destructor).
struct Roots {
    /// Return address and CFA of the frame above the roots (0: unknown).
    ip: Cell<usize>,
    cfa: Cell<usize>,
    /// The roots' return addresses, inner first.
    tail: Cell<[usize; ROOT]>,
}

// SAFETY: `Cell`s of integers (zero: unknown); no destructor.
unsafe impl uma::ZeroInit for Roots {}

uma::zeroed_thread_local! {
    /// The calling thread's [`Roots`] (no `__tls_get_addr`, see
    /// `uma::tls_block`).
    fn roots: Roots = "bsdalloc_kmem_prof_roots_v01";
}

struct Walk<'a> {
    stack: &'a mut [usize; MAX_FRAMES],
    n: usize,
    /// CFAs of the last `ROOT + 1` frames (ring, by frame number).
    cfas: [usize; ROOT + 1],
    /// Where to stop (the frame above the roots), and whether it did.
    stop: (usize, usize),
    stopped: bool,
    /// The walk reached the thread's first frame: the unwinder found a
    /// frame whose caller is marked undefined (`_start`, `clone3`), not
    /// one without unwind tables, whose callers are unknown.
    complete: bool,
}

extern "C" fn one_frame(ctx: *mut UnwindContext, arg: *mut core::ffi::c_void) -> i32 {
    // SAFETY: `arg` is the `Walk` that `capture` passed.
    let w = unsafe { &mut *arg.cast::<Walk<'_>>() };
    // SAFETY: the unwinder's context for this frame.
    let (ip, cfa) = unsafe { (_Unwind_GetIP(ctx), _Unwind_GetCFA(ctx)) };
    if ip == 0 {
        w.complete = true;
        return 4;
    }
    w.stack[w.n] = ip;
    w.cfas[w.n % (ROOT + 1)] = cfa;
    w.n += 1;
    if (ip, cfa) == w.stop {
        w.stopped = true;
        return 4;
    }
    // _URC_NORMAL_STOP (4) ends the walk once the stack is full.
    if w.n == MAX_FRAMES {
        4
    } else {
        0
    }
}

/// The calling thread's return addresses, leaf first; returns how many.
/// The cached walk ([`unwind`](super::unwind)) where it can, else libgcc's.
#[inline(always)]
pub(crate) fn capture(stack: &mut [usize; MAX_FRAMES]) -> usize {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
    if let Some((n, _)) = super::unwind::walk(stack) {
        return n;
    }
    capture_libgcc(stack)
}

/// [`capture`] with `_Unwind_Backtrace`.
#[inline(always)] // one frame less to unwind (see `sample::sampled_alloc`)
pub(crate) fn capture_libgcc(stack: &mut [usize; MAX_FRAMES]) -> usize {
    let (ip, cfa, tail) = roots(|r| (r.ip.get(), r.cfa.get(), r.tail.get()));
    let mut w = Walk {
        stack,
        n: 0,
        cfas: [0; ROOT + 1],
        stop: if ip == 0 { (0, 0) } else { (ip, cfa) },
        stopped: false,
        complete: false,
    };
    // SAFETY: `one_frame` only writes `w`, which outlives the walk; the
    // unwinder reads the stack and the unwind tables and allocates nothing.
    unsafe { _Unwind_Backtrace(one_frame, (&mut w as *mut Walk<'_>).cast()) };
    let n = w.n;
    if w.stopped {
        let more = ROOT.min(MAX_FRAMES - n);
        w.stack[n..n + more].copy_from_slice(&tail[..more]);
        return n + more;
    }
    if w.complete && ip == 0 && n > ROOT + 1 && n < MAX_FRAMES {
        // A complete walk: remember its roots.
        let above = n - ROOT - 1;
        let mut t = [0; ROOT];
        t.copy_from_slice(&w.stack[above + 1..n]);
        roots(|r| {
            r.ip.set(w.stack[above]);
            r.cfa.set(w.cfas[above % (ROOT + 1)]);
            r.tail.set(t);
        });
    }
    n
}
