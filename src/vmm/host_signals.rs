//! SIGTERM/SIGINT delivered to the monitor process stop every running VM cleanly: the handler
//! only writes to the eventfds of the running VMs (async-signal-safe), the event loops do the rest.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use super::bus::lock;

const SLOTS: usize = 32;
static WAKE_FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
/// The last stop signal received (0 = none).
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Number of live guards and the dispositions to restore when the last one goes.
static INSTALL: Mutex<(usize, [libc::sighandler_t; 2])> = Mutex::new((0, [0; 2]));

pub const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

extern "C" fn on_stop_signal(sig: libc::c_int) {
    LAST_SIGNAL.store(sig, Ordering::SeqCst);
    let one: u64 = 1;
    for slot in &WAKE_FDS {
        let fd = slot.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: write(2) is async-signal-safe; `one` outlives the call and fd is an
            // eventfd registered by a live `SignalGuard` (a stale fd only gets a harmless write).
            unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("more than {SLOTS} VMs in one process")]
    TooManyVms,
    #[error("installing the SIGTERM/SIGINT handler: {0}")]
    Sigaction(std::io::Error),
}

/// While alive, SIGTERM/SIGINT write to `fd`.
pub struct SignalGuard {
    slot: usize,
}

impl SignalGuard {
    pub fn new(fd: RawFd) -> Result<Self, SignalError> {
        let mut installed = lock(&INSTALL);
        let slot = WAKE_FDS
            .iter()
            .position(|s| {
                s.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .ok_or(SignalError::TooManyVms)?;
        if installed.0 == 0 {
            LAST_SIGNAL.store(0, Ordering::SeqCst);
            for (i, sig) in STOP_SIGNALS.into_iter().enumerate() {
                // SAFETY: the handler only touches atomics and calls write(2).
                let prev =
                    unsafe { libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t) };
                if prev == libc::SIG_ERR {
                    WAKE_FDS[slot].store(-1, Ordering::SeqCst);
                    return Err(SignalError::Sigaction(std::io::Error::last_os_error()));
                }
                installed.1[i] = prev;
            }
        }
        installed.0 += 1;
        Ok(SignalGuard { slot })
    }

    /// The signal that arrived, if any.
    pub fn received() -> Option<i32> {
        match LAST_SIGNAL.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let mut installed = lock(&INSTALL);
        WAKE_FDS[self.slot].store(-1, Ordering::SeqCst);
        installed.0 -= 1;
        if installed.0 == 0 {
            for (i, sig) in STOP_SIGNALS.into_iter().enumerate() {
                // SAFETY: restoring the disposition signal(2) returned when we installed ours.
                unsafe { libc::signal(sig, installed.1[i]) };
            }
        }
    }
}
