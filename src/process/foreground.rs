//! `husk run` in the foreground: start the container, relay signals, and for `-t` bridge the
//! host terminal (raw mode, window size) to the container's pty until it exits.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};

use super::{io, spawn, sys, Container, ExitInfo, LaunchConfig, ProcessError};
use crate::container::spec::ANNOTATION_INTERACTIVE;

/// Signals a user sends to `husk run` that belong to the container.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Restores the calling thread's signal mask.
struct MaskGuard(SigSet);

impl Drop for MaskGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Restores the host terminal's settings.
pub struct RawModeGuard {
    fd: OwnedFd,
    saved: Termios,
}

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

fn stdout() -> BorrowedFd<'static> {
    // SAFETY: fd 1 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(1) }
}

/// Spawn, forward SIGINT/TERM/HUP/QUIT/USR1/USR2 to the container, bridge the terminal for
/// `-t` (raw mode, SIGWINCH -> TIOCSWINSZ), wait, clean up. Returns Docker's exit code and
/// whether the OOM killer acted.
///
/// `on_started` sees the container right after it exec'd (husk records its pid there).
pub fn run_foreground(
    cfg: &LaunchConfig,
    on_started: impl FnOnce(&Container),
) -> Result<ExitInfo, ProcessError> {
    run_foreground_logged(cfg, on_started, |_| {})
}

/// [`run_foreground`], also handing everything the container's terminal prints to
/// `on_output` (husk keeps it in the container's log, as Docker does for attached runs).
pub fn run_foreground_logged(
    cfg: &LaunchConfig,
    on_started: impl FnOnce(&Container),
    mut on_output: impl FnMut(&[u8]),
) -> Result<ExitInfo, ProcessError> {
    let mut mask = SigSet::empty();
    for signal in FORWARDED {
        mask.add(signal);
    }
    mask.add(Signal::SIGWINCH);
    // Blocked before the spawn so nothing sent meanwhile is lost; the init unblocks its own.
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .map_err(sys("blocking signals"))?;
    let _mask_guard = MaskGuard(old);
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(sys("creating a signalfd"))?;

    let mut container = spawn(cfg)?;
    on_started(&container);
    let exited = pidfd(&container)?;
    let master = container.pty_master.take();
    let interactive = cfg
        .spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_INTERACTIVE))
        .is_some_and(|v| v == "true");

    let _raw = match &master {
        Some(master) => {
            copy_window_size(master);
            enter_raw_mode()
        }
        None => None,
    };
    let mut stdin_open = master.is_some() && interactive;
    let mut master_open = master.is_some();
    let mut buf = vec![0u8; 32 * 1024];

    loop {
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(exited.as_fd(), PollFlags::POLLIN),
        ];
        if let (Some(m), true) = (&master, master_open) {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        let stdin_index = fds.len();
        if stdin_open {
            fds.push(PollFd::new(stdin(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(ProcessError::Sys {
                    op: "poll",
                    source: e,
                })
            }
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (sig_ready, exit_ready, master_ready, stdin_ready) = (
            ready(0),
            ready(1),
            master_open && ready(2),
            stdin_open && ready(stdin_index),
        );
        drop(fds);

        if sig_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGWINCH) => {
                        if let Some(m) = &master {
                            copy_window_size(m);
                        }
                    }
                    Ok(signal) => {
                        let _ = container.signal(signal as i32);
                    }
                    Err(_) => {}
                }
            }
        }
        if master_ready {
            if let Some(m) = &master {
                master_open = copy_teed(m.as_fd(), &mut buf, &mut on_output);
            }
        }
        if stdin_ready {
            if let Some(m) = &master {
                stdin_open = copy_once(stdin(), m.as_fd(), &mut buf);
            }
        }
        if exit_ready {
            if let Some(m) = &master {
                drain(m, &mut buf, &mut on_output);
            }
            return wait_exited(container);
        }
    }
}

fn wait_exited(container: Container) -> Result<ExitInfo, ProcessError> {
    container.wait_detailed()
}

/// A pidfd becomes readable when the process exits, independent of SIGCHLD delivery.
fn pidfd(container: &Container) -> Result<OwnedFd, ProcessError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, container.pid(), 0) };
    if fd < 0 {
        return Err(io("pidfd_open")(std::io::Error::last_os_error()));
    }
    // SAFETY: pidfd_open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// From the pty master to our stdout, and to `on_output`; false once the container side closed.
