//! A sample's stack walk without libgcc's per-frame work: x86-64 DWARF
//! call-frame information, read once per return address and cached.
//!
//! libgcc's `_Unwind_Backtrace` costs about 2,000 instructions a frame:
//! find the FDE, parse its CIE, run both CFA programs, copy an 18-register
//! context. For a return address the answer is always the same (CFI is a
//! function of the code address), and a walk needs little of it: where the
//! frame's CFA is (`rsp` or `rbp` plus a constant), where its return
//! address is (at a constant offset from the CFA) and where the caller's
//! `rbp` is (unchanged, or at a constant offset from the CFA; `rbp` is the
//! only register a CFA is defined by in the code we follow). So the first
//! walk through a return address finds its FDE (`_Unwind_Find_FDE`, the
//! lookup libgcc itself uses), runs the CFA program up to it, and keeps the
//! three rules in a process-wide cache (a seqlock per entry); later walks
//! cost a cache probe and two loads a frame.
//!
//! Anything outside that model makes [`walk`] give up (`None`) and the
//! caller walks with libgcc instead, as before: a CFA or rule given by a
//! DWARF expression (signal frames, PLT stubs, stack-realigning
//! functions), a CFA defined by another register, a return address
//! without an FDE, an odd CIE. The reads a walk makes are the ones libgcc
//! would make (the same rules at the same addresses), plus sanity bounds:
//! each CFA lies above the frame's stack pointer, within 256 MiB of it.
//!
//! A library unloaded (`dlclose`) may leave entries for addresses that
//! later hold other code: the cache is emptied whenever the loader's
//! count of removed objects (`dl_phdr_info::dlpi_subs`) has changed since
//! the last walk. Frames on the walking thread's stack belong to loaded
//! code (they were pushed before the walk began), so an unload racing
//! the walk cannot change the rules it needs.

#![cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]

use core::ffi::c_void;

use super::sync::{AtomicU64, AtomicUsize, Ordering};
use super::table::MAX_FRAMES;

/// DWARF register numbers (x86-64 psABI).
const RBP: u64 = 6;
const RSP: u64 = 7;
const RIP: u64 = 16;

/// What libgcc's `_Unwind_Find_FDE` fills in.
#[repr(C)]
struct DwarfEhBases {
    tbase: *mut c_void,
    dbase: *mut c_void,
    func: *mut c_void,
}

extern "C" {
    /// libgcc (`libgcc_s`): the FDE covering `pc`, or null.
    fn _Unwind_Find_FDE(pc: *const c_void, bases: *mut DwarfEhBases) -> *const u8;
}

// ---------------------------------------------------------------- rules

/// How to step out of one frame (packed into a `u64` for the cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rule {
    /// CFA = (`rbp` if set, else `rsp`) + `cfa_off`.
    cfa_rbp: bool,
    cfa_off: i32,
    /// The return address is at CFA + `ra_off`; `None`: the outermost
    /// frame (its return address is undefined).
    ra_off: Option<i32>,
    /// The caller's `rbp`.
    rbp: Saved,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Saved {
    /// Unchanged (unmentioned, or `DW_CFA_same_value`).
    Same,
    /// At CFA + the offset.
    At(i32),
    /// Unknown (`DW_CFA_undefined`): a frame whose CFA needs it ends the
    /// fast walk.
    Undefined,
}

/// A cache entry's value: the packed offsets and, apart, the kinds.
#[derive(Clone, Copy)]
struct Packed {
    offsets: u64,
    kinds: u64,
}

fn pack(r: Rule) -> Packed {
    let ra_kind = u64::from(r.ra_off.is_some());
    let bp_kind = match r.rbp {
        Saved::Same => 0u64,
        Saved::At(_) => 1,
        Saved::Undefined => 2,
    };
    let ra = r.ra_off.unwrap_or(0);
    let bp = match r.rbp {
        Saved::At(o) => o,
        _ => 0,
    };
    Packed {
        // (`fits` checked that both offsets take 16 bits.)
        offsets: u64::from(r.cfa_off as u32)
            | u64::from(ra as i16 as u16) << 32
            | u64::from(bp as i16 as u16) << 48,
        kinds: ra_kind | bp_kind << 1 | u64::from(r.cfa_rbp) << 3,
    }
}

