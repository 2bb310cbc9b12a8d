//! Debug mode (libumem's `UMEM_DEBUG`): redzones, freed-memory patterns and
//! guard pages for the blocks of the untyped front doors ([`Kmem`], [`raw`]
//! and so the C ABI). Off by default; on from the first allocation when the
//! environment says `BSDALLOC_DEBUG=guards,contents` (or `all`), or when
//! [`set_debug`] was called before it.
//!
//! Debug mode costs the fast path nothing: while it is on, the fast path's
//! tables are never published (see `fast`), so every operation takes the
//! slow road, which comes here.
//!
//! ## Block layout
//!
//! ```text
//! inner block (a size class, or pages)          user pointer
//! |<------------------- front -------------------->|<--- size --->|<- tail ->|
//! | key 8 | [audit: alloc stack | free stack] | pattern ... | front,state 8 | size 8 | check 8 | user bytes | 0xfe ... |
//! ```
//!
//! - The first 8 bytes are the inner block's double-free key word (0 while
//!   it is allocated). The 24 bytes just below the user pointer hold the
//!   front offset and state, the size asked for, and a check word (a
//!   constant XOR the other two words and the user address). `front` is at
//!   least 32 and at least the alignment.
//! - `guards`: the bytes between the front and the header and from the
//!   end of the user bytes to the end of the inner block (at least 32) are
//!   filled with `0xfe`, checked on `free`, `realloc` and
//!   `malloc_usable_size`: an underflow by 1 to 32 bytes breaks the header
//!   or the key word, an overflow by 1 to 32 bytes the tail
//!   ([`ReportKind::Underflow`], [`ReportKind::Overflow`]). Blocks whose
//!   inner block would be larger than the largest size class are pages
//!   between two inaccessible guard pages, the user bytes ending as close
//!   to the upper guard page as 16-byte alignment allows: an overrun of a
//!   large block faults at its first byte past the end (a 1 MiB overrun
//!   never reaches a neighbour).
//! - `contents`: new blocks are filled with `0xbaddcafe` (uninitialized
//!   reads show up); freed blocks with `0xdeadc0de` (FreeBSD's trash),
//!   checked when the inner block is handed out again
//!   ([`ReportKind::ModifiedAfterFree`]: a write after free). Freed large
//!   blocks are unbacked and made inaccessible, and stay so in a
//!   quarantine of the last 64 until they are really freed: a use after
//!   free faults.
//! - `audit`: the front also holds the return addresses of the last
//!   [`AUDIT_FRAMES`] frames of the allocating call and, once freed, of
//!   the freeing one (`_Unwind_Backtrace`, which allocates nothing), and
//!   every report carries and prints them, symbolized with `dladdr`
//!   ([`Report::alloc_stack`](crate::Report::alloc_stack),
//!   [`Report::free_stack`](crate::Report::free_stack)). The first frames
//!   are the allocator's own.
//! - A second free finds the header in state freed
//!   ([`ReportKind::DoubleFree`]), whatever happened in between, as long as
//!   the inner block was not handed out again.
//!
//! Every report names the user pointer and the zone of the inner block;
//! the statistics count each kind ([`debug_stats`]). (Built with the
//! `invariants` feature, UMA trash-fills every freed item, headers
//! included: its own checks then report writes after free and double
//! frees, and this mode's freed-block checks see only trash.)
//!
//! [`Kmem`]: crate::Kmem
//! [`raw`]: crate::raw
//! [`ReportKind::Underflow`]: crate::ReportKind::Underflow
//! [`ReportKind::Overflow`]: crate::ReportKind::Overflow
//! [`ReportKind::ModifiedAfterFree`]: crate::ReportKind::ModifiedAfterFree
//! [`ReportKind::DoubleFree`]: crate::ReportKind::DoubleFree

use crate::sync::plain::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use core::ptr::{self, NonNull};

use crate::kernel::kernel;
use crate::malloc::{free_owned, owner_of, Owner};
use crate::os::{round_page, PAGE_SIZE};
use crate::report::{report, Report, ReportKind};
use crate::{pagemeta, Flags, MAX_CLASS_SIZE};

/// Debug checks to turn on (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugFlags(u8);

