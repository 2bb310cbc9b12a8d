//! Seed 000 (fragmentation): a program that fills the heap with small
//! blocks, frees them and trims must be able to allocate large blocks
//! again, under a memory limit (`kmem::set_limit`, what `BSDALLOC_LIMIT`
//! sets) and under an address-space limit (`setrlimit(RLIMIT_AS)`, what
//! `ulimit -v` sets).
//!
//! Each scenario runs in a child process (this binary again, running the
//! ignored `fragment_child` test with its parameters in the environment):
//! the allocator must start fresh, and an address-space limit would
//! otherwise bind every other test too. The child
//!
//! 1. sets the limit, then counts how many 1 MiB blocks it can get and
//!    frees them (the baseline, `B0`);
//! 2. fills with `N` blocks of `SIZE` bytes (stopping at the first null),
//!    frees them all (or all but 1%, chosen at random), trims as
//!    `malloc_trim` does (`kmem::reclaim(Drain)`);
//! 3. counts the 1 MiB blocks it can get again (`B1`) and checks them
//!    against the baseline, and the btag zone's free tags against its
//!    reserve.
//!
//! The blocks are kept on lists threaded through themselves, so the test
//! needs no memory of its own while the limit binds.

#![cfg(not(loom))]

use std::process::Command;

const MIB: usize = 1 << 20;

/// Runs one scenario in a child process and returns its figures line.
fn run(mode: &str, size: usize, n: usize, keep_pct: usize, limit_mib: usize) -> String {
    run_with(mode, size, n, keep_pct, limit_mib, true, 0)
}

/// As [`run`]; without `trim` the child does not trim after its frees;
/// with `stranger_kib`, the child maps that much address space of its own
/// once the limit is set (someone else's mapping: a thread's stack, a
/// library's buffer).
fn run_with(
    mode: &str,
    size: usize,
    n: usize,
    keep_pct: usize,
    limit_mib: usize,
    trim: bool,
    stranger_kib: usize,
) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "fragment_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FRAG_MODE", mode)
        .env("FRAG_SIZE", size.to_string())
        .env("FRAG_N", n.to_string())
        .env("FRAG_KEEP_PCT", keep_pct.to_string())
        .env("FRAG_LIMIT_MIB", limit_mib.to_string())
        .env("FRAG_TRIM", if trim { "1" } else { "0" })
        .env("FRAG_STRANGER_KIB", stranger_kib.to_string())
        .output()
        .expect("spawn the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{mode} size {size} n {n} keep {keep_pct}%: child failed ({})\n{stdout}\n{stderr}",
        out.status
    );
    // (The harness may print the test's name on the same line first.)
    let line = stdout
        .lines()
        .find_map(|l| l.find("FRAG ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no figures from the child:\n{stdout}\n{stderr}"))
        .to_string();
    eprintln!("{line}");
    line
}

fn env(name: &str) -> usize {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} not set"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

/// `VmSize` of this process, in bytes.
/// Address space the page metadata's leaves reserve now.
fn leaf_space() -> usize {
    kmem::os_stats().meta_reserved
}

/// Leaf reservations refused so far (see `OsStats::meta_refused`).
fn leaves_refused() -> usize {
    kmem::os_stats().meta_refused
}

/// The address space of one page-metadata leaf: 2^20 page words (8 MiB),
/// its dirty bits (128 KiB), slab stamps (16 KiB) and chunk bits (256
/// bytes); checked against the first leaf's reservation in the child.
const LEAF_BYTES: usize = (8336 << 10) + 256;

fn vm_size() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = s
        .lines()
        .find(|l| l.starts_with("VmSize:"))
        .expect("VmSize line");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmSize value");
    kib * 1024
}

/// Pushes `p` (at least 8 bytes, 8-aligned) onto the list at `head`.
///
/// # Safety
///
/// `p` is a live block of at least 8 bytes that nothing else uses.
unsafe fn push(head: &mut *mut u8, p: *mut u8) {
    // SAFETY: the caller's promise.
    unsafe { p.cast::<*mut u8>().write(*head) };
    *head = p;
}