fn unpack(p: Packed) -> Rule {
    let cfa_off = p.offsets as u32 as i32;
    let ra = i32::from((p.offsets >> 32) as u16 as i16);
    let bp = i32::from((p.offsets >> 48) as u16 as i16);
    Rule {
        cfa_rbp: p.kinds & 8 != 0,
        cfa_off,
        ra_off: (p.kinds & 1 != 0).then_some(ra),
        rbp: match (p.kinds >> 1) & 3 {
            0 => Saved::Same,
            1 => Saved::At(bp),
            _ => Saved::Undefined,
        },
    }
}

/// Whether a rule's offsets fit the packed form.
fn fits(r: &Rule) -> bool {
    let small = |o: i32| i16::try_from(o).is_ok();
    r.ra_off.is_none_or(small)
        && match r.rbp {
            Saved::At(o) => small(o),
            _ => true,
        }
}

// ---------------------------------------------------------------- cache

/// Entries of the cache (a power of two).
const CACHE_LEN: usize = 1024;

/// One entry: a seqlock (`seq` odd while written) over the key and value.
struct Entry {
    seq: AtomicU64,
    /// The lookup address (a return address minus 1, or the exact PC of
    /// the walk's first frame); 0: empty.
    key: AtomicUsize,
    offsets: AtomicU64,
    kinds: AtomicU64,
}

static CACHE: [Entry; CACHE_LEN] = [const {
    Entry {
        seq: AtomicU64::new(0),
        key: AtomicUsize::new(0),
        offsets: AtomicU64::new(0),
        kinds: AtomicU64::new(0),
    }
}; CACHE_LEN];

/// `dlpi_subs` when the cache was last checked.
static SUBS: AtomicU64 = AtomicU64::new(0);

fn slot(key: usize) -> &'static Entry {
    let h = (key as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - CACHE_LEN.trailing_zeros());
    &CACHE[h as usize]
}

fn lookup(key: usize) -> Option<Rule> {
    let e = slot(key);
    let s1 = e.seq.load(Ordering::Acquire);
    if s1 & 1 != 0 {
        return None;
    }
    let k = e.key.load(Ordering::Relaxed);
    let p = Packed {
        offsets: e.offsets.load(Ordering::Relaxed),
        kinds: e.kinds.load(Ordering::Relaxed),
    };
    core::sync::atomic::fence(Ordering::Acquire);
    (k == key && e.seq.load(Ordering::Relaxed) == s1).then(|| unpack(p))
}

fn store(key: usize, r: Rule) {
    let e = slot(key);
    let s = e.seq.load(Ordering::Relaxed);
    if s & 1 != 0
        || e.seq
            .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return; // someone else writes it: leave it to them
    }
    core::sync::atomic::fence(Ordering::Release);
    let p = pack(r);
    e.key.store(key, Ordering::Relaxed);
    e.offsets.store(p.offsets, Ordering::Relaxed);
    e.kinds.store(p.kinds, Ordering::Relaxed);
    e.seq.store(s + 2, Ordering::Release);
}

