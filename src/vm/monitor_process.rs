//! husk's own monitor as a process of its own: the container supervisor starts
//! `husk vm boot` for each VM, handing it the agent socket and a pipe for its exit report.
//! That process opens what the VM needs, jails itself (src/vmm/jail.rs) and runs the guest;
//! a guest that breaks out of the device emulation lands in a process with no files, no
//! network, no privileges and a seccomp filter on every thread, not in the supervisor that
//! holds the container records.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::backend::{Nic, VmPlan};
use super::virtiofs::Daemon;
use super::VmError;
use crate::vmm::{MonitorReport, VmExit};

/// The descriptors the monitor process finds its console socket and report pipe at.
const CONSOLE_FD: i32 = 3;
const REPORT_FD: i32 = 4;
/// And its tap, when the container is on a network.
const NET_FD: i32 = 5;
/// The most a report may be: a few counters and a line or two.
const REPORT_LIMIT: u64 = 64 << 10;

/// A running monitor process.
pub struct MonitorProcess {
    child: Child,
    report: File,
}

impl MonitorProcess {
    /// Start the monitor for `plan`; `console` becomes the VM's virtio-console port.
    /// Each of `shares` becomes a vhost-user virtio-fs device connected to its daemon.
    /// `nic` becomes its virtio-net device.
    pub fn spawn(
        plan: &VmPlan,
        console: UnixStream,
        shares: &[Daemon],
        nic: Option<Nic>,
    ) -> Result<Self, VmError> {
        let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| {
                VmError::io("creating", Path::new("the monitor's report pipe"))(e.into())
            })?;
        let log_path = plan.serial_log.with_file_name("monitor.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(VmError::io("opening", &log_path))?;
        let mut command = Command::new("/proc/self/exe");
        command
            .args(["vm", "boot", "--kernel"])
            .arg(&plan.kernel)
            .arg("--initrd")
            .arg(&plan.initrd)
            .args(["--memory", &format!("{}M", plan.memory_mib)])
            .args(["--cpus", &plan.vcpus.to_string()])
            .arg("--serial-log")
            .arg(&plan.serial_log)
            .args(["--console-fd", &CONSOLE_FD.to_string()])
            .args(["--report-fd", &REPORT_FD.to_string()])
            .args(["--seccomp", plan.monitor_seccomp.name()]);
        // vda is the image, vdb the writable disk (the agent finds them by name).
        for (disk, mode) in [(&plan.image_disk, "ro"), (&plan.writable_disk, "rw")] {
            if let Some(disk) = disk {
                command
                    .arg("--disk")
                    .arg(format!("{}:{mode}", disk.display()));
            }
        }
        for share in shares {
            let mut fs = std::ffi::OsString::from(format!("{}=", share.tag));
            fs.push(&share.socket);
            command.arg("--fs").arg(fs);
        }
        if let Some(nic) = &nic {
            command
                .args(["--net-fd", &NET_FD.to_string()])
                .args(["--net-mac", &nic.mac_text()])
                .args(["--net-mtu", &nic.mtu.to_string()]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let console_fd = console.as_raw_fd();
        let report_fd = report_write.as_raw_fd();
        // -1: no tap; the slot is then left alone.
        let net_fd = nic.map_or(-1, |nic| nic.tap.as_raw_fd());
        // SAFETY: between fork and exec the closure only calls async-signal-safe functions
        // (fcntl, dup2, prctl, setpgid) on descriptors that stay open until `spawn` returns.
        unsafe {
            command.pre_exec(move || {
                // First out of the way (any may already sit at 3, 4 or 5, where another is
                // about to go), then into place; dup2 leaves the copies without FD_CLOEXEC, so
                // exactly these cross exec.
                let mut moved = [-1; 3];
                for (slot, fd) in moved.iter_mut().zip([console_fd, report_fd, net_fd]) {
                    if fd < 0 {
                        continue;
                    }
                    *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                    if *slot < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (from, to) in moved.into_iter().zip([CONSOLE_FD, REPORT_FD, NET_FD]) {
                    if from >= 0 && libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // The VM dies with its supervisor, and a ^C at the terminal is the container's
                // (relayed by the supervisor), not the monitor's.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::setpgid(0, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(VmError::io("starting", Path::new("husk's monitor process")))?;
        drop(report_write);
        drop(console);
        Ok(MonitorProcess {
            child,
            report: File::from(report_read),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Wait up to `timeout` for the monitor to end on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// The ended monitor's report: how the VM stopped, or why the monitor could not run it.
    pub fn report(mut self) -> Result<VmExit, String> {
        let status = self
            .child
            .wait()
            .map_err(|e| format!("waiting for the monitor: {e}"))?;
        let mut text = String::new();
        let _ = (&mut self.report)
            .take(REPORT_LIMIT)
            .read_to_string(&mut text);
        match serde_json::from_str::<MonitorReport>(&text) {
            Ok(MonitorReport::Exited(exit)) => Ok(exit),
            Ok(MonitorReport::Failed(why)) => Err(format!("the monitor failed: {why}")),
            Err(_) => Err(match status.signal() {
                Some(libc::SIGSYS) => "the monitor was killed by its seccomp filter (a syscall \
                    outside its allow-list; HUSK_VMM_SECCOMP=log names it in the audit log)"
                    .to_string(),
                Some(sig) => format!("the monitor was killed by signal {sig}"),
                None => format!(
                    "the monitor exited with status {} without a report",
                    status.code().unwrap_or(-1)
                ),
            }),
        }
    }

    /// Stop the VM now: SIGTERM (the monitor stops its vCPUs and reports), then SIGKILL.
    pub fn stop(&mut self) {
        if self.is_finished() {
            return;
        }
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if !self.wait_exit(Duration::from_secs(2)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for MonitorProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