/// Frees every block of the list at `head` and returns how many; with
/// `keep_pct`, keeps that share of them (at random) on a new list, which
/// it returns too.
///
/// # Safety
///
/// The list was built by [`push`] from live `kmem::raw` blocks.
unsafe fn free_list(mut head: *mut u8, keep_pct: usize, rng: &mut u64) -> (usize, *mut u8) {
    let mut kept = core::ptr::null_mut();
    let mut n = 0;
    while !head.is_null() {
        // SAFETY: a block of the list: its first word is the next one.
        let next = unsafe { head.cast::<*mut u8>().read() };
        // xorshift64
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        if keep_pct > 0 && (*rng % 100) < keep_pct as u64 {
            // SAFETY: still live and ours.
            unsafe { push(&mut kept, head) };
        } else {
            // SAFETY: a live raw block, not used again.
            assert!(unsafe { kmem::raw::free(head) });
            n += 1;
        }
        head = next;
    }
    (n, kept)
}

/// How many 1 MiB blocks can be had now (at most `max`); frees them again.
fn probe(max: usize) -> usize {
    let mut head = core::ptr::null_mut();
    let mut n = 0;
    while n < max {
        let p = kmem::raw::alloc(MIB, 16);
        if p.is_null() {
            break;
        }
        // SAFETY: MIB bytes of ours.
        unsafe { push(&mut head, p) };
        n += 1;
    }
    // SAFETY: built by push from live raw blocks.
    let (freed, _) = unsafe { free_list(head, 0, &mut 1) };
    assert_eq!(freed, n);
    n
}

fn trim() {
    kmem::reclaim(uma::Reclaim::Drain);
}

/// How many 1 MiB blocks fit now, by the figures: in the kernel arena's
/// free segments, plus whole 4 MiB imports in the room left (address
/// space under `RLIMIT_AS` (`cap`), the arena's own cap under the memory
/// limit), and no more than the memory limit leaves.
///
/// With `leaf_first`, the room is short of a page-metadata leaf: where the
/// kernel puts the next chunks in 4 GiB of address space the arena has
/// no leaf for, the leaf must be reserved before they serve anything.
fn fits_now(mode: &str, limit: usize, cap: usize, leaf_first: bool) -> usize {
    let a = kmem::kernel_arena().unwrap();
    let mut in_free = 0;
    a.for_each_segment(|s| {
        if s.kind == vmem::SegmentKind::Free {
            in_free += s.size / MIB;
        }
    });
    let iq = kmem::IMPORT_QUANTUM;
    let st = a.stats();
    let room = if mode == "rlimit" {
        cap.saturating_sub(vm_size())
            .saturating_sub(if leaf_first { LEAF_BYTES } else { 0 })
    } else {
        st.limit.saturating_sub(st.size)
    };
    let by_space = in_free + room / iq * (iq / MIB);
    if mode == "rlimit" {
        by_space
    } else {
        let committed = kmem::pressure_stats().committed;
        by_space.min(limit.saturating_sub(committed) / MIB)
    }
}