/// Empties the cache if a library was unloaded since the last look.
fn check_unloads() {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        let need = core::mem::offset_of!(libc::dl_phdr_info, dlpi_subs)
            + core::mem::size_of::<libc::c_ulonglong>();
        if size >= need {
            // SAFETY: the loader's record of at least `size` bytes, and
            // `data` the `u64` that `check_unloads` passed.
            unsafe { *data.cast::<u64>() = (*info).dlpi_subs };
        }
        1 // the first object is enough: the counts are global
    }
    let mut subs = u64::MAX;
    // SAFETY: `first` only writes `subs`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(first), (&mut subs as *mut u64).cast()) };
    if SUBS.load(Ordering::Relaxed) != subs {
        for e in &CACHE {
            let s = e.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && e.seq
                    .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                e.key.store(0, Ordering::Relaxed);
                e.seq.store(s + 2, Ordering::Release);
            }
        }
        SUBS.store(subs, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------- CFI

/// A cursor over unwind tables in memory.
struct Reader {
    p: *const u8,
    end: *const u8,
}

impl Reader {
    fn u8(&mut self) -> Option<u8> {
        if self.p >= self.end {
            return None;
        }
        // SAFETY: below `end`, inside the loaded object's unwind tables
        // (`Reader`s are only made over CIE and FDE bodies).
        let b = unsafe { self.p.read() };
        // SAFETY: at most `end`.
        self.p = unsafe { self.p.add(1) };
        Some(b)
    }
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0; N];
        for x in &mut b {
            *x = self.u8()?;
        }
        Some(b)
    }
    fn uleb(&mut self) -> Option<u64> {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
    }
    fn sleb(&mut self) -> Option<i64> {
        let (mut v, mut shift) = (0i64, 0);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= i64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Some(v);
            }
        }
    }
    fn skip(&mut self, n: u64) -> Option<()> {
        let left = self.end as usize - self.p as usize;
        if n as usize > left {
            return None;
        }
        // SAFETY: at most `end`.
        self.p = unsafe { self.p.add(n as usize) };
        Some(())
    }
    /// An encoded pointer's value as stored (no base applied): only its
    /// size and, for `pc_range`, its number matter here.
    fn encoded(&mut self, enc: u8) -> Option<u64> {
        Some(match enc & 0x0f {
            0x00 => u64::from_le_bytes(self.bytes::<8>()?),
            0x01 => self.uleb()?,
            0x02 => u64::from(u16::from_le_bytes(self.bytes::<2>()?)),
            0x03 => u64::from(u32::from_le_bytes(self.bytes::<4>()?)),
            0x04 => u64::from_le_bytes(self.bytes::<8>()?),
            0x09 => self.sleb()? as u64,
            0x0a => i64::from(i16::from_le_bytes(self.bytes::<2>()?)) as u64,
            0x0b => i64::from(i32::from_le_bytes(self.bytes::<4>()?)) as u64,
            0x0c => u64::from_le_bytes(self.bytes::<8>()?),
            _ => return None,
        })
    }
}

/// A length-prefixed record (CIE or FDE) at `p`: its body.
///
/// # Safety
///
/// `p` points at a record of a loaded object's `.eh_frame`.
unsafe fn record(p: *const u8) -> Option<Reader> {
    // SAFETY: the caller's promise: a 4-byte length starts the record.
    let len = unsafe { p.cast::<u32>().read_unaligned() };
    if len == 0 || len == u32::MAX {
        return None; // a terminator, or 64-bit DWARF: not for us
    }
    // SAFETY: the record's body follows its length.
    let body = unsafe { p.add(4) };
    Some(Reader {
        p: body,
        // SAFETY: `len` bytes of body.
        end: unsafe { body.add(len as usize) },
    })
}

