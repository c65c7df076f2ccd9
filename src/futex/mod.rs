//! Cross-process wait/wake on a 32-bit word in shared memory, one small module per OS.
//!
//! Only the *shared* futex operations are used: a private futex (the flag that `atomic-wait`
//! and `parking_lot_core` always set) is keyed by the process's own address space and never
//! wakes a waiter in another process.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{wait, wake_all};

#[cfg(not(target_os = "linux"))]
compile_error!(
    "shmq has a futex backend for Linux only so far (macOS: os_sync_wait_on_address with OS_SYNC_WAIT_ON_ADDRESS_SHARED is planned)"
);

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Woken, or the word no longer held the expected value, or a spurious return: re-check.
    Woken,
    /// The deadline passed.
    TimedOut,
}
