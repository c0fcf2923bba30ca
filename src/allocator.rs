//! Options of the global allocator (mimalloc), shared by the binary and the benches so that
//! they measure the same thing.

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t`, the same in mimalloc 2
/// and 3; `libmimalloc-sys` does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed memory stays mapped before mimalloc returns it to the kernel. Its default
/// (10 ms) returned the writer's batch buffers between groups, so every group faulted fresh
/// zeroed pages back in (242k-279k page faults in a 1M-transfer benchmark). 1 s still left
/// 30k-36k faults there and 1.05M over 10M transfers, with the kernel zeroing pages at ~20% of
/// all CPU samples: the indexer's and the snapshot's buffers are reused less often than once a
/// second. 10 s leaves ~800 and ~117k, for ~15% more resident memory at the peak (BENCHMARKS.md,
/// "mimalloc's purge delay"). Memory idle for 10 s still goes back to the kernel.
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets the allocator's options, unless the operator set them (`MIMALLOC_PURGE_DELAY`). Call it
/// first in `main`.
pub fn set_options() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set only stores an integer option; any value is valid for this one.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS) };
    }
}