impl DebugFlags {
    /// No checks (the default).
    pub const NONE: DebugFlags = DebugFlags(0);
    /// Redzones around every block, guard pages around large ones.
    pub const GUARDS: DebugFlags = DebugFlags(1);
    /// Patterns in new and freed blocks, checked on reuse; freed large
    /// blocks inaccessible for a while.
    pub const CONTENTS: DebugFlags = DebugFlags(2);
    /// The allocating and freeing call sites (a few return addresses)
    /// recorded in each block and printed in every report.
    pub const AUDIT: DebugFlags = DebugFlags(4);
    /// Every check.
    pub const ALL: DebugFlags = DebugFlags(7);

    /// Whether every check of `other` is on in `self`.
    pub const fn contains(self, other: DebugFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of checks.
    pub const fn with(self, other: DebugFlags) -> DebugFlags {
        DebugFlags(self.0 | other.0)
    }

    /// Parses `BSDALLOC_DEBUG`'s value: a comma-separated list of
    /// `guards`, `contents`, `audit`, `all`, `none` (empty items ignored).
    /// `None` for an unknown word.
    pub fn parse(s: &[u8]) -> Option<DebugFlags> {
        let mut f = DebugFlags::NONE;
        for w in s.split(|&b| b == b',') {
            f = f.with(match w {
                b"guards" => DebugFlags::GUARDS,
                b"contents" => DebugFlags::CONTENTS,
                b"audit" => DebugFlags::AUDIT,
                b"all" => DebugFlags::ALL,
                b"none" | b"" => DebugFlags::NONE,
                _ => return None,
            });
        }
        Some(f)
    }
}

/// Why [`set_debug`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugError {
    /// The untyped front doors have allocated already in another mode:
    /// their blocks would not have the layout the checks expect.
    AlreadyStarted,
}

impl core::fmt::Display for DebugError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("kmem: debug mode must be chosen before the first allocation")
    }
}

/// Mode bits, `DECIDED` once the first allocation fixed them.
static MODE: AtomicU8 = AtomicU8::new(0);
const DECIDED: u8 = 0x80;

/// Turns debug mode on (or off) for the untyped front doors. Only before
/// their first allocation; a Rust program's runtime allocates before
/// `main`, so there the environment (`BSDALLOC_DEBUG`, read at the first
/// allocation) is the way, or a call from a constructor that runs first.
/// Setting the mode already in force is not an error.
pub fn set_debug(flags: DebugFlags) -> Result<(), DebugError> {
    let want = flags.0 & DebugFlags::ALL.0;
    match MODE.compare_exchange(
        MODE.load(Ordering::Relaxed) & !DECIDED,
        want,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => Ok(()),
        Err(cur) if cur & !DECIDED == want => Ok(()),
        Err(_) => Err(DebugError::AlreadyStarted),
    }
}

/// The debug checks in force (or to be, before the first allocation).
pub fn debug_mode() -> DebugFlags {
    DebugFlags(MODE.load(Ordering::Relaxed) & DebugFlags::ALL.0)
}

/// Fixes the mode at the first allocation: `BSDALLOC_DEBUG` from the
/// environment unless [`set_debug`] chose already. Returns the mode.
#[inline]
pub(crate) fn decide() -> DebugFlags {
    let m = MODE.load(Ordering::Acquire);
    if m & DECIDED != 0 {
        return DebugFlags(m & DebugFlags::ALL.0);
    }
    decide_slow()
}

#[cold]
fn decide_slow() -> DebugFlags {
    let mut m = MODE.load(Ordering::Acquire);
    if m & DECIDED == 0 && m == 0 {
        // SAFETY: a NUL-terminated name; getenv does not allocate and
        // returns null or a NUL-terminated string.
        let v = unsafe { libc::getenv(c"BSDALLOC_DEBUG".as_ptr()) };
        if !v.is_null() {
            // SAFETY: as above.
            let s = unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes();
            match DebugFlags::parse(s) {
                Some(f) => m = f.0,
                None => crate::report::warn(format_args!(
                    "kmem: BSDALLOC_DEBUG={}: unknown; use guards, contents, audit or all",
                    core::str::from_utf8(s).unwrap_or("?")
                )),
            }
        }
    }
    MODE.fetch_or(m | DECIDED, Ordering::AcqRel);
    DebugFlags(MODE.load(Ordering::Acquire) & DebugFlags::ALL.0)
}

