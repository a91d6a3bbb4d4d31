//! VM isolation behind [`Sandbox`]: the container's process runs in a microVM under the guest
//! agent (src/vm); this husk process holds the VM and supervises it (vm/supervisor.rs), and
//! the other operations reach the guest through the supervisor's control socket.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use oci_spec::runtime::Process;
use rootfs_agent::client::{ClientError, ProcessIo};
use rootfs_agent::protocol::{ExitStatus, ProcessSpec};

use super::{ExecIo, RunContext, RunExit, RunIo, Sandbox, SharedLog, Target};
use crate::container::logs::{Stream, Tee};
use crate::container::spec::{NetworkMode, SpecOptions};
use crate::container::{Isolation, Record};
use crate::cost::Phase;
use crate::runtime::archive::{self, Bounded};
use crate::runtime::container::StartFailure;
use crate::runtime::{RuntimeConfig, RuntimeError};
use crate::vm::backend::{self, Guest};
use crate::vm::control::{self, ExecRequest};
use crate::vm::supervisor::{self, MonitorCgroup, Supervision};
use crate::vm::VmError;

pub struct VmSandbox;

impl Sandbox for VmSandbox {
    fn isolation(&self) -> Isolation {
        Isolation::Vm
    }

    fn validate(&self, options: &SpecOptions, _: &RuntimeConfig) -> Result<(), RuntimeError> {
        if !options.devices.is_empty() {
            return Err(RuntimeError::Refused(
                "--device is not supported with --isolation vm: the guest has its own devices"
                    .into(),
            ));
        }
        if options.network == NetworkMode::Host {
            return Err(RuntimeError::Refused(
                "--network host is not supported with --isolation vm: the guest has its own \
                 kernel and network stack; use --network none"
                    .into(),
            ));
        }
        if let NetworkMode::Container(_) = options.network {
            return Err(RuntimeError::Refused(
                "--network container: is not supported with --isolation vm: a VM's network \
                 stack is its own kernel's; put both containers on one network instead"
                    .into(),
            ));
        }
        Ok(())
    }

    fn first_phase(&self) -> Phase {
        Phase::MonitorBuild
    }