/// The register state of one row (only what [`Rule`] keeps).
#[derive(Clone, Copy)]
struct Row {
    cfa_reg: u64,
    cfa_off: i64,
    ra: RegRule,
    rbp: RegRule,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RegRule {
    Same,
    Undefined,
    At(i64),
    /// Given another way (a register, an expression): not followed.
    Other,
}

impl Row {
    fn set(&mut self, reg: u64, r: RegRule) {
        match reg {
            RBP => self.rbp = r,
            RIP => self.ra = r,
            // The stack pointer is the CFA by definition here; any rule
            // for it is beyond the model.
            RSP if r != RegRule::Same => self.ra = RegRule::Other,
            _ => {}
        }
    }
    fn restore(&mut self, reg: u64, init: &Row) {
        match reg {
            RBP => self.rbp = init.rbp,
            RIP => self.ra = init.ra,
            _ => {}
        }
    }
}

/// What a CIE says.
struct Cie {
    code_align: u64,
    data_align: i64,
    fde_enc: u8,
    /// Has augmentation data (`z`): FDEs carry its length.
    z: bool,
    init: Reader,
}

/// Parses the CIE at `p`.
///
/// # Safety
///
/// `p` points at a CIE of a loaded object's `.eh_frame`.
unsafe fn cie(p: *const u8) -> Option<Cie> {
    // SAFETY: the caller's promise.
    let mut r = unsafe { record(p)? };
    if r.bytes::<4>()? != [0; 4] {
        return None; // not a CIE
    }
    let version = r.u8()?;
    let mut aug = [0u8; 8];
    let mut n = 0;
    loop {
        let c = r.u8()?;
        if c == 0 {
            break;
        }
        if n == aug.len() {
            return None;
        }
        aug[n] = c;
        n += 1;
    }
    let code_align = r.uleb()?;
    let data_align = r.sleb()?;
    let ra = if version == 1 {
        u64::from(r.u8()?)
    } else {
        r.uleb()?
    };
    if ra != RIP {
        return None;
    }
    let mut fde_enc = 0; // absptr
    let z = n > 0 && aug[0] == b'z';
    if z {
        let len = r.uleb()?;
        let end = r.p as usize + len as usize;
        for &c in &aug[1..n] {
            match c {
                b'R' => fde_enc = r.u8()?,
                b'P' => {
                    let enc = r.u8()?;
                    if enc & 0x70 == 0x50 {
                        return None; // aligned: not seen on x86-64
                    }
                    r.encoded(enc)?;
                }
                b'L' => {
                    r.u8()?;
                }
                // A signal frame ('S') or anything else: libgcc's.
                _ => return None,
            }
        }
        if r.p as usize > end {
            return None;
        }
        r.skip((end - r.p as usize) as u64)?;
    } else if n > 0 {
        return None;
    }
    Some(Cie {
        code_align,
        data_align,
        fde_enc,
        z,
        init: r,
    })
}

/// Runs a CFA program on `row` up to the row of `target` (`loc` is where
/// the program starts; `None` for the CIE's initial instructions, which
/// have no location). `None` for anything outside the model.
fn run(
    mut r: Reader,
    cie: &Cie,
    row: &mut Row,
    init: &Row,
    mut loc: Option<u64>,
    target: u64,
) -> Option<()> {
    const STATES: usize = 8;
    let mut saved = [*row; STATES];
    let mut depth = 0;
    let off = |n: u64| -> Option<i64> { (n as i64).checked_mul(cie.data_align) };
    let advance = |loc: &mut Option<u64>, delta: u64| -> Option<bool> {
        let l = loc.as_mut()?;
        *l = l.checked_add(delta.checked_mul(cie.code_align)?)?;
        Some(*l > target)
    };
    while let Some(op) = r.u8() {
        match op >> 6 {
            1 => {
                if advance(&mut loc, u64::from(op & 0x3f))? {
                    return Some(());
                }
                continue;
            }
            2 => {
                let o = off(r.uleb()?)?;
                row.set(u64::from(op & 0x3f), RegRule::At(o));
                continue;
            }
            3 => {
                row.restore(u64::from(op & 0x3f), init);
                continue;
            }
            _ => {}
        }
        match op {
            0x00 => {}
            0x02 => {
                let d = r.u8()?;
                if advance(&mut loc, u64::from(d))? {
                    return Some(());
                }
            }
            0x03 => {
                let d = u16::from_le_bytes(r.bytes::<2>()?);
                if advance(&mut loc, u64::from(d))? {
                    return Some(());
                }
            }
            0x04 => {
                let d = u32::from_le_bytes(r.bytes::<4>()?);
                if advance(&mut loc, u64::from(d))? {
                    return Some(());
                }
            }
            0x0a => {
                if depth == STATES {
                    return None;
                }
                saved[depth] = *row;
                depth += 1;
            }
            0x0b => {
                if depth == 0 {
                    return None;
                }
                depth -= 1;
                // (The CFA is restored too, as libgcc does.)
                *row = saved[depth];
            }
            _ if rule_op(op, &mut r, cie, row, init)? => {}
            // set_loc, def_cfa_expression, negative offsets, vendor ops:
            // libgcc's.
            _ => return None,
        }
    }
    Some(())
}

/// The operations of a CFA program that set a register's or the CFA's
/// rule (for [`run`]): true when `op` was one and is applied, false for
/// any other operation (`run`'s, or outside the model); `None` for a
/// malformed one.
fn rule_op(op: u8, r: &mut Reader, cie: &Cie, row: &mut Row, init: &Row) -> Option<bool> {
    match op {
        0x05 => {
            let reg = r.uleb()?;
            let o = (r.uleb()? as i64).checked_mul(cie.data_align)?;
            row.set(reg, RegRule::At(o));
        }
        0x06 => row.restore(r.uleb()?, init),
        0x07 => row.set(r.uleb()?, RegRule::Undefined),
        0x08 => row.set(r.uleb()?, RegRule::Same),
        0x09 => {
            let reg = r.uleb()?;
            r.uleb()?;
            row.set(reg, RegRule::Other);
        }
        0x0c => {
            row.cfa_reg = r.uleb()?;
            row.cfa_off = r.uleb()? as i64;
        }
        0x0d => row.cfa_reg = r.uleb()?,
        0x0e => row.cfa_off = r.uleb()? as i64,
        0x10 | 0x16 => {
            let reg = r.uleb()?;
            let len = r.uleb()?;
            r.skip(len)?;
            row.set(reg, RegRule::Other);
        }
        0x11 => {
            let reg = r.uleb()?;
            let o = r.sleb()?.checked_mul(cie.data_align)?;
            row.set(reg, RegRule::At(o));
        }
        0x12 => {
            row.cfa_reg = r.uleb()?;
            row.cfa_off = r.sleb()?.checked_mul(cie.data_align)?;
        }
        0x13 => row.cfa_off = r.sleb()?.checked_mul(cie.data_align)?,
        0x14 | 0x15 => {
            let reg = r.uleb()?;
            if op == 0x14 {
                r.uleb()?;
            } else {
                r.sleb()?;
            }
            row.set(reg, RegRule::Other);
        }
        0x2e => {
            r.uleb()?; // GNU_args_size: for landing pads only
        }
        _ => return Some(false),
    }
    Some(true)
}

/// The rule of the frame whose lookup address is `key`, from its FDE.
fn parse(key: usize) -> Option<Rule> {
    let mut bases = DwarfEhBases {
        tbase: core::ptr::null_mut(),
        dbase: core::ptr::null_mut(),
        func: core::ptr::null_mut(),
    };
    // SAFETY: libgcc's lookup: reads the loaded objects' tables, fills
    // `bases`, allocates nothing (the lookup `_Unwind_Backtrace` makes).
    let fde = unsafe { _Unwind_Find_FDE(key as *const c_void, &mut bases) };
    if fde.is_null() {
        return None;
    }
    // SAFETY: an FDE of a loaded object, as libgcc found it.
    let mut r = unsafe { record(fde)? };
    let id_at = r.p;
    let id = u32::from_le_bytes(r.bytes::<4>()?);
    if id == 0 {
        return None;
    }
    // SAFETY: the FDE's CIE pointer: `id` bytes before the field, in the
    // same `.eh_frame`.
    let cie = unsafe { cie(id_at.sub(id as usize))? };
    r.encoded(cie.fde_enc)?; // pc_begin: `bases.func` has it resolved
    let _range = r.encoded(cie.fde_enc & 0x0f)?;
    if cie.z {
        let len = r.uleb()?;
        r.skip(len)?;
    }
    let start = bases.func as u64;
    let mut row = Row {
        cfa_reg: RSP,
        cfa_off: 0,
        ra: RegRule::Same,
        rbp: RegRule::Same,
    };
    let init_prog = Reader {
        p: cie.init.p,
        end: cie.init.end,
    };
    let blank = row;
    run(init_prog, &cie, &mut row, &blank, None, u64::MAX)?;
    let init = row;
    run(r, &cie, &mut row, &init, Some(start), key as u64)?;
    let cfa_rbp = match row.cfa_reg {
        RSP => false,
        RBP => true,
        _ => return None,
    };
    let rule = Rule {
        cfa_rbp,
        cfa_off: i32::try_from(row.cfa_off).ok()?,
        ra_off: match row.ra {
            RegRule::At(o) => Some(i32::try_from(o).ok()?),
            RegRule::Undefined => None,
            _ => return None,
        },
        rbp: match row.rbp {
            RegRule::Same => Saved::Same,
            RegRule::Undefined => Saved::Undefined,
            RegRule::At(o) => Saved::At(i32::try_from(o).ok()?),
            RegRule::Other => return None,
        },
    };
    fits(&rule).then_some(rule)
}

// ---------------------------------------------------------------- walk

/// Frames a CFA may lie above its stack pointer (a sanity bound).
const MAX_FRAME: usize = 256 << 20;

/// The calling thread's return addresses, leaf first (from the return
/// address into this function's caller: this function's own frame is
/// stepped over, not recorded, as libgcc's walk starts at its caller), and
/// whether the walk reached the thread's first
/// frame; `None` when some frame is beyond the model (see the module
/// doc): the caller then walks with libgcc.
#[inline(never)]
pub(crate) fn walk(stack: &mut [usize; MAX_FRAMES]) -> Option<(usize, bool)> {
    check_unloads();
    let (mut pc, mut sp, bp): (usize, usize, usize);
    // SAFETY: reads three registers; touches no memory.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    let mut bp = Some(bp);
    let mut key = pc;
    let mut n = 0;
    // This function's own frame: stepped over, not recorded (a frame more
    // would push a deep stack's outermost frames past MAX_FRAMES).
    let mut own = true;
    loop {
        if !own {
            stack[n] = pc;
            n += 1;
        }
        let rule = match lookup(key) {
            Some(r) => r,
            None => {
                let r = parse(key)?;
                store(key, r);
                r
            }
        };
        let base = if rule.cfa_rbp { bp? } else { sp };
        let cfa = base.checked_add_signed(rule.cfa_off as isize)?;
        if cfa <= sp || cfa - sp > MAX_FRAME {
            return None;
        }
        let Some(ra_off) = rule.ra_off else {
            return Some((n, true));
        };
        let read = |off: i32| -> Option<usize> {
            let a = cfa.checked_add_signed(off as isize)?;
            if a < sp || a % 8 != 0 {
                return None;
            }
            // SAFETY: a slot of this frame on the calling thread's stack
            // (between its stack pointer and the CFA above it), where the
            // frame's unwind rules say the value is saved: the read libgcc
            // would make.
            Some(unsafe { (a as *const usize).read() })
        };
        let ra = read(ra_off)?;
        bp = match rule.rbp {
            Saved::Same => bp,
            Saved::At(o) => Some(read(o)?),
            Saved::Undefined => None,
        };
        sp = cfa;
        if ra == 0 {
            return Some((n, true));
        }
        if n == MAX_FRAMES {
            return Some((n, false));
        }
        own = false;
        pc = ra;
        key = ra - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_pack_and_unpack() {
        for r in [
            Rule {
                cfa_rbp: false,
                cfa_off: 8,
                ra_off: Some(-8),
                rbp: Saved::Same,
            },
            Rule {
                cfa_rbp: true,
                cfa_off: 16,
                ra_off: Some(-8),
                rbp: Saved::At(-16),
            },
            Rule {
                cfa_rbp: false,
                cfa_off: 1 << 20,
                ra_off: None,
                rbp: Saved::Undefined,
            },
        ] {
            assert!(fits(&r));
            assert_eq!(unpack(pack(r)), r);
        }
    }

    #[inline(never)]
    fn deep(n: usize, out: &mut Vec<(Vec<usize>, Vec<usize>)>) {
        if n > 0 {
            deep(n - 1, out);
            core::hint::black_box(n);
            return;
        }
        let mut a = [0; MAX_FRAMES];
        let fast = walk(&mut a).expect("a walk of the test's own stack");
        let mut b = [0; MAX_FRAMES];
        let slow = super::super::stack::capture_libgcc(&mut b);
        // Both walks start in this function, at their own call sites
        // (the fast walk's return address, libgcc's PC after its call):
        // this function's callers on are the same.
        assert!(fast.1, "complete: {:x?}", &a[..fast.0]);
        out.push((a[1..fast.0].to_vec(), b[1..slow].to_vec()));
    }

    #[test]
    fn the_walk_matches_libgccs() {
        let mut out = Vec::new();
        for _ in 0..3 {
            deep(5, &mut out);
        }
        for (fast, slow) in &out {
            assert!(fast.len() >= 7, "{fast:x?}");
            assert_eq!(fast, slow);
        }
    }
}