/// Whether debug mode is on (after the first allocation decided it).
#[inline(always)]
pub(crate) fn on() -> bool {
    MODE.load(Ordering::Relaxed) & DebugFlags::ALL.0 != 0
}

// ---------------------------------------------------------------- statistics

/// What debug mode found so far (every report counts, hook or not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugStats {
    /// Writes past the end of a block (tail redzone).
    pub overflows: u64,
    /// Writes before the start of a block (header or key).
    pub underflows: u64,
    /// Freed blocks modified before their reuse.
    pub modified_after_free: u64,
    /// Second frees seen by the header.
    pub double_frees: u64,
    /// Large blocks in the quarantine now.
    pub quarantined: u64,
}

static OVERFLOWS: AtomicU64 = AtomicU64::new(0);
static UNDERFLOWS: AtomicU64 = AtomicU64::new(0);
static MODIFIED: AtomicU64 = AtomicU64::new(0);
static DOUBLE: AtomicU64 = AtomicU64::new(0);

/// Debug mode's counts.
pub fn debug_stats() -> DebugStats {
    DebugStats {
        overflows: OVERFLOWS.load(Ordering::Relaxed),
        underflows: UNDERFLOWS.load(Ordering::Relaxed),
        modified_after_free: MODIFIED.load(Ordering::Relaxed),
        double_frees: DOUBLE.load(Ordering::Relaxed),
        quarantined: QUARANTINE
            .iter()
            .filter(|q| q.load(Ordering::Relaxed) != 0)
            .count() as u64,
    }
}

fn found(kind: ReportKind, op: &'static str, user: usize, zone: &'static str, size: usize) {
    found_with(kind, op, user, zone, size, None);
}

/// [`found`], with the block's header for its stacks.
fn found_with(
    kind: ReportKind,
    op: &'static str,
    user: usize,
    zone: &'static str,
    size: usize,
    h: Option<&Header>,
) {
    let (alloc_stack, free_stack) = h.map_or(([0; AUDIT_FRAMES], [0; AUDIT_FRAMES]), |h| {
        stacks_of(user, h)
    });
    found_stacks(kind, op, user, zone, size, alloc_stack, free_stack);
}

