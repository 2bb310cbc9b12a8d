//! Link flags of libbsdalloc.so.

fn main() {
    // Never unloaded: a dlclose would leave the pthread key destructor of
    // the per-thread caches (and any block handed out) dangling.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    // The unwinder (libgcc's, which std's panics, the heap profiler's
    // stacks and the debug mode's reports use) linked into the library,
    // ahead of std's `-lgcc_s`, so that `--as-needed` drops libgcc_s from
    // the library's needs: a C program under LD_PRELOAD no longer loads it
    // and runs its constructor (`__cpu_indicator_init`: a dozen CPUID
    // instructions, each a trap to the hypervisor in a VM), about 150 us
    // of every process's start. Its symbols stay local (rustc's version
    // script exports only our entry points), so a C++ program's exceptions
    // are libgcc_s's as before; none of them passes through a frame of
    // ours that has a personality routine (`operator new`'s frames have
    // none).
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