/// One scenario (see the module doc); run by [`run`] in a child process.
#[test]
#[ignore = "run by the fragment_* tests in a child process"]
fn fragment_child() {
    let mode = std::env::var("FRAG_MODE").expect("FRAG_MODE");
    let size = env("FRAG_SIZE");
    let n = env("FRAG_N");
    let keep_pct = env("FRAG_KEEP_PCT");
    let limit = env("FRAG_LIMIT_MIB") * MIB;
    // Start the allocator before any limit binds.
    let _ = kmem::stats().expect("kmem starts");
    // No lazy timeout pass: one that runs between the figures and a probe
    // (a loaded machine makes the child slow enough for a 1 s period)
    // moves cached memory about under them (with a period of 1 ms every
    // rlimit child here failed, before any change of this session too).
    // The trims here are explicit.
    kmem::set_timeout_period(None);
    let cap = match mode.as_str() {
        "limit" => {
            kmem::set_limit(limit);
            0
        }
        "rlimit" => {
            // The address space in use now, plus the limit.
            let cap = vm_size() + limit;
            let rl = libc::rlimit {
                rlim_cur: cap as libc::rlim_t,
                rlim_max: cap as libc::rlim_t,
            };
            // SAFETY: a valid rlimit for this process.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
            cap
        }
        m => panic!("unknown FRAG_MODE {m}"),
    };
    let max = 2 * limit / MIB + 16;
    let stranger = env("FRAG_STRANGER_KIB") * 1024;
    if stranger > 0 {
        // SAFETY: a fresh anonymous mapping, never touched; left mapped.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                stranger,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "the stranger's mapping");
    }
    let leaves0 = leaf_space();
    assert_eq!(leaves0 % LEAF_BYTES, 0, "a leaf is not {LEAF_BYTES} bytes");
    let refused0 = leaves_refused();
    let b0 = probe(max);
    let leaves1 = leaf_space();
    let refused1 = leaves_refused();
    trim();
    let fails0 = kmem::pressure_stats().failures;

    // Fill.
    let mut head = core::ptr::null_mut();
    let mut got = 0;
    let mut nulls = 0;
    while got < n {
        let p = kmem::raw::alloc(size, 16);
        if p.is_null() {
            nulls += 1;
            break;
        }
        // SAFETY: a fresh block of at least 16 bytes.
        unsafe { push(&mut head, p) };
        got += 1;
    }
    let peak = kmem::stats().unwrap();
    let fails1 = kmem::pressure_stats().failures;
    // Free (all, or all but keep_pct%), trim.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (n as u64);
    // SAFETY: built by push from live raw blocks.
    let (_, kept) = unsafe { free_list(head, keep_pct, &mut rng) };
    // Without the trim, the reclaim pass of the first large request that
    // fails must do the same.
    let trimmed = std::env::var("FRAG_TRIM").map_or(true, |v| v != "0");
    if trimmed {
        trim();
    }
    let after = kmem::stats().unwrap();
    let btag = kmem::btag_zone().unwrap().keg_info().unwrap();
    let bz = kmem::btag_zone().unwrap().stats();
    if std::env::var_os("FRAG_DEBUG").is_some() {
        let mut t = String::new();
        kmem::write_vmstat_z(&mut t).unwrap();
        kmem::meta_arena().unwrap().dump(&mut t).unwrap();
        kmem::kernel_arena().unwrap().dump(&mut t).unwrap();
        println!("{t}");
    }
    let (fits_plain, fits_leaf_first) = if trimmed {
        (
            fits_now(&mode, limit, cap, false),
            fits_now(&mode, limit, cap, true),
        )
    } else {
        (0, 0)
    };
    let refused2 = leaves_refused();
    let leaves2 = leaf_space();
    let b1 = probe(max);
    let leaves3 = leaf_space();
    let refused3 = leaves_refused();
    // A leaf the probe was refused (the chunks crossed into 4 GiB of
    // address space without one, and the leaf did not fit under the
    // limit): the figures' room held the leaf's 8 MiB first.
    let fits = if refused3 > refused2 {
        fits_leaf_first
    } else {
        fits_plain
    };
    // Under `RLIMIT_AS` a page-metadata leaf the probe had to map (about
    // 8 MiB of address space for each 4 GiB of address space touched:
    // whether the arena's chunks cross into another 4 GiB is up to where
    // ASLR puts them) takes room no figure could foresee.
    let (new_in_b1, new_since_b0) = if mode == "rlimit" {
        (
            (leaves3 - leaves2).div_ceil(MIB),
            (leaves3 - leaves1).div_ceil(MIB),
        )
    } else {
        (0, 0)
    };
    let fails2 = kmem::pressure_stats().failures;
    println!(
        "FRAG mode={mode} size={size} n={n} keep={keep_pct}% limit={}MiB: filled {got} ({} KiB arena in use at peak); \
         1MiB blocks before {b0}, after {b1}; after trim: arena {} KiB, in use {} KiB, largest free {} KiB, \
         {} busy segs, mapped {} KiB, munmaps {}; btag free {} (reserve {}, {} slabs, {} per slab); \
         failures counted fill {} probe {} (nulls fill {nulls}, probe 1); fit by the figures {fits}; \
         btag zone used {} pcpu {} buckets {}; meta arena {} KiB, in use {} KiB; \
         page-metadata leaves {} KiB, {} KiB, {} KiB, {} KiB (around each probe), \
         leaves refused {refused0}, {refused1}, {refused2}, {refused3}",
        limit / MIB,
        peak.arena.inuse / 1024,
        after.arena.size / 1024,
        after.arena.inuse / 1024,
        after.arena.largest_free / 1024,
        after.arena.busy_segments,
        after.os.mapped / 1024,
        after.os.unmap_calls,
        btag.free_items,
        btag.reserve,
        btag.slabs,
        btag.layout.ipers,
        fails1 - fails0,
        fails2 - fails1,
        bz.used,
        bz.cached_pcpu,
        bz.cached_buckets,
        after.meta.size / 1024,
        after.meta.inuse / 1024,
        leaves0 / 1024,
        leaves1 / 1024,
        leaves2 / 1024,
        leaves3 / 1024,
    );
    // Keep the kept blocks alive until the probe is over.
    // SAFETY: built by push from live raw blocks.
    unsafe { free_list(kept, 0, &mut rng) };

    // Every null counted as a pressure failure.
    assert!(fails1 - fails0 >= nulls, "a failed fill was not counted");
    if b1 < max {
        assert!(fails2 > fails1, "the failed probe was not counted");
    }
    // Once everything is freed, the btag zone holds a bounded number of
    // free tags after the trim: the reserve and a few slabs' worth, not one
    // per segment ever made. The few tags still in use (the spans left,
    // their free segments) stay in the slabs they were taken from during
    // the fill, one slab each at worst: tags do not move. (So with blocks
    // kept, the tags describing their slabs keep their btag slabs too.)
    let bound = btag.reserve + 8 * btag.layout.ipers;
    assert!(
        keep_pct > 0 || !trimmed || btag.free_items <= bound,
        "btag zone keeps {} free tags after a trim (bound {bound})",
        btag.free_items
    );
    // Every 1 MiB request that fits in what is left succeeds (one block of
    // slack for metadata the probe itself needs).
    assert!(
        b1 + 1 + new_in_b1 >= fits.min(max),
        "only {b1} 1 MiB blocks, {fits} fit by the figures ({new_in_b1} MiB of new leaves)"
    );
    if keep_pct == 0 {
        // Everything went back: every 1 MiB block the baseline got fits
        // again (two blocks of slack for allocator metadata: a chunk of the
        // metadata arena and a slab pinned by this thread's cache).
        assert!(
            b1 + 2 + new_since_b0 >= b0,
            "only {b1} of {b0} 1 MiB blocks after the fill ({new_since_b0} MiB of new leaves)"
        );
        // ... and the kernel arena holds next to nothing (no btag slab or
        // other metadata scattered among the freed slabs).
        assert!(
            !trimmed || after.arena.inuse <= 3 * kmem::CHUNK_SIZE,
            "kernel arena still holds {} KiB after freeing everything",
            after.arena.inuse / 1024
        );
    } else if mode == "limit" {
        // Under the memory limit the kept blocks leave the limit minus
        // what they hold: the arena has the address space to use it.
        let left = limit.saturating_sub(kmem::pressure_stats().committed) / MIB;
        assert!(
            b1 + 3 >= left.min(b0),
            "only {b1} 1 MiB blocks with {keep_pct}% kept, {left} MiB left under the limit"
        );
    }
}