    fn run(&self, ctx: &RunContext, io: RunIo) -> Result<RunExit, StartFailure> {
        // Blocked in every thread (the monitor's threads inherit the mask) and taken by the
        // relay.
        let mut mask = SigSet::empty();
        for signal in crate::process::FORWARDED {
            mask.add(signal);
        }
        mask.add(Signal::SIGWINCH);
        let mut old_mask = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask))
            .map_err(RuntimeError::from)?;
        let result = run_in_guest(ctx, io, mask);
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
        let exit = result.map_err(|err| StartFailure {
            code: 125,
            message: err.to_string(),
        })?;
        Ok(RunExit {
            code: exit.code,
            oom_killed: exit.oom_killed,
        })
    }

    fn signal(&self, record: &Record, signal: Signal) -> Result<(), RuntimeError> {
        if supervisor::send_signal(&record.id, signal) {
            return Ok(());
        }
        // No supervisor answers: the VM's monitor is what is left of the container, and a
        // signal to it ends the VM with the process in it.
        super::signal_host_process(record, signal)
    }

    fn exec(&self, target: &Target, process: &Process, io: ExecIo) -> Result<i32, RuntimeError> {
        let layers = crate::runtime::container::layer_dirs(target.root, target.record)?;
        let request = ExecRequest {
            // The container's own confinement (capabilities, no_new_privs, seccomp, rlimits),
            // as `exec` gets it under process isolation and with Docker.
            process: backend::process_spec(
                target.spec,
                process,
                &layers,
                backend::terminal_size(),
            )?,
            interactive: io.interactive && !io.detach,
            kill_on_hangup: false,
            // With a terminal, `husk exec -it`'s window changes follow it into the guest.
            session: (process.terminal().unwrap_or(false) && !io.detach)
                .then(control::new_session)
                .flatten(),
        };
        if io.detach {
            supervisor::exec_via_supervisor(
                &target.record.id,
                request,
                None,
                &mut std::io::sink(),
                &mut std::io::sink(),
                true,
            )?;
            return Ok(0);
        }
        let _raw = process
            .terminal()
            .unwrap_or(false)
            .then(crate::process::enter_raw_mode)
            .flatten();
        let stdin = request
            .interactive
            .then(|| Box::new(std::io::stdin()) as Box<dyn Read + Send>);
        Ok(supervisor::exec_via_supervisor(
            &target.record.id,
            request,
            stdin,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
            false,
        )?)
    }

    fn top(&self, target: &Target, ps_options: &[String]) -> Result<i32, RuntimeError> {
        // The processes live in the guest: ask its own ps, through the agent.
        let mut command = vec!["ps".to_string()];
        command.extend(ps_options.iter().cloned());
        Ok(supervisor::exec_via_supervisor(
            &target.record.id,
            helper_request(target, command, false),
            None,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
            false,
        )?)
    }

    fn copy_in(&self, target: &Target, source: &Path, path: &Path) -> Result<(), RuntimeError> {
        require_running_guest(target.record)?;
        let (parent, name) = parent_and_name(path);
        // Into an existing directory the copy keeps its name; otherwise it takes the new one.
        let is_dir = in_guest(
            target,
            vec!["test".into(), "-d".into(), path.display().to_string()],
            None,
            &mut std::io::sink(),
        )
        .is_ok();
        let (target_dir, entry_name) = if is_dir {
            (path.display().to_string(), None)
        } else {
            (parent, Some(name))
        };
        let mut tar = Vec::new();
        archive::send(source, &mut tar)?;
        if let Some(entry_name) = entry_name {
            tar = archive::rename_top_entry(&tar, &entry_name)?;
        }
        in_guest(
            target,
            vec![
                "tar".into(),
                "-xf".into(),
                "-".into(),
                "-C".into(),
                target_dir,
            ],
            Some(Box::new(std::io::Cursor::new(tar))),
            &mut std::io::sink(),
        )
    }

    fn resize(&self, target: &Target, rows: u16, cols: u16) -> bool {
        supervisor::send_process_resize(&target.record.id, rows, cols)
    }

    fn stat(&self, target: &Target, path: &Path) -> Result<archive::PathStat, RuntimeError> {
        stat_in_guest(target, path)
    }

    fn copy_out(&self, target: &Target, path: &Path, dest: &Path) -> Result<(), RuntimeError> {
        require_running_guest(target.record)?;
        let (parent, name) = parent_and_name(path);
        // The guest decides how much its tar sends, so the stream goes to an unnamed file
        // beside the destination (not to memory), and only up to a bound; nothing is placed
        // until it has ended well.
        let dest_dir = if dest.is_dir() {
            dest.to_path_buf()
        } else {
            match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            // O_TMPFILE: a file with no name, gone with its last descriptor, even after a kill.
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_TMPFILE)
                .open(&dest_dir)
                .map_err(RuntimeError::io(format!(
                    "creating a staging file in {}",
                    dest_dir.display()
                )))?
        };
        let limit = target.config.cp_max_bytes;
        let mut staged = Bounded {
            inner: std::io::BufWriter::new(file),
            room: limit,
        };
        in_guest(
            target,
            vec![
                "tar".into(),
                "-cf".into(),
                "-".into(),
                "-C".into(),
                parent,
                name,
            ],
            None,
            &mut staged,
        )
        .map_err(|err| {
            if staged.room == 0 {
                RuntimeError::Failed(format!(
                    "the guest's tar stream passed {limit} bytes: copy stopped, nothing written"
                ))
            } else {
                err
            }
        })?;
        let mut file = staged
            .inner
            .into_inner()
            .map_err(|e| RuntimeError::io("writing the staging file")(e.into_error()))?;
        std::io::Seek::rewind(&mut file).map_err(RuntimeError::io("reading the staging file"))?;
        archive::place(file, dest)
    }
}

