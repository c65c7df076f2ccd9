//! The one place that names `std` or `loom` atomics.
//!
//! Every lock-free protocol in shmq uses the types re-exported here. A normal build gets the
//! `std` atomics, which have the same size and alignment as the integers they wrap and so can be
//! overlaid on a shared mapping. Under `RUSTFLAGS="--cfg shmq_loom"` the same code is compiled
//! against `loom`, which explores every interleaving the C11 memory model allows. The cfg is
//! namespaced (`shmq_loom`, not `loom`) so that it does not switch our dependencies into their own
//! loom mode as well.
//!
//! loom atomics are handles into loom's model and cannot live in mmap'd memory. The algorithms
//! therefore operate on a `&RingCtl` made of these atomics: production code casts the mapped bytes
//! to it (see `segment.rs`), loom tests allocate it on the heap.

#[cfg(not(shmq_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(shmq_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Spin-wait hint. Under loom a spin must yield to the scheduler, or the model never makes
/// progress.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(shmq_loom))]
    std::hint::spin_loop();
    #[cfg(shmq_loom)]
    loom::thread::yield_now();
}

/// Give the CPU away for a moment (used in the spin phase of blocking calls so that a peer
/// pinned to the same CPU can run).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(shmq_loom))]
    std::thread::yield_now();
    #[cfg(shmq_loom)]
    loom::thread::yield_now();
}