/// Limit used by the tests (MiB). The figures use 150-200 MiB; a
/// smaller limit keeps a debug build's test time short and shows the same.
const LIMIT_MIB: usize = 64;

/// Blocks of `size` that a fill of `fraction` of the limit takes.
fn blocks(size: usize, fraction: f64) -> usize {
    ((LIMIT_MIB * MIB) as f64 * fraction / size as f64) as usize
}

fn scenario(mode: &str, size: usize, keep_pct: usize) {
    // Several N: a quarter of the limit, three quarters, and past the limit
    // (the fill stops at the first null).
    for fraction in [0.25, 0.75, 4.0] {
        run(mode, size, blocks(size, fraction), keep_pct, LIMIT_MIB);
    }
}

#[test]
fn fragment_64_bytes_under_memory_limit() {
    scenario("limit", 64, 0);
}

#[test]
fn fragment_3000_bytes_under_memory_limit() {
    scenario("limit", 3000, 0);
}

#[test]
fn fragment_64_bytes_under_address_space_limit() {
    scenario("rlimit", 64, 0);
}

#[test]
fn fragment_3000_bytes_under_address_space_limit() {
    scenario("rlimit", 3000, 0);
}

#[test]
fn fragment_one_percent_kept_under_memory_limit() {
    scenario("limit", 64, 1);
    scenario("limit", 3000, 1);
}

