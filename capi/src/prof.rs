//! The heap profiler from C: `BSDALLOC_PROF=heap,leaks` and the other
//! `BSDALLOC_PROF_*` variables (read by kmem when it builds itself; see
//! `kmem::prof`), and one exported function for on-demand profiles:
//!
//! ```c
//! int (*dump)(const char *) = dlsym(RTLD_DEFAULT, "bsdalloc_prof_dump");
//! if (dump) dump("/tmp/myprog");  /* .heap.pb.gz, .collapsed, .svg */
//! ```
//!
//! Every `free` of this library finds a sampled block by its page (see
//! `kmem::prof::unsized_frees_only`), so profiling keeps the fast frees.

use core::ffi::{c_char, c_int, CStr};

/// Writes the live heap profile to `<prefix>.heap.pb.gz`,
/// `<prefix>.collapsed` and `<prefix>.svg`: 0 on success, -1 with `errno`
/// set on failure (`EINVAL` for a null or non-UTF-8 prefix). Without
/// `BSDALLOC_PROF` the profile is empty.
///
/// # Safety
///
/// `prefix` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn bsdalloc_prof_dump(prefix: *const c_char) -> c_int {
    if prefix.is_null() {
        crate::set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: the caller's promise.
    let p = unsafe { CStr::from_ptr(prefix) };
    let Ok(p) = p.to_str() else {
        crate::set_errno(libc::EINVAL);
        return -1;
    };
    let saved = crate::errno();
    match kmem::prof::dump(p) {
        Ok(()) => {
            crate::set_errno(saved);
            0
        }
        Err(e) => {
            crate::set_errno(e.raw_os_error().unwrap_or(libc::EIO));
            -1
        }
    }
}