/// [`found`], with the stacks given.
fn found_stacks(
    kind: ReportKind,
    op: &'static str,
    user: usize,
    zone: &'static str,
    size: usize,
    alloc_stack: Stack,
    free_stack: Stack,
) {
    let counter = match kind {
        ReportKind::Overflow => &OVERFLOWS,
        ReportKind::Underflow => &UNDERFLOWS,
        ReportKind::ModifiedAfterFree => &MODIFIED,
        _ => &DOUBLE,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    report(Report {
        size,
        alloc_stack,
        free_stack,
        ..Report::new(kind, op, user, zone)
    });
}

// ---------------------------------------------------------------- layout

const FRONT_MIN: usize = 32;
/// Return addresses recorded per call site with `audit`.
pub const AUDIT_FRAMES: usize = 6;
/// The front with `audit`: the key word, two stacks, the header (128, a
/// multiple of 16: an underflow past the header reaches the free stack,
/// all zero while the block is live, which is checked).
const FRONT_AUDIT: usize = 8 + 2 * AUDIT_FRAMES * 8 + HEADER;
const TAIL_MIN: usize = 32;
const HEADER: usize = 24;
const REDZONE: u8 = 0xfe;
const UNINIT: u32 = 0xbadd_cafe;
const FREED: u32 = 0xdead_c0de;
const STATE_LIVE: u64 = 1 << 40;
const STATE_FREED: u64 = 2 << 40;
const STATE_GUARDED: u64 = 1 << 48;
const MAGIC: u64 = 0x6b6d_656d_6462_6721;

/// The header below a user pointer.
#[derive(Clone, Copy)]
struct Header {
    front: usize,
    state: u64,
    guarded: bool,
    size: usize,
}

fn check_word(user: usize, w0: u64, size: u64) -> u64 {
    MAGIC ^ (user as u64).rotate_left(17) ^ w0 ^ size.rotate_left(32)
}

/// # Safety
///
/// `user - HEADER .. user` is mapped memory of a block being set up.
unsafe fn write_header(user: usize, h: Header) {
    let w0 = h.front as u64 | h.state | if h.guarded { STATE_GUARDED } else { 0 };
    let p = (user - HEADER) as *mut u64;
    // SAFETY: the caller's promise; 8-aligned (user is 16-aligned).
    unsafe {
        p.write(w0);
        p.add(1).write(h.size as u64);
        p.add(2).write(check_word(user, w0, h.size as u64));
    }
}

/// The header below `user`, if its check word holds.
///
/// # Safety
///
/// `user - HEADER .. user` is mapped.
unsafe fn read_header(user: usize) -> Option<Header> {
    let p = (user - HEADER) as *const u64;
    // SAFETY: the caller's promise.
    let (w0, size, check) = unsafe { (p.read(), p.add(1).read(), p.add(2).read()) };
    if check != check_word(user, w0, size) {
        return None;
    }
    Some(Header {
        front: (w0 & 0xff_ffff_ffff) as usize,
        state: w0 & (0xff << 40),
        guarded: w0 & STATE_GUARDED != 0,
        size: size as usize,
    })
}

fn fill32(from: usize, to: usize, pat: u32) {
    let bytes = pat.to_le_bytes();
    for a in from..to {
        // SAFETY: callers pass ranges of blocks they own.
        unsafe { (a as *mut u8).write(bytes[a % 4]) };
    }
}

fn first_not32(from: usize, to: usize, pat: u32) -> Option<usize> {
    let bytes = pat.to_le_bytes();
    // SAFETY: callers pass ranges of blocks they own.
    (from..to).find(|&a| unsafe { (a as *const u8).read() } != bytes[a % 4])
}

fn first_not(from: usize, to: usize, b: u8) -> Option<usize> {
    // SAFETY: callers pass ranges of blocks they own.
    (from..to).find(|&a| unsafe { (a as *const u8).read() } != b)
}

/// Where the user bytes of a block of `size` bytes aligned to `align` go
/// in an inner block at `inner` of `usable` bytes: (front, guarded).
fn place(inner: usize, usable: usize, size: usize, align: usize, guarded: bool) -> usize {
    if guarded {
        // End the user bytes next to the upper guard page, 16-aligned (and
        // aligned as asked).
        let end = inner + usable - PAGE_SIZE;
        let a = align.max(16);
        ((end - size) & !(a - 1)) - inner
    } else {
        let min = if mode_has(DebugFlags::AUDIT) {
            FRONT_AUDIT
        } else {
            FRONT_MIN
        };
        min.max(align)
    }
}

fn mode_has(f: DebugFlags) -> bool {
    debug_mode().contains(f)
}

// ---------------------------------------------------------------- audit

/// Return addresses of a call site (0 past the end).
pub type Stack = [usize; AUDIT_FRAMES];

#[repr(C)]
pub(crate) struct UnwindContext {
    _private: [u8; 0],
}

extern "C" {
    pub(crate) fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut UnwindContext, *mut core::ffi::c_void) -> i32,
        arg: *mut core::ffi::c_void,
    ) -> i32;
    pub(crate) fn _Unwind_GetIP(ctx: *mut UnwindContext) -> usize;
}

struct Walk {
    stack: Stack,
    n: usize,
    skip: usize,
}

extern "C" fn one_frame(ctx: *mut UnwindContext, arg: *mut core::ffi::c_void) -> i32 {
    // SAFETY: `arg` is the `Walk` that `capture` passed.
    let w = unsafe { &mut *arg.cast::<Walk>() };
    if w.skip > 0 {
        w.skip -= 1;
        return 0;
    }
    // SAFETY: the unwinder's context for this frame.
    w.stack[w.n] = unsafe { _Unwind_GetIP(ctx) };
    w.n += 1;
    // _URC_NORMAL_STOP (4) ends the walk once the stack is full.
    if w.n == AUDIT_FRAMES {
        4
    } else {
        0
    }
}

/// The calling thread's stack: [`AUDIT_FRAMES`] return addresses, after the
/// frames of this module.
#[inline(never)]
fn capture() -> Stack {
    let mut w = Walk {
        stack: [0; AUDIT_FRAMES],
        n: 0,
        skip: 2,
    };
    // SAFETY: `one_frame` only writes `w`, which outlives the walk; the
    // unwinder reads the stack and the loaded objects' unwind tables and
    // allocates nothing.
    unsafe { _Unwind_Backtrace(one_frame, (&mut w as *mut Walk).cast()) };
    w.stack
}

