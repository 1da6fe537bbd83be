//! The node process's memory: transparent huge pages off.
//!
//! mimalloc (the `weft` binary's allocator) asks the kernel for
//! transparent huge pages on its arenas (`MADV_HUGEPAGE`), so the first
//! touch of a fresh region zeroes 2 MiB at once, though the node's
//! allocations are small. Every node of a mesh fills gossipsub's message
//! caches at the same pace, so their tables grow, and fault in fresh huge
//! pages, at the same moment on every node: with 50 nodes on one 2-core
//! machine, these faults held both cores for a quarter of a second at a
//! time, and an update pushed then took 177 ms instead of 20 to reach
//! every node (BENCHMARKS.md, "Propagation"). With huge pages off a fault
//! zeroes 4 KiB; a heap of tens of MiB gains little from huge pages.

/// Turns transparent huge pages off for this process (Linux; elsewhere,
/// and where the kernel refuses, nothing changes). Affects the faults
/// that follow, whatever mimalloc asked for its arenas.
pub fn small_pages() {
    #[cfg(target_os = "linux")]
    if let Err(err) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(%err, "cannot turn transparent huge pages off");
    }
}
