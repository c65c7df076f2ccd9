//! Linux: `SYS_futex` with plain FUTEX_WAIT / FUTEX_WAKE (no private flag), relative timeouts
//! recomputed from the caller's deadline after every EINTR.

use super::Wake;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

/// Sleep while `*word == expected`, until woken or `deadline` passes.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Wake {
    loop {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let ts_ptr = match deadline {
            None => std::ptr::null(),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Wake::TimedOut;
                }
                let left = d - now;
                ts.tv_sec = left.as_secs().min(i64::MAX as u64) as libc::time_t;
                ts.tv_nsec = left.subsec_nanos() as libc::c_long;
                &ts as *const libc::timespec
            }
        };
        // SAFETY: `word` is a live, 4-byte aligned AtomicU32 (in a shared mapping or on the
        // heap) for the duration of the call; the kernel only reads it. `ts_ptr` is null or
        // points to `ts`, which outlives the call. FUTEX_WAIT without the private-futex flag keys the
        // wait on the physical page, so a wake from another process reaches us.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                ts_ptr,
                std::ptr::null::<u32>(),
                0u32,
            )
        };
        if rc == 0 {
            return Wake::Woken;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue, // restart with the time that is left
            Some(libc::ETIMEDOUT) => return Wake::TimedOut,
            // EAGAIN: the word changed before we slept. Anything else: let the caller re-check.
            _ => return Wake::Woken,
        }
    }
}

/// Wake every thread of every process sleeping on `word`. Returns how many were woken.
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    // SAFETY: as in `wait`; FUTEX_WAKE does not dereference anything but the futex address.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc < 0 { 0 } else { rc as usize }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wait_returns_at_once_when_the_value_differs() {
        let w = AtomicU32::new(5);
        assert_eq!(wait(&w, 4, None), Wake::Woken);
    }

    #[test]
    fn wait_times_out_when_nobody_wakes() {
        let w = AtomicU32::new(5);
        let t0 = Instant::now();
        assert_eq!(wait(&w, 5, Some(t0 + Duration::from_millis(20))), Wake::TimedOut);
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn wake_reports_the_sleeper_it_woke() {
        let w = std::sync::Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let t = std::thread::spawn(move || wait(&w2, 0, Some(Instant::now() + Duration::from_secs(10))));
        // Keep waking until the sleeper has actually been counted by the kernel.
        let t0 = Instant::now();
        let mut woken = 0;
        while woken == 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
            woken = wake_all(&w);
        }
        assert_eq!(woken, 1, "FUTEX_WAKE must find exactly the one sleeper");
        assert_eq!(t.join().unwrap(), Wake::Woken);
    }
}