/// Where the stacks of a block with `front` bytes in front of `user` are.
fn stacks_at(user: usize, front: usize) -> Option<(*mut Stack, *mut Stack)> {
    (front >= FRONT_AUDIT).then(|| {
        let inner = user - front;
        let a = (inner + 8) as *mut Stack;
        (a, (inner + 8 + AUDIT_FRAMES * 8) as *mut Stack)
    })
}

/// The alloc and free stacks of a block (zeros where none were recorded).
fn stacks_of(user: usize, h: &Header) -> (Stack, Stack) {
    match (h.guarded, stacks_at(user, h.front)) {
        // SAFETY: the stacks lie in the front of our block (a guarded
        // block's front starts with its guard page: no stacks there).
        (false, Some((a, f))) => unsafe { (a.read(), f.read()) },
        _ => ([0; AUDIT_FRAMES], [0; AUDIT_FRAMES]),
    }
}

// ---------------------------------------------------------------- operations

/// Allocates a debug block (`fast::alloc_slow` in debug mode); `plain`
/// allocates inner blocks.
pub(crate) fn alloc(
    size: usize,
    align: usize,
    flags: Flags,
    plain: impl Fn(usize, usize, Flags) -> Option<NonNull<u8>>,
) -> Option<NonNull<u8>> {
    let align = align.max(16);
    if !align.is_power_of_two() {
        return None;
    }
    // A zero-byte block has one usable byte, as the plain one has some.
    let size = size.max(1);
    let guards = mode_has(DebugFlags::GUARDS);
    let audit = mode_has(DebugFlags::AUDIT);
    let front_min = if audit { FRONT_AUDIT } else { FRONT_MIN }.max(align);
    let tail = if guards { TAIL_MIN } else { 0 };
    let want = front_min.checked_add(size)?.checked_add(tail)?;
    let guarded = guards && want > MAX_CLASS_SIZE;
    let inner_size = if guarded {
        round_page(want)?.checked_add(2 * PAGE_SIZE)?
    } else {
        want
    };
    let inner_align = if guarded { PAGE_SIZE } else { align };
    let k = kernel()?;
    let inner = plain(inner_size, inner_align, flags.without(Flags::ZERO))?.as_ptr() as usize;
    let owner = owner_of(k, inner, "debug")?;
    let usable = owner.size();
    // A small block freed in debug mode keeps its freed header and pattern
    // until handed out again: check them now (write after free). (A large
    // block's pages may have served other blocks since, of other sizes and
    // starts: freed large blocks are quarantined instead.)
    if mode_has(DebugFlags::CONTENTS) && !guarded && matches!(owner, Owner::Class(_)) {
        check_freed_contents(inner, usable, owner);
    }
    let front = place(inner, usable, size, align, guarded);
    let user = inner + front;
    if guarded {
        // SAFETY: the first and last page of our fresh inner block.
        unsafe {
            libc::mprotect(inner as *mut _, PAGE_SIZE, libc::PROT_NONE);
            libc::mprotect(
                (inner + usable - PAGE_SIZE) as *mut _,
                PAGE_SIZE,
                libc::PROT_NONE,
            );
        }
    }
    if !guarded {
        // The key word below the redzone reads zero in a live block (an
        // underflow shows there). A small block's handout cleared it; a
        // large block's pages may hold a previous block's data.
        // SAFETY: the first 8 bytes of our fresh inner block.
        unsafe { (inner as *mut u64).write(0) };
    }
    let data_start = if guarded { inner + PAGE_SIZE } else { inner };
    let data_end = if guarded {
        inner + usable - PAGE_SIZE
    } else {
        inner + usable
    };
    // Redzone: from after the key word (or the lower guard page) to the
    // header, and from the user bytes to the end.
    let mut rz_from = if guarded { data_start } else { inner + 8 };
    if let (false, Some((a, f))) = (guarded, stacks_at(user, front)) {
        // SAFETY: the stacks lie in the front of our fresh block.
        unsafe {
            a.write(capture());
            f.write([0; AUDIT_FRAMES]);
        }
        rz_from = f as usize + AUDIT_FRAMES * 8;
    }
    ptr_fill(rz_from, user - HEADER, REDZONE);
    ptr_fill(user + size, data_end, REDZONE);
    if flags.contains(Flags::ZERO) {
        ptr_fill(user, user + size, 0);
    } else if mode_has(DebugFlags::CONTENTS) {
        fill32(user, user + size, UNINIT);
    }
    // SAFETY: the header lies in our block, below `user`.
    unsafe {
        write_header(
            user,
            Header {
                front,
                state: STATE_LIVE,
                guarded,
                size,
            },
        )
    };
    NonNull::new(user as *mut u8)
}

