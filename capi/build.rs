//! Link flags of libbsdalloc.so.

fn main() {
    // Never unloaded: a dlclose would leave the pthread key destructor of
    // the per-thread caches (and any block handed out) dangling.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rerun-if-changed=build.rs");
}
