//! `uma::source::map_aligned` under an address-space limit
//! (`RLIMIT_AS`, `ulimit -v`): when the over-mapping's slack does not fit
//! but the aligned block itself does, the block is still mapped.
//!
//! The limit is set in a forked child (it binds the whole process), which
//! makes only system calls and exits with `_exit`; the parent reads the
//! verdict from the exit status.
#![cfg(not(loom))]

const MIB: usize = 1 << 20;

/// `VmSize` of this process, in bytes, read with system calls only (no
/// allocation, no lock: safe in the child of a multi-threaded fork); 0 if
/// it cannot be read.
fn vm_size() -> usize {
    let mut buf = [0u8; 8192];
    // SAFETY: a NUL-terminated path; `buf` is writable for its length; the
    // descriptor is ours and closed.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let text = &buf[..n.max(0) as usize];
    let key = b"VmSize:";
    let Some(at) = text.windows(key.len()).position(|w| w == key) else {
        return 0;
    };
    let kib = text[at + key.len()..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .fold(0usize, |v, b| v * 10 + (b - b'0') as usize);
    kib * 1024
}

/// In a child under `RLIMIT_AS` = address space in use + `room`: maps
/// `size` bytes aligned to `align`, checks the alignment and writes the
/// block. Exit status: 0 mapped, 1 refused, 2 misaligned, 3 setrlimit
/// failed, 4 an over-mapping succeeded (the limit did not bind), 5
/// `VmSize` unreadable. The child reads its own `VmSize` after the fork:
/// read in the parent, another test thread's mapping made before the fork
/// (a thread's malloc arena is 64 MiB of address space) counted in the
/// child and not in the limit, which then refused the block (CI, once).
fn child_status(size: usize, align: usize, room: usize) -> i32 {
    // SAFETY: fork; the child makes only system calls (no allocation, no
    // lock another thread may hold) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let vm = vm_size();
        if vm == 0 {
            // SAFETY: leaves the child.
            unsafe { libc::_exit(5) };
        }
        let cap = vm + room;
        let rl = libc::rlimit {
            rlim_cur: cap as libc::rlim_t,
            rlim_max: cap as libc::rlim_t,
        };
        // SAFETY: setrlimit with a valid struct; mmap/munmap of our own
        // anonymous mappings; _exit.
        unsafe {
            if libc::setrlimit(libc::RLIMIT_AS, &rl) != 0 {
                libc::_exit(3);
            }
            // The limit binds: the over-mapping's length does not fit.
            let len = size + align - 4096;
            let p = libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                libc::_exit(4);
            }
            let code = match uma::source::map_aligned(size, align, true) {
                None => 1,
                Some(p) if p.as_ptr() as usize % align != 0 => 2,
                Some(p) => {
                    core::ptr::write_bytes(p.as_ptr(), 0xa5, size);
                    0
                }
            };
            libc::_exit(code);
        }
    }
    let mut status = 0;
    // SAFETY: our child's pid, a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    libc::WEXITSTATUS(status)
}

#[test]
fn aligned_block_fits_where_the_over_mapping_does_not() {
    // 4 MiB aligned to 16 MiB with 12 MiB of room: the over-mapping needs
    // almost 20 MiB, the block 4 MiB (8 MiB of margin).
    let code = child_status(4 * MIB, 16 * MIB, 12 * MIB);
    assert_eq!(
        code, 0,
        "child exit {code} (1 refused, 2 misaligned, 3 setrlimit, 4 no binding limit, 5 no VmSize)"
    );
}

#[test]
fn unaligned_request_without_room_is_refused() {
    // Less room than the block: refused, not mapped past the limit.
    let code = child_status(16 * MIB, 2 * MIB, 4 * MIB);
    assert_eq!(
        code, 1,
        "child exit {code}: a 16 MiB block under 4 MiB of room"
    );
}