#[test]
fn fragment_one_percent_kept_under_address_space_limit() {
    scenario("rlimit", 64, 1);
    scenario("rlimit", 3000, 1);
}

/// No trim at all: the reclaim pass that runs before a large request fails
/// (at the memory limit, or when `mmap` is refused under `RLIMIT_AS`)
/// gives the space back by itself.
#[test]
fn fragment_reclaim_before_failure_without_trim() {
    for mode in ["limit", "rlimit"] {
        for size in [64, 3000] {
            run_with(mode, size, blocks(size, 4.0), 0, LIMIT_MIB, false, 0);
        }
    }
}

/// Someone else maps 2-4 MiB once the limit is set (CI once saw this: a
/// child lost 4 of its 60 1 MiB blocks, then failed the "fit by the
/// figures" check). The room left is then a few MiB short of a 4 MiB
/// import plus the 2 MiB slack of an aligned mapping, yet holds the import
/// itself: `map_aligned`'s exact-size tries must take it, so the baseline
/// is what it is without the stranger (and the child's own checks hold).
/// A page-metadata leaf the baseline's probe had to map (8 MiB of address
/// space: where the stranger's mapping moves the arena's chunks decides
/// whether they cross into another 4 GiB) is counted as blocks, and so is
/// one it was refused (the leaf did not fit under the limit: about one
/// child in 270 here, which then failed before the refusals were counted).
#[test]
fn fragment_under_address_space_limit_with_a_stranger_mapping() {
    // The baseline, plus the MiB of leaves mapped during its probe, or
    // refused to it (the chunks' 4 GiB of address space needed one).
    let baseline = |line: &str| -> usize {
        let number = |after: &str, nth: usize| -> usize {
            let at = line.find(after).expect(after) + after.len();
            let field = line[at..].split(", ").nth(nth).expect("field");
            let digits: String = field.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("a number")
        };
        let b0 = number("1MiB blocks before ", 0);
        let (l0, l1) = (
            number("page-metadata leaves ", 0),
            number("page-metadata leaves ", 1),
        );
        // (A refusal repeats at each try: one leaf, however many. The
        // probe misses the whole MiB the leaf would have taken: 8.)
        let refused = number("leaves refused ", 1) > number("leaves refused ", 0);
        b0 + (l1 - l0).div_ceil(1024) + usize::from(refused) * (LEAF_BYTES / MIB)
    };
    let n = blocks(3000, 4.0);
    let alone = baseline(&run_with("rlimit", 3000, n, 0, LIMIT_MIB, true, 0));
    for kib in [2100, 3900] {
        let with = baseline(&run_with("rlimit", 3000, n, 0, LIMIT_MIB, true, kib));
        // (One block of slack, as the child's checks have; without the
        // exact-size tries a stranger costs a whole 4 MiB import.)
        assert!(
            with + 1 >= alone,
            "{kib} KiB mapped by someone else: {with} 1 MiB blocks (new leaves counted), {alone} without"
        );
    }
}