fn ptr_fill(from: usize, to: usize, b: u8) {
    if to > from {
        // SAFETY: callers pass ranges of blocks they own.
        unsafe { ptr::write_bytes(from as *mut u8, b, to - from) };
    }
}

/// A small inner block freed in debug mode carries a freed header and the
/// freed pattern: report a write after free if the pattern changed.
fn check_freed_contents(inner: usize, usable: usize, owner: Owner) {
    // The old header sits below the old user pointer, at a front of 32 or
    // a larger power-of-two alignment.
    let mut front = FRONT_MIN;
    while front <= usable && front <= 4096 {
        let old_user = inner + front;
        // SAFETY: `old_user - HEADER .. old_user` lies in our inner block.
        if let Some(h) = unsafe { read_header(old_user) } {
            if h.front == front && h.state == STATE_FREED && !h.guarded {
                if first_not32(old_user, inner + usable, FREED).is_some() {
                    found_with(
                        ReportKind::ModifiedAfterFree,
                        "malloc",
                        old_user,
                        owner.zone(),
                        h.size,
                        Some(&h),
                    );
                }
                return;
            }
        }
        front *= 2;
    }
}

/// The debug block at `user`: its header and inner block, or `None` after a
/// report (not a debug block start, double free, underflow).
fn resolve(user: *const u8, op: &'static str) -> Option<(Header, usize, Owner)> {
    let u = user as usize;
    let k = kernel()?;
    if u % 16 != 0 || u < HEADER || !pagemeta::is_ours(u) || !pagemeta::is_ours(u - HEADER) {
        // Not a block of ours: the plain road reports it as such.
        owner_of(k, u, op);
        return None;
    }
    if in_quarantine(u) {
        // Freed, and inaccessible: its header cannot even be read.
        found(ReportKind::DoubleFree, op, u, "large", 0);
        return None;
    }
    // SAFETY: `u - HEADER` and `u` are in registered (mapped) chunks.
    let Some(h) = (unsafe { read_header(u) }) else {
        broken_header(u, op);
        return None;
    };
    let inner = u - h.front;
    let owner = owner_at(k, inner)?;
    if h.state == STATE_FREED {
        found_with(
            ReportKind::DoubleFree,
            op,
            u,
            owner.zone(),
            h.size,
            Some(&h),
        );
        return None;
    }
    let lower = if h.guarded {
        inner + PAGE_SIZE
    } else {
        // SAFETY: the key word of our inner block.
        if unsafe { (inner as *const u64).read() } != 0 {
            found_with(ReportKind::Underflow, op, u, owner.zone(), h.size, Some(&h));
            return None;
        }
        match stacks_at(u, h.front) {
            Some((_, f)) => {
                // SAFETY: the free stack of our live block: zeros.
                if unsafe { f.read() } != [0; AUDIT_FRAMES] {
                    found_with(ReportKind::Underflow, op, u, owner.zone(), h.size, Some(&h));
                    return None;
                }
                f as usize + AUDIT_FRAMES * 8
            }
            None => inner + 8,
        }
    };
    if mode_has(DebugFlags::GUARDS) && first_not(lower, u - HEADER, REDZONE).is_some() {
        found_with(ReportKind::Underflow, op, u, owner.zone(), h.size, Some(&h));
        return None;
    }
    Some((h, inner, owner))
}

