//! The C allocator, set for training: freed memory stays with the process.
//!
//! A training step allocates and frees hundreds of tensors of several megabytes. glibc serves blocks
//! above its mmap threshold (128 KB, raised adaptively up to 32 MB) with fresh mappings and unmaps them
//! on free, and trims the heap's top; every step then pays page faults and the kernel's zeroing of the
//! same pages again: about a quarter of a features-stage step's CPU time went to the kernel
//! (docs/model.md, "Training speed"). Serving blocks up to 32 MB from the heap and never trimming it
//! keeps those pages mapped; the heap stays at its peak, which a training run reaches within its first
//! steps anyway.

/// Largest block served from the heap (glibc's own ceiling for this setting on 64-bit).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Keeps freed memory in the process for reuse (see the module's doc). Process-wide; for commands that
/// train, not for the daemon, whose memory should shrink after a burst.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation parameters; it is called before the training
    // threads start and takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}
