//! kmem: the kernel arena, malloc(9) and the Rust global allocator. Not built yet.
#![deny(unsafe_op_in_unsafe_fn)]