/// No valid header below `u`: an underflow if `u` is where a debug block's
/// user bytes start in its size-class item, else not a block start.
fn broken_header(u: usize, op: &'static str) {
    let word = pagemeta::lookup(u);
    if pagemeta::is_slab(word) {
        let c = pagemeta::slab_class(word);
        let size = crate::CLASS_SIZES[c];
        let off = (u & (crate::kernel::class_geometry(c).0.max(1) - 1)) % size;
        if off >= FRONT_MIN && off.is_power_of_two() {
            // The header is gone, but the stacks may be intact.
            let (a, f) = match stacks_at(u, off) {
                // SAFETY: the front of the size-class item holding `u`.
                Some((a, f)) => unsafe { (a.read(), f.read()) },
                None => ([0; AUDIT_FRAMES], [0; AUDIT_FRAMES]),
            };
            found_stacks(ReportKind::Underflow, op, u, crate::CLASS_NAMES[c], 0, a, f);
            return;
        }
        report(Report::new(
            ReportKind::NotAllocationStart,
            op,
            u,
            crate::CLASS_NAMES[c],
        ));
        return;
    }
    if pagemeta::lookup(u) == 0 && pagemeta::is_dirty(u) {
        // In the pages of a freed large block.
        found(ReportKind::DoubleFree, op, u, "large", 0);
        return;
    }
    found(ReportKind::Underflow, op, u, "", 0);
}

/// The owner of an inner block start, quietly.
fn owner_at(k: &crate::kernel::Kernel, inner: usize) -> Option<Owner> {
    let word = pagemeta::lookup(inner);
    if pagemeta::is_slab(word) || pagemeta::is_large(word) {
        owner_of(k, inner, "debug")
    } else {
        None
    }
}

/// Checks the tail redzone; reports an overflow.
fn check_tail(user: usize, h: Header, inner: usize, owner: Owner, op: &'static str) {
    if !mode_has(DebugFlags::GUARDS) {
        return;
    }
    let end = if h.guarded {
        inner + owner.size() - PAGE_SIZE
    } else {
        inner + owner.size()
    };
    if first_not(user + h.size, end, REDZONE).is_some() {
        found_with(
            ReportKind::Overflow,
            op,
            user,
            owner.zone(),
            h.size,
            Some(&h),
        );
    }
}

/// Frees a debug block; false after a report that dropped it.
///
/// # Safety
///
/// As [`raw::free`](crate::raw::free).
pub(crate) unsafe fn free(user: *mut u8, op: &'static str) -> bool {
    if user.is_null() {
        return false;
    }
    let Some((h, inner, owner)) = resolve(user, op) else {
        return false;
    };
    let u = user as usize;
    check_tail(u, h, inner, owner, op);
    if let (false, Some((_, f))) = (h.guarded, stacks_at(u, h.front)) {
        // SAFETY: the free stack's place in the front of our block.
        unsafe { f.write(capture()) };
    }
    // SAFETY: the header of our block.
    unsafe {
        write_header(
            u,
            Header {
                state: STATE_FREED,
                ..h
            },
        )
    };
    let Some(k) = kernel() else { return false };
    if h.guarded {
        let bytes = owner.size();
        // SAFETY: our inner block's guard pages back to read-write.
        unsafe {
            libc::mprotect(
                inner as *mut _,
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
            );
            libc::mprotect(
                (inner + bytes - PAGE_SIZE) as *mut _,
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
            );
        }
        if mode_has(DebugFlags::CONTENTS) {
            return quarantine(k, inner, owner);
        }
    } else if mode_has(DebugFlags::CONTENTS) {
        if let Owner::Large(_) = owner {
            // Unbacked and inaccessible until really freed (a use after
            // free faults), as guarded large blocks.
            return quarantine(k, inner, owner);
        }
        fill32(u, inner + owner.size(), FREED);
    }
    // SAFETY: our live inner block.
    unsafe { free_owned(k, NonNull::new_unchecked(inner as *mut u8), owner, op) }
}

/// The user size of a debug block (0 after a report).
pub(crate) fn usable_size(user: *const u8) -> usize {
    if user.is_null() {
        return 0;
    }
    match resolve(user, "malloc_usable_size") {
        Some((h, inner, owner)) => {
            check_tail(user as usize, h, inner, owner, "malloc_usable_size");
            h.size
        }
        None => 0,
    }
}