fn copy_teed(from: BorrowedFd, buf: &mut [u8], on_output: &mut impl FnMut(&[u8])) -> bool {
    match nix::unistd::read(from.as_raw_fd(), buf) {
        Ok(0) => false,
        Ok(n) => {
            on_output(&buf[..n]);
            write_all(stdout(), &buf[..n])
        }
        Err(nix::Error::EINTR) | Err(nix::Error::EAGAIN) => true,
        Err(_) => false,
    }
}

/// One read and a full write; false once the source reports EOF or an error (EIO on a pty
/// master means the container side closed).
fn copy_once(from: BorrowedFd, to: BorrowedFd, buf: &mut [u8]) -> bool {
    match nix::unistd::read(from.as_raw_fd(), buf) {
        Ok(0) => false,
        Ok(n) => write_all(to, &buf[..n]),
        Err(nix::Error::EINTR) | Err(nix::Error::EAGAIN) => true,
        Err(_) => false,
    }
}

fn write_all(to: BorrowedFd, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match nix::unistd::write(to, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::Error::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Output the container wrote right before exiting is still buffered in the pty.
fn drain(master: &OwnedFd, buf: &mut [u8], on_output: &mut impl FnMut(&[u8])) {
    let flags = nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map(nix::fcntl::OFlag::from_bits_truncate)
        .unwrap_or(nix::fcntl::OFlag::empty());
    let _ = nix::fcntl::fcntl(
        master.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK),
    );
    loop {
        match nix::unistd::read(master.as_raw_fd(), buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                on_output(&buf[..n]);
                if !write_all(stdout(), &buf[..n]) {
                    break;
                }
            }
        }
    }
}

/// Put the host terminal (stdin) in raw mode until the guard drops; None when stdin is not a
/// terminal.
pub fn enter_raw_mode() -> Option<RawModeGuard> {
    if !nix::unistd::isatty(0).unwrap_or(false) {
        return None;
    }
    let fd = stdin().try_clone_to_owned().ok()?;
    let saved = termios::tcgetattr(&fd).ok()?;
    let mut raw = saved.clone();
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(&fd, SetArg::TCSANOW, &raw).ok()?;
    Some(RawModeGuard { fd, saved })
}

/// The host terminal's size (rows, cols), when stdin is a terminal.
pub fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data; all-zero is a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes into the winsize we own; it fails harmlessly on a non-tty.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// The OCI `consoleSize` of our own terminal, for a process that gets a pty.
pub fn console_size() -> Option<oci_spec::runtime::Box> {
    let (rows, cols) = terminal_size()?;
    oci_spec::runtime::BoxBuilder::default()
        .height(u64::from(rows))
        .width(u64::from(cols))
        .build()
        .ok()
}

/// Keeps the pty behind a master the size of our own terminal (stdin) while it lives: a
/// thread takes each SIGWINCH and copies the new size. SIGWINCH is blocked in the calling
/// thread first, so threads started after it (a stdin copier) leave it to sigwait; one that
/// existed before keeps SIGWINCH's default, which is to ignore it.
pub struct WindowFollower {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<(nix::sys::pthread::Pthread, std::thread::JoinHandle<()>)>,
}

impl WindowFollower {
    pub fn start(master: &OwnedFd) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGWINCH);
        let master = match (mask.thread_block(), master.try_clone()) {
            (Ok(()), Ok(master)) => master,
            _ => return Self { done, thread: None },
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::clone(&done);
        let handle = std::thread::spawn(move || {
            let _ = tx.send(nix::sys::pthread::pthread_self());
            while mask.wait().is_ok() && !stop.load(Ordering::SeqCst) {
                copy_window_size(&master);
            }
        });
        let thread = rx.recv().ok().map(|pthread| (pthread, handle));
        Self { done, thread }
    }
}

impl Drop for WindowFollower {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some((pthread, handle)) = self.thread.take() {
            let _ = nix::sys::pthread::pthread_kill(pthread, Signal::SIGWINCH);
            let _ = handle.join();
        }
    }
}

/// Give the pty behind `master` `rows` x `cols` (the kernel sends its foreground process
/// group SIGWINCH).
pub fn set_window_size(master: &impl AsRawFd, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we own; on anything but a tty it fails harmlessly.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}

/// Give the pty behind `master` the size of our own terminal (stdin), when it is one.
pub fn copy_window_size(master: &OwnedFd) {
    // SAFETY: winsize is plain data; all-zero is a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes into the winsize we own; it fails harmlessly on a non-tty.
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) } == 0 {
        // SAFETY: TIOCSWINSZ reads the winsize we own from a pty master we hold.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
}
