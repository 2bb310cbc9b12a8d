//! The pieces every workload shares: a checked heap block, a small PRNG,
//! and the corruption report.
//!
//! A [`Block`] is one allocation made through the global allocator with
//! `std::alloc::alloc` and a `Layout` of the requested size (alignment 8,
//! the natural alignment of a `u64`, so every allocator takes its ordinary
//! small-object path). On creation it writes a stamp, a 64-bit value unique
//! to the block, at offset 0, at every 4 KiB boundary and at the last word;
//! dropping it verifies the stamp and then frees the block. Stamping the
//! first and the last word catches the two classic allocator bugs: handing
//! out the same block twice (the second owner rewrites the first word) and
//! handing out a block smaller than requested (the tail word lands in the
//! neighbour's first word). The per-page words also make large blocks
//! touch every page, so peak RSS measures memory that was really used.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::io::Write;
use std::ptr::NonNull;

/// Alignment of every [`Block`]: a `u64`'s.
pub const BLOCK_ALIGN: usize = 8;

const PAGE: usize = 4096;

/// One live allocation with a stamp that is verified before it is freed.
#[derive(Debug)]
pub struct Block {
    ptr: NonNull<u8>,
    size: usize,
    stamp: u64,
}

// SAFETY: a Block owns its allocation exclusively (like a Box<[u8]>); the
// global allocator may free memory on any thread.
unsafe impl Send for Block {}

impl Block {
    /// Allocates `size` bytes (at least 1) through the global allocator and
    /// stamps them with `stamp`.
    pub fn new(size: usize, stamp: u64) -> Block {
        let layout = Layout::from_size_align(size.max(1), BLOCK_ALIGN)
            .unwrap_or_else(|_| panic!("block of {size} B: size overflows a Layout"));
        // SAFETY: the layout's size is non-zero.
        let raw = unsafe { alloc(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout));
        let block = Block {
            ptr,
            size: layout.size(),
            stamp,
        };
        if block.size < 8 {
            let bytes = stamp.to_le_bytes();
            // SAFETY: the block has `size` bytes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw, block.size) };
        } else {
            block.for_each_word(|p, v| {
                // SAFETY: `for_each_word` yields only in-bounds words of this block.
                unsafe { p.write_unaligned(v) }
            });
        }
        block
    }

    /// The block's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Verifies the stamp; reports corruption and exits the process if any
    /// stamped word changed.
    pub fn check(&self) {
        if self.size < 8 {
            let bytes = self.stamp.to_le_bytes();
            // SAFETY: the block has `size` initialised bytes (written in `new`).
            let got = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.size) };
            if got != &bytes[..self.size] {
                corruption(format_args!(
                    "block {:p} of {} B holds {got:02x?}, expected {:02x?}",
                    self.ptr,
                    self.size,
                    &bytes[..self.size]
                ));
            }
            return;
        }
        self.for_each_word(|p, v| {
            // SAFETY: as in `new`.
            let got = unsafe { p.read_unaligned() };
            if got != v {
                let off = p as usize - self.ptr.as_ptr() as usize;
                corruption(format_args!(
                    "block {:p} of {} B: word at offset {off} is {got:#018x}, expected {v:#018x}",
                    self.ptr, self.size
                ));
            }
        });
    }

    /// Calls `f` with the address and the expected value of every stamped
    /// word of a block of 8 bytes or more: offset 0, each 4 KiB boundary,
    /// and the last 8 bytes, none of them overlapping.
    fn for_each_word(&self, mut f: impl FnMut(*mut u64, u64)) {
        let base = self.ptr.as_ptr();
        let value = |off: usize| self.stamp ^ (off as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        f(base.cast(), value(0));
        let tail = self.size - 8;
        let mut off = PAGE;
        while off + 8 <= tail {
            // SAFETY: off + 8 <= size.
            f(unsafe { base.add(off) }.cast(), value(off));
            off += PAGE;
        }
        if tail >= 8 {
            // SAFETY: tail + 8 == size.
            f(unsafe { base.add(tail) }.cast(), value(tail));
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.check();
        let layout = Layout::from_size_align(self.size, BLOCK_ALIGN).expect("checked in new");
        // SAFETY: allocated in `new` with this layout and not freed since.
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// Reports heap corruption and exits at once with status 2, without
/// unwinding or running destructors on a heap that can no longer be
/// trusted.
#[cold]
pub fn corruption(what: std::fmt::Arguments<'_>) -> ! {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "bsdalloc-wl: HEAP CORRUPTION: {what} (the allocator handed out overlapping \
         or too-small blocks, or reused memory that was still live)"
    );
    let _ = err.flush();
    // SAFETY: _exit is always safe to call; it ends the process.
    unsafe { libc::_exit(2) }
}

/// xorshift64* seeded through splitmix64: fast, deterministic, and free
/// of allocation, so the workloads' only heap traffic is their own.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for stream `stream` of run seed `seed`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(z | 1)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `1 / n`.
    #[inline]
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}