/// Resizes a debug block: in place while the inner block has room for the
/// new size and its tail redzone, else a new block. Null on failure or
/// after a report (`user` then untouched).
///
/// # Safety
///
/// As [`raw::realloc`](crate::raw::realloc).
pub(crate) unsafe fn realloc(
    user: *mut u8,
    size: usize,
    align: usize,
    plain: impl Fn(usize, usize, Flags) -> Option<NonNull<u8>>,
) -> *mut u8 {
    if user.is_null() {
        return alloc(size, align, Flags::NOWAIT, plain).map_or(ptr::null_mut(), NonNull::as_ptr);
    }
    let Some((h, inner, owner)) = resolve(user, "realloc") else {
        return ptr::null_mut();
    };
    let u = user as usize;
    check_tail(u, h, inner, owner, "realloc");
    // In place while the new size leaves the tail redzone room in the
    // inner block (and the alignment holds).
    let size = size.max(1);
    let data_end = if h.guarded {
        inner + owner.size() - PAGE_SIZE
    } else {
        inner + owner.size()
    };
    let tail = if mode_has(DebugFlags::GUARDS) {
        TAIL_MIN
    } else {
        0
    };
    let end = size.checked_add(tail).and_then(|x| x.checked_add(u));
    if u % align.max(16) == 0 && end.is_some_and(|e| e <= data_end) {
        if mode_has(DebugFlags::CONTENTS) && size > h.size {
            fill32(u + h.size, u + size, UNINIT);
        }
        if mode_has(DebugFlags::GUARDS) {
            ptr_fill(u + size, data_end, REDZONE);
        }
        // SAFETY: the header of our live block.
        unsafe { write_header(u, Header { size, ..h }) };
        return user;
    }
    let Some(new) = alloc(size, align, Flags::NOWAIT, plain) else {
        return ptr::null_mut();
    };
    // SAFETY: both live, distinct; then the old one freed as `free` does.
    unsafe {
        ptr::copy_nonoverlapping(user, new.as_ptr(), h.size.min(size));
        free(user, "realloc");
    }
    new.as_ptr()
}

// ---------------------------------------------------------------- quarantine

const QUARANTINE_LEN: usize = 64;
static QUARANTINE: [AtomicUsize; QUARANTINE_LEN] = [const { AtomicUsize::new(0) }; QUARANTINE_LEN];
static QUARANTINE_NEXT: AtomicUsize = AtomicUsize::new(0);

/// Whether `u` lies in a quarantined block.
fn in_quarantine(u: usize) -> bool {
    QUARANTINE.iter().any(|q| {
        let inner = q.load(Ordering::Acquire);
        inner != 0 && u >= inner && large_bytes(inner).is_some_and(|b| u < inner + b)
    })
}

/// The bytes of the large block starting at `inner`, from one read of its
/// page word, without a report (the block may be changing hands).
fn large_bytes(inner: usize) -> Option<usize> {
    let word = pagemeta::lookup(inner);
    pagemeta::is_large(word).then_some((word >> 3) * PAGE_SIZE)
}

/// Parks a freed large inner block unbacked and inaccessible; the oldest
/// parked one is really freed. Lock-free (a ring of atomic slots), so a
/// fork never finds it held.
fn quarantine(k: &crate::kernel::Kernel, inner: usize, owner: Owner) -> bool {
    let bytes = owner.size();
    // SAFETY: our inner block, no longer used: its contents go, and any
    // access faults until it is really freed.
    unsafe {
        libc::madvise(inner as *mut _, bytes, libc::MADV_DONTNEED);
        libc::mprotect(inner as *mut _, bytes, libc::PROT_NONE);
    }
    let i = QUARANTINE_NEXT.fetch_add(1, Ordering::Relaxed) % QUARANTINE_LEN;
    let old = QUARANTINE[i].swap(inner, Ordering::AcqRel);
    if old != 0 {
        if let Some(b) = large_bytes(old) {
            // SAFETY: a quarantined inner block, ours alone (swapped out).
            unsafe {
                libc::mprotect(old as *mut _, b, libc::PROT_READ | libc::PROT_WRITE);
                free_owned(
                    k,
                    NonNull::new_unchecked(old as *mut u8),
                    Owner::Large(b / PAGE_SIZE),
                    "free",
                );
            }
        }
    }
    true
}