fn require_running_guest(record: &Record) -> Result<(), RuntimeError> {
    crate::runtime::container::require_running(record).map_err(|_| {
        RuntimeError::State(
            "cp with --isolation vm needs the container running (its disk lives in the guest)"
                .into(),
        )
    })
}

/// lstat in the guest, by the image's own `stat` (as `cp` uses its tar): `%f %s %Y` are the
/// raw mode in hex, the size and the mtime, and a symlink's target comes from `readlink`.
fn stat_in_guest(target: &Target, path: &Path) -> Result<archive::PathStat, RuntimeError> {
    require_running_guest(target.record)?;
    let shown = path.display().to_string();
    let mut out = Bounded {
        inner: Vec::new(),
        room: 4096,
    };
    in_guest(
        target,
        vec!["stat".into(), "-c".into(), "%f %s %Y".into(), shown.clone()],
        None,
        &mut out,
    )?;
    let line = String::from_utf8_lossy(&out.inner).trim().to_string();
    let mut stat = archive::PathStat::decode(&format!("{line} {}", archive::base_name(path)))?;
    if stat.mode & libc::S_IFMT == libc::S_IFLNK {
        let mut link = Bounded {
            inner: Vec::new(),
            room: 4096,
        };
        in_guest(target, vec!["readlink".into(), shown], None, &mut link)?;
        stat.link_target = String::from_utf8_lossy(&link.inner).trim_end().to_string();
    }
    Ok(stat)
}

fn parent_and_name(path: &Path) -> (String, String) {
    let parent = path
        .parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into());
    (parent, name)
}

/// A root process in the container's guest with the container's environment, for husk's own
/// use (`top`, `cp`): killed when husk stops reading it.
fn helper_request(target: &Target, args: Vec<String>, interactive: bool) -> ExecRequest {
    let env = target
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let mut process = ProcessSpec::new(args);
    process.env = env;
    ExecRequest {
        process,
        interactive,
        kill_on_hangup: true,
        session: None,
    }
}

/// Run one of husk's helpers in the guest; what it says on stderr is kept, within a bound, for
/// the error line.
fn in_guest(
    target: &Target,
    command: Vec<String>,
    stdin: Option<Box<dyn Read + Send>>,
    stdout: &mut dyn std::io::Write,
) -> Result<(), RuntimeError> {
    let request = helper_request(target, command, stdin.is_some());
    let mut errors = Bounded {
        inner: Vec::new(),
        room: 64 << 10,
    };
    let code = supervisor::exec_via_supervisor(
        &target.record.id,
        request,
        stdin,
        stdout,
        &mut errors,
        false,
    )?;
    if code != 0 {
        return Err(RuntimeError::Failed(format!(
            "in the guest: {}",
            String::from_utf8_lossy(&errors.inner).trim()
        )));
    }
    Ok(())
}

/// Boot the container's VM, run its process, supervise it until it exits.
fn run_in_guest(ctx: &RunContext, io: RunIo, mask: SigSet) -> Result<ExitStatus, VmError> {
    let record = ctx.state.record;
    let cost = ctx.cost;
    let dir = ctx.state.dir();
    let plan = backend::plan(
        &ctx.config.vm,
        ctx.root,
        &dir,
        &record.id,
        &record.image_id,
        ctx.layers,
        &record.options,
    )?;
    // Held until the container has exited: its tap, reserved ports and endpoint.
    let hostname = ctx.spec.hostname().clone().unwrap_or_default();
    let attachment = crate::network::attach(ctx.root, record, &dir, &hostname)
        .map_err(|e| VmError::Invalid(e.to_string()))?;
    let join = attachment.as_ref().map(|a| a.join());
    let request = backend::start_request(ctx.spec, ctx.layers, &plan.guest_mounts, join)?;
    let nic = join
        .and_then(|j| j.tap())
        .map(|(tap, interface)| backend::Nic {
            tap,
            mac: interface.mac,
            mtu: interface.mtu,
        });
    cost.note_vm(plan.hypervisor.name(), plan.memory_mib);
    let guest = Guest::boot(&plan, nic, cost)?;
    cost.note_monitor_pid(guest.monitor_pid());
    let agent_setup = guest
        .ready()
        .ready_ms
        .saturating_sub(guest.ready().init_started_ms);
    cost.split_current(
        Phase::AgentReady,
        std::time::Duration::from_millis(agent_setup),
    ); // cost ledger
       // Best effort: accounting must not stop a container from running.
    let accounting = MonitorCgroup::enter(&record.id, guest.monitor_pid()).ok();
    let tty = record.options.tty;
    let process_io = process_io(io, record.options.interactive);
    let _raw = match process_io.1 {
        true => tty.then(crate::process::enter_raw_mode).flatten(),
        false => None,
    };
    cost.begin(Phase::ProcessStart); // cost ledger
    let process = Arc::new(guest.start(&request, process_io.0)?);
    cost.begin(Phase::ProcessRun); // cost ledger
    let supervision = Supervision::start(&record.id, mask, Arc::clone(&process), guest.agent());
    // Published last: whoever sees the pid (`run -d` returns then) can reach the control
    // socket for exec, kill and stop.
    ctx.state.publish_pid(guest.monitor_pid());
    let exit = match process.wait_status() {
        // The VM went away under a running process (its monitor was killed or crashed): the
        // process died with it, as with SIGKILL, and the record says so rather than that it
        // never started.
        Err(ClientError::Closed(_, why)) => {
            eprintln!(
                "husk: the VM of container {} stopped under its process{why}",
                record.short_id()
            );
            Ok(ExitStatus {
                code: 128 + libc::SIGKILL,
                oom_killed: false,
            })
        }
        other => other,
    };
    cost.sample_now(); // cost ledger: vCPU time before the VMM exits
    cost.begin(Phase::Teardown); // cost ledger
    supervision.finish();
    guest.shutdown(cost);
    if let Some(accounting) = accounting {
        accounting.leave();
    }
    Ok(exit?)
}

/// The agent client's stdio for a run, and whether it is the caller's terminal.
fn process_io(io: RunIo, interactive: bool) -> (ProcessIo, bool) {
    match io {
        RunIo::Foreground { log } => {
            let stdin = interactive.then(|| Box::new(std::io::stdin()) as Box<dyn Read + Send>);
            let io = match log {
                // Logged like a detached container (`husk logs`), unless --rm removes it.
                Some(log) => ProcessIo {
                    stdin,
                    stdout: Box::new(Tee {
                        out: std::io::stdout(),
                        log: Arc::clone(&log),
                        stream: Stream::Stdout,
                    }),
                    stderr: Box::new(Tee {
                        out: std::io::stderr(),
                        log,
                        stream: Stream::Stderr,
                    }),
                },
                None => ProcessIo {
                    stdin,
                    stdout: Box::new(std::io::stdout()),
                    stderr: Box::new(std::io::stderr()),
                },
            };
            (io, true)
        }
        RunIo::Detached { log, stdin } => {
            let io = ProcessIo {
                // `-i`: the guest process reads what `husk attach` writes to the FIFO.
                stdin: stdin.map(|fifo| Box::new(fifo) as Box<dyn Read + Send>),
                stdout: Box::new(LogSink {
                    log: Arc::clone(&log),
                    stream: Stream::Stdout,
                }),
                stderr: Box::new(LogSink {
                    log,
                    stream: Stream::Stderr,
                }),
            };
            (io, false)
        }
    }
}

/// The container's output into the json-file log, as a writer for the agent client.
struct LogSink {
    log: SharedLog,
    stream: Stream,
}

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(self.stream, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
