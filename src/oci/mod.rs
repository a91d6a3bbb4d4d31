//! husk as an OCI runtime (`husk-runc`): the runc command-line contract of the OCI runtime
//! spec (runtime.md) and runtime-tools' command-line-interface.md, so that podman
//! (`--runtime`), containerd's runc shim (`BinaryName`, `ctr run --runc-binary`) and with it
//! Kubernetes drive husk containers.
//!
//! Shape: `create` builds the whole container with the same process-isolation code as
//! `husk run` (src/process), from the bundle's config.json and root, and leaves its init
//! stopped at a start gate: a unix socket in the container's state dir that the init accepts
//! on right before it execs the command. `create` then exits; the init lives on, reparented
//! to the caller's subreaper (conmon, the containerd shim). `start` connects to the gate.
//! Every later verb works from the state dir (`<root>/<id>/`): the saved spec, the init's pid
//! and start time (so a recycled pid is never taken for the container), and the gate's
//! presence, which is what "created" means. Nothing is cached about liveness: the status is
//! read from the kernel each time.

pub mod hooks;
pub mod vm;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use serde::{Deserialize, Serialize};

use crate::container::spec::ANNOTATION_INTERACTIVE;
use crate::container::ProcessIdentity;
use crate::process::exec::{exec, ExecConfig};
use crate::process::send_fd;
use crate::process::{
    self, Cgroup, CgroupError, CgroupLayout, LaunchConfig, LaunchHooks, ProcessError, Root,
};

/// The bundle annotation that picks a container's isolation (crun's `run.oci.handler` is the
/// same idea): `process` or `vm`.
pub const ANNOTATION_ISOLATION: &str = "io.husk.isolation";

/// The annotations by which containerd's and CRI-O's CRI mark a pod's sandbox (pause)
/// container. It holds the pod's namespaces for the others and runs nothing, so it is a
/// process container unless the annotation asks otherwise: with a RuntimeClass whose default
/// is VM isolation, the pod's application container is then the one VM that takes the pod's
/// network interface.
const POD_SANDBOX_ANNOTATIONS: [&str; 2] = [
    "io.kubernetes.cri.container-type",
    "io.kubernetes.cri-o.ContainerType",
];

/// The OCI spec version husk-runc reports and accepts.
pub const OCI_VERSION: &str = "1.0.2";

/// husk-runc's own state file in a container's state dir.
const STATE_FILE: &str = "state.json";
/// The saved config.json: later verbs must not depend on a bundle that may have changed.
const SPEC_FILE: &str = "config.json";
/// The start gate; its presence (with a live init) is the "created" status.
const GATE_FILE: &str = "start.sock";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("invalid container id {0:?}: use letters, digits and _ . + - (at most 1024)")]
    BadId(String),
    #[error("container {id} is {status}: {verb} needs it {wanted}")]
    WrongStatus {
        id: String,
        status: Status,
        verb: &'static str,
        wanted: &'static str,
    },
    #[error("bundle {path}: {why}")]
    Bundle { path: PathBuf, why: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("unknown signal {0:?}")]
    BadSignal(String),
    /// Another container's processes are in the cgroup this one would get (runc refuses the
    /// same): creating, and cleaning up a failed create, would take them with it.
    #[error("cgroup {cgroup} already holds {processes} process(es) of another container")]
    CgroupInUse { cgroup: String, processes: usize },
    #[error("the container {0} did not start: its init is gone")]
    InitGone(String),
    /// The init or the guest refused to run the program (a startContainer hook failed).
    #[error("{0}")]
    StartFailed(String),
    #[error("{0}")]
    Hook(#[from] hooks::HookError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OciError {
    let path = path.to_path_buf();
    move |source| OciError::Io { op, path, source }
}

/// The OCI statuses (runtime.md): `paused` is runc's addition, for a frozen cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Creating => "creating",
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        })
    }
}

/// Which isolation a bundle asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    #[default]
    Process,
    Vm,
}

/// What husk-runc keeps about a container (its state dir's state.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    bundle: PathBuf,
    rootfs: PathBuf,
    init: ProcessIdentity,
    cgroup: String,
    created: DateTime<Utc>,
    annotations: HashMap<String, String>,
    /// For a VM container the init is the process that holds the VM.
    #[serde(default)]
    isolation: Isolation,
}

/// The OCI state (runtime.md "State"), with runc's extra fields that containerd's go-runc
/// and podman read (rootfs, created, owner).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    /// The init's pid on the host; 0 once stopped (as runc reports it).
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: DateTime<Utc>,
    pub owner: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// Options of `create` beyond the id and bundle.
#[derive(Debug, Default)]
pub struct CreateOptions {
    pub pid_file: Option<PathBuf>,
    /// Where to send the pty master (SCM_RIGHTS) when the process asks for a terminal.
    pub console_socket: Option<PathBuf>,
}

/// Options of `exec`.
#[derive(Debug, Default)]
pub struct ExecOptions {
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// Return once the process runs instead of waiting for it.
    pub detach: bool,
}

/// One runtime root (`--root`): the containers it knows, one state dir each.
pub struct OciRuntime {
    root: PathBuf,
    default_isolation: Isolation,
}

impl OciRuntime {
    pub fn new(root: PathBuf, default_isolation: Isolation) -> Self {
        Self {
            root,
            default_isolation,
        }
    }

    fn dir(&self, id: &str) -> Result<PathBuf, OciError> {
        check_id(id)?;
        Ok(self.root.join(id))
    }

    /// Create the container from `bundle` without running its program (runtime.md
    /// "create"): namespaces, cgroup, root filesystem, mounts, the executable looked up, the
    /// prestart and createRuntime hooks run; the init waits at the start gate.
    pub fn create(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<(), OciError> {
        let dir = self.dir(id)?;
        std::fs::create_dir_all(&self.root).map_err(io("creating", &self.root))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(OciError::Exists(id.to_string()))
            }
            Err(e) => return Err(io("creating", &dir)(e)),
        }
        // Until the container is recorded, a failure leaves nothing behind.
        let result = self.create_in(id, bundle, &dir, opts);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn create_in(
        &self,
        id: &str,
        bundle: &Path,
        dir: &Path,
        opts: &CreateOptions,
    ) -> Result<(), OciError> {
        let bundle = std::fs::canonicalize(bundle).map_err(io("opening bundle", bundle))?;
        let config = bundle.join(SPEC_FILE);
        let mut spec = Spec::load(&config).map_err(|e| OciError::Bundle {
            path: config.clone(),
            why: e.to_string(),
        })?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        let isolation = isolation_of(&annotations, self.default_isolation)?;
        let rootfs = root_path(&spec, &bundle)?;
        let netns = refuse_unsupported(&spec)?;
        if isolation == Isolation::Vm {
            vm::refuse_unsupported(&spec)?;
        }
        let cgroup = cgroup_name(&spec, id)?;
        refuse_busy_cgroup(&cgroup)?;
        prepare_spec(&mut spec);
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        match (terminal, &opts.console_socket) {
            (true, None) => {
                return Err(OciError::Unsupported(
                    "process.terminal is true: --console-socket is required".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(OciError::Unsupported(
                    "--console-socket is only for process.terminal true".into(),
                ))
            }
            _ => {}
        }
        let saved = dir.join(SPEC_FILE);
        spec.save(&saved).map_err(|e| OciError::Bundle {
            path: saved.clone(),
            why: e.to_string(),
        })?;
        let mut record = Record {
            id: id.to_string(),
            bundle: bundle.clone(),
            rootfs,
            init: ProcessIdentity {
                pid: 0,
                start_time: 0,
            },
            cgroup,
            created: Utc::now(),
            annotations,
            isolation,
        };
        if isolation == Isolation::Vm {
            let args = vm::HoldArgs {
                root: self.root.clone(),
                id: id.to_string(),
                rootfs: record.rootfs.clone(),
                cgroup: record.cgroup.clone(),
                console_socket: opts.console_socket.clone(),
            };
            let pid = vm::spawn_holder(&args, dir)?;
            let result = ProcessIdentity::of(pid)
                .ok_or_else(|| OciError::InitGone(id.to_string()))
                .and_then(|init| {
                    record.init = init;
                    // Kata's order for a VM: the guest is up, the container not yet made;
                    // createContainer runs on the host too, in the namespaces of the holder
                    // (the monitor's), which are the runtime's. startContainer runs in the
                    // guest (oci/vm.rs).
                    let state = self.state_of(&record, dir, Status::Creating);
                    run_create_runtime_hooks(&spec, &state)?;
                    for hook in spec
                        .hooks()
                        .iter()
                        .flat_map(|h| h.create_container().iter().flatten())
                    {
                        hooks::run(hook, &state, "createContainer")?;
                    }
                    self.finish_create(&record, dir, opts)
                });
            if result.is_err() {
                // SAFETY: kill(2) with integers; the holder is our child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                vm::cleanup(&self.root, id, &record.cgroup);
            }
            return result;
        }

        let console = match &opts.console_socket {
            Some(path) => {
                Some(UnixStream::connect(path).map_err(io("connecting to console socket", path))?)
            }
            None => None,
        };
        let gate_path = dir.join(GATE_FILE);
        let gate = UnixListener::bind(&gate_path).map_err(io("creating", &gate_path))?;
        let creating = self.state_of(&record, dir, Status::Creating);
        let state_json = serde_json::to_value(&creating).map_err(|e| OciError::Bundle {
            path: saved.clone(),
            why: e.to_string(),
        })?;
        let before_pivot = |pid: i32| -> Result<(), String> {
            let state = State {
                pid,
                ..creating.clone()
            };
            run_create_runtime_hooks(&spec, &state).map_err(|e| e.to_string())
        };
        let launch = LaunchConfig {
            spec: &spec,
            root: Root::Bundle(&record.rootfs),
            cgroup_name: &record.cgroup,
            stdio: None,
            network: None,
            netns: netns.as_ref().map(|fd| fd.as_fd()),
            start_gate: Some(gate.as_fd()),
            hooks: Some(LaunchHooks {
                state: &state_json,
                before_pivot: &before_pivot,
            }),
        };
        let container = process::spawn(&launch)?;
        drop(gate);
        record.init = ProcessIdentity::of(container.pid())
            .ok_or_else(|| OciError::InitGone(id.to_string()))?;
        // From here on a failure must also take the container down: `container` kills its
        // init and removes its cgroup when dropped.
        if let Some(console) = &console {
            let master = container.pty_master().ok_or_else(|| {
                ProcessError::Setup("the container did not hand over its terminal".into())
            })?;
            send_fd(console, master.as_fd(), b"/dev/ptmx").map_err(io(
                "sending the pty over",
                opts.console_socket.as_deref().unwrap_or(Path::new("")),
            ))?;
        }
        self.finish_create(&record, dir, opts)?;
        container.detach();
        Ok(())
    }

    /// The end of `create` for both isolations: the record and the pid file, which make the
    /// container exist for the other verbs. (The hooks ran before: a process container's
    /// while its init waited before pivot_root, a VM's in `create_in`.)
    fn finish_create(
        &self,
        record: &Record,
        dir: &Path,
        opts: &CreateOptions,
    ) -> Result<(), OciError> {
        write_atomically(&dir.join(STATE_FILE), &serde_json::to_vec(record).unwrap())?;
        if let Some(pid_file) = &opts.pid_file {
            write_atomically(pid_file, record.init.pid.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// Run the program of a created container (runtime.md "start"), then the poststart hooks.
    pub fn start(&self, id: &str) -> Result<(), OciError> {
        let (record, dir, spec) = self.load(id)?;
        let status = status_of(&record, &dir);
        if status != Status::Created {
            return Err(wrong(id, status, "start", "created"));
        }
        let gate_path = dir.join(GATE_FILE);
        let mut gate =
            UnixStream::connect(&gate_path).map_err(|_| OciError::InitGone(id.to_string()))?;
        let mut ack = [0u8; 1];
        if gate.read_exact(&mut ack).is_err() {
            return Err(OciError::InitGone(id.to_string()));
        }
        if ack != *b"1" {
            // A VM's holder says why the guest did not run the process.
            let mut why = String::new();
            let _ = (&mut gate).take(64 << 10).read_to_string(&mut why);
            return Err(OciError::StartFailed(format!(
                "the container {id} did not start: {}",
                if why.is_empty() {
                    "its init is gone"
                } else {
                    why.trim()
                }
            )));
        }
        std::fs::remove_file(&gate_path).map_err(io("removing", &gate_path))?;
        let state = self.state_of(&record, &dir, Status::Running);
        for hook in spec
            .hooks()
            .iter()
            .flat_map(|h| h.poststart().iter().flatten())
        {
            // runtime.md: a failing poststart hook is a warning, the container runs on.
            if let Err(err) = hooks::run(hook, &state, "poststart") {
                log::warn!("{err}");
                eprintln!("husk-runc: warning: {err}");
            }
        }
        Ok(())
    }

    /// The OCI state of one container.
    pub fn state(&self, id: &str) -> Result<State, OciError> {
        let (record, dir, _) = self.load(id)?;
        let status = status_of(&record, &dir);
        Ok(self.state_of(&record, &dir, status))
    }

    fn state_of(&self, record: &Record, dir: &Path, status: Status) -> State {
        let owner = std::fs::metadata(dir)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .map(|uid| user_name(uid).unwrap_or_else(|| uid.to_string()))
            .unwrap_or_default();
        State {
            oci_version: OCI_VERSION.to_string(),
            id: record.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                record.init.pid
            },
            bundle: record.bundle.clone(),
            rootfs: record.rootfs.clone(),
            created: record.created,
            owner,
            annotations: record.annotations.clone(),
        }
    }

    /// Every container of this root, in id order.
    pub fn list(&self) -> Result<Vec<State>, OciError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("reading", &self.root)(e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        ids.sort();
        // A dir whose create is under way (no state.json yet) is not listed.
        Ok(ids.iter().filter_map(|id| self.state(id).ok()).collect())
    }

    /// Send `signal` to the init, or with `all` to every process of the container.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
        let (record, dir, _) = self.load(id)?;
        let status = status_of(&record, &dir);
        if status == Status::Stopped {
            return Err(wrong(id, status, "kill", "created, running or paused"));
        }
        // A VM container's processes are in its guest: the holder relays the signal there
        // (its cgroup holds the monitor, which a signal would stop under the guest), and
        // `--all` of a running one goes to every process of the container's cgroup in the
        // guest, through the holder's supervisor.
        if all
            && record.isolation == Isolation::Vm
            && status == Status::Running
            && crate::vm::supervisor::send_signal_all(&vm::key(&self.root, id), signal)
        {
            return Ok(());
        }
        let pids = if all && record.isolation == Isolation::Process {
            self.cgroup(&record)?.pids()?
        } else {
            vec![record.init.pid]
        };
        for pid in pids {
            // SAFETY: kill(2) with integers; the init's pid was checked against its start
            // time above (status_of), and the others come from the container's cgroup.
            if unsafe { libc::kill(pid, signal) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ESRCH) {
                    return Err(OciError::Process(ProcessError::Sys {
                        op: "signalling the container",
                        source: nix::Error::last(),
                    }));
                }
            }
        }
        Ok(())
    }

    /// Remove a stopped container (runtime.md "delete"); `force` kills one that is not
    /// stopped first. The poststop hooks run last.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), OciError> {
        let (record, dir, spec) = match self.load(id) {
            Ok(loaded) => loaded,
            Err(OciError::NotFound(_)) if force => return Ok(()),
            Err(err) => return Err(err),
        };
        let status = status_of(&record, &dir);
        if status != Status::Stopped && !force {
            return Err(wrong(id, status, "delete", "stopped (or --force)"));
        }
        let cgroup = self.cgroup(&record)?;
        if status != Status::Stopped {
            if status == Status::Paused {
                // SIGKILL is not delivered to a frozen v1 task.
                let _ = cgroup.thaw();
            }
            // SAFETY: kill(2) with integers; the pid was just checked to be the init.
            unsafe { libc::kill(record.init.pid, libc::SIGKILL) };
        }
        // Whatever is left (an exec'd process, a daemon the command forked, a VM's monitor
        // and virtio-fs daemons) goes too.
        cgroup.destroy()?;
        if record.isolation == Isolation::Vm {
            vm::cleanup(&self.root, id, &record.cgroup);
        }
        let state = self.state_of(&record, &dir, Status::Stopped);
        std::fs::remove_dir_all(&dir).map_err(io("removing", &dir))?;
        for hook in spec
            .hooks()
            .iter()
            .flat_map(|h| h.poststop().iter().flatten())
        {
            // runtime.md: a failing poststop hook is a warning; the container is gone.
            if let Err(err) = hooks::run(hook, &state, "poststop") {
                log::warn!("{err}");
                eprintln!("husk-runc: warning: {err}");
            }
        }
        Ok(())
    }

    pub fn pause(&self, id: &str) -> Result<(), OciError> {
        let (record, dir, _) = self.load(id)?;
        let status = status_of(&record, &dir);
        if status != Status::Running {
            return Err(wrong(id, status, "pause", "running"));
        }
        Ok(self.cgroup(&record)?.freeze()?)
    }

    pub fn resume(&self, id: &str) -> Result<(), OciError> {
        let (record, dir, _) = self.load(id)?;
        let status = status_of(&record, &dir);
        if status != Status::Paused {
            return Err(wrong(id, status, "resume", "paused"));
        }
        Ok(self.cgroup(&record)?.thaw()?)
    }

    /// Pids of the container's processes, as the host sees them.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>, OciError> {
        let (record, _, _) = self.load(id)?;
        let mut pids = self.cgroup(&record)?.pids()?;
        pids.sort();
        Ok(pids)
    }

    /// New resource limits for a container that is not stopped (`update --resources`).
    pub fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), OciError> {
        let (record, dir, _) = self.load(id)?;
        let status = status_of(&record, &dir);
        if status == Status::Stopped {
            return Err(wrong(id, status, "update", "created, running or paused"));
        }
        if record.isolation == Isolation::Vm
            && (resources.memory().is_some() || resources.pids().is_some())
        {
            return Err(OciError::Unsupported(
                "update cannot change a VM container's memory or pids: they size its guest, \
                 fixed at create"
                    .into(),
            ));
        }
        if resources.devices().is_some() {
            return Err(OciError::Unsupported(
                "update cannot change device rules; they are fixed at create".into(),
            ));
        }
        Ok(self.cgroup(&record)?.apply(Some(resources))?)
    }

    /// Run `process` in the running container (runtime-tools' `exec`): its namespaces,
    /// cgroup and confinement, as `husk exec` does. Returns the process's exit code, or 0
    /// once it runs when detached.
    pub fn exec(&self, id: &str, process: &Process, opts: &ExecOptions) -> Result<i32, OciError> {
        let (record, dir, spec) = self.load(id)?;
        let status = status_of(&record, &dir);
        if status != Status::Running {
            return Err(wrong(id, status, "exec", "running"));
        }
        if record.isolation == Isolation::Vm {
            return vm::exec(&self.root, id, &record.rootfs, &spec, process, opts);
        }
        let terminal = process.terminal().unwrap_or(false);
        let console = match (terminal, &opts.console_socket) {
            (true, Some(path)) => {
                Some(UnixStream::connect(path).map_err(io("connecting to console socket", path))?)
            }
            (true, None) if opts.detach => {
                return Err(OciError::Unsupported(
                    "exec --tty --detach needs --console-socket".into(),
                ))
            }
            _ => None,
        };
        let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
        let stdio = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()];
        let exec_cfg = ExecConfig {
            container_init: record.init,
            spec: &spec,
            process,
            cgroup_name: &record.cgroup,
            stdio,
        };
        let mut running = exec(&exec_cfg)?;
        if let Some(pid_file) = &opts.pid_file {
            write_atomically(pid_file, running.pid().to_string().as_bytes())?;
        }
        let master = running.pty_master();
        match (console, master) {
            (Some(console), Some(master)) => {
                send_fd(&console, master.as_fd(), b"/dev/ptmx").map_err(io(
                    "sending the pty over",
                    opts.console_socket.as_deref().unwrap_or(Path::new("")),
                ))?;
            }
            (None, Some(master)) => {
                // `exec -t` in a terminal of our own, without a console socket: relay it.
                return Ok(relay_terminal(master, running)?);
            }
            _ => {}
        }
        if opts.detach {
            return Ok(0);
        }
        Ok(running.wait()?)
    }

    /// The process of a container's saved spec: what `exec` without --process starts from.
    pub fn container_process(&self, id: &str) -> Result<Process, OciError> {
        let (_, _, spec) = self.load(id)?;
        spec.process()
            .clone()
            .ok_or_else(|| OciError::Unsupported("the spec has no process".into()))
    }

    fn load(&self, id: &str) -> Result<(Record, PathBuf, Spec), OciError> {
        let dir = self.dir(id)?;
        let state_path = dir.join(STATE_FILE);
        let text = match std::fs::read(&state_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OciError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io("reading", &state_path)(e)),
        };
        let record: Record = serde_json::from_slice(&text).map_err(|e| OciError::Bundle {
            path: state_path.clone(),
            why: e.to_string(),
        })?;
        let spec_path = dir.join(SPEC_FILE);
        let spec = Spec::load(&spec_path).map_err(|e| OciError::Bundle {
            path: spec_path,
            why: e.to_string(),
        })?;
        Ok((record, dir, spec))
    }

    fn cgroup(&self, record: &Record) -> Result<Cgroup, OciError> {
        Ok(Cgroup::open(CgroupLayout::detect()?, &record.cgroup)?)
    }
}

fn wrong(id: &str, status: Status, verb: &'static str, wanted: &'static str) -> OciError {
    OciError::WrongStatus {
        id: id.to_string(),
        status,
        verb,
        wanted,
    }
}

/// runc's id rule: no path separators, nothing that is not a plain name.
fn check_id(id: &str) -> Result<(), OciError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'));
    if ok {
        Ok(())
    } else {
        Err(OciError::BadId(id.to_string()))
    }
}

/// The isolation a bundle's annotations ask for, else the runtime's default.
pub fn isolation_of(
    annotations: &HashMap<String, String>,
    default: Isolation,
) -> Result<Isolation, OciError> {
    match annotations.get(ANNOTATION_ISOLATION).map(String::as_str) {
        None if POD_SANDBOX_ANNOTATIONS
            .iter()
            .any(|key| annotations.get(*key).map(String::as_str) == Some("sandbox")) =>
        {
            Ok(Isolation::Process)
        }
        None => Ok(default),
        Some("process") => Ok(Isolation::Process),
        Some("vm") => Ok(Isolation::Vm),
        Some(other) => Err(OciError::Unsupported(format!(
            "{ANNOTATION_ISOLATION}={other:?}: the isolation is process or vm"
        ))),
    }
}

/// The container's status, read from the kernel: the init alive (same pid and start time,
/// not a zombie) and the gate still there is "created"; alive in a frozen cgroup "paused";
/// alive otherwise "running"; anything else "stopped".
fn status_of(record: &Record, dir: &Path) -> Status {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", record.init.pid));
    let alive = stat.as_deref().is_ok_and(|stat| {
        crate::container::record::start_time_from_stat(stat) == Some(record.init.start_time)
            && !matches!(process_state(stat), Some('Z' | 'X'))
    });
    if !alive {
        return Status::Stopped;
    }
    if dir.join(GATE_FILE).exists() {
        return Status::Created;
    }
    let frozen = CgroupLayout::detect()
        .ok()
        .and_then(|layout| Cgroup::open(layout, &record.cgroup).ok())
        .and_then(|cgroup| cgroup.is_frozen().ok())
        .unwrap_or(false);
    if frozen {
        Status::Paused
    } else {
        Status::Running
    }
}

/// Field 3 of /proc/PID/stat: R, S, D, Z (zombie), X (dead)...
fn process_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// The root filesystem: `root.path`, relative to the bundle unless absolute.
fn root_path(spec: &Spec, bundle: &Path) -> Result<PathBuf, OciError> {
    let root = spec.root().as_ref().ok_or_else(|| OciError::Bundle {
        path: bundle.join(SPEC_FILE),
        why: "no root".into(),
    })?;
    let path = bundle.join(root.path());
    let path = std::fs::canonicalize(&path).map_err(io("opening the root", &path))?;
    if !path.is_dir() {
        return Err(OciError::Bundle {
            path,
            why: "the root is not a directory".into(),
        });
    }
    Ok(path)
}

/// Refuse, with one line each, what husk cannot honour; returns the network namespace to
/// join when the spec names one by path (a pod's, podman's netavark namespace).
fn refuse_unsupported(spec: &Spec) -> Result<Option<OwnedFd>, OciError> {
    let unsupported = |what: String| Err(OciError::Unsupported(what));
    let mut netns = None;
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in &namespaces {
        match (ns.typ(), ns.path()) {
            (LinuxNamespaceType::User, _) => {
                return unsupported("user namespaces are not supported by husk-runc".into())
            }
            (LinuxNamespaceType::Time, _) => {
                return unsupported("time namespaces are not supported by husk-runc".into())
            }
            (LinuxNamespaceType::Network, Some(path)) => {
                let file = std::fs::File::open(path).map_err(io("opening namespace", path))?;
                netns = Some(OwnedFd::from(file));
            }
            (typ, Some(path)) => {
                return unsupported(format!(
                    "joining a {typ:?} namespace ({}) is not supported; only network \
                     namespaces can be joined by path",
                    path.display()
                ))
            }
            _ => {}
        }
    }
    if spec.process().is_none() {
        return unsupported("the spec has no process".into());
    }
    Ok(netns)
}

/// runtime.md steps 4 and 5: prestart (deprecated, run just before createRuntime as runc
/// does) and createRuntime, in the runtime namespace; the first failure fails `create`.
fn run_create_runtime_hooks(spec: &Spec, state: &State) -> Result<(), OciError> {
    if let Some(spec_hooks) = spec.hooks() {
        for hook in spec_hooks.prestart().iter().flatten() {
            hooks::run(hook, state, "prestart")?;
        }
        for hook in spec_hooks.create_runtime().iter().flatten() {
            hooks::run(hook, state, "createRuntime")?;
        }
    }
    Ok(())
}

/// The cgroup the container gets, relative to each hierarchy's root: the spec's
/// cgroupsPath (podman's "/libpod_parent/libpod-ID", containerd's "/default/ID"), else
/// "husk-runc/ID". The systemd form ("slice:prefix:name") is refused: husk does not talk to
/// systemd.
fn cgroup_name(spec: &Spec, id: &str) -> Result<String, OciError> {
    let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else {
        return Ok(format!("husk-runc/{id}"));
    };
    let text = path.to_string_lossy();
    if text.contains(':') {
        return Err(OciError::Unsupported(format!(
            "cgroupsPath {text:?} is a systemd unit; husk-runc manages cgroupfs paths only \
             (podman --cgroup-manager cgroupfs, containerd SystemdCgroup = false)"
        )));
    }
    let relative = text.trim_start_matches('/').to_string();
    if relative.is_empty() {
        return Ok(format!("husk-runc/{id}"));
    }
    Ok(relative)
}

/// Refuse a cgroup that already holds processes: two runtime roots with one container id,
/// or two specs naming one cgroupsPath, would otherwise share it, and the cleanup of either
/// kills the other.
fn refuse_busy_cgroup(name: &str) -> Result<(), OciError> {
    let processes = Cgroup::open(CgroupLayout::detect()?, name)?.pids()?.len();
    if processes > 0 {
        return Err(OciError::CgroupInUse {
            cgroup: name.to_string(),
            processes,
        });
    }
    Ok(())
}

/// What runc adds to every bundle's spec: the default device nodes' cgroup rules after the
/// spec's own, and stdio left as the caller gave it (no /dev/null on stdin). Ambient
/// capabilities the process could not raise (not also permitted and inheritable) are
/// dropped with a warning, as runc does.
fn prepare_spec(spec: &mut Spec) {
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(ANNOTATION_INTERACTIVE.to_string(), "true".to_string());
    spec.set_annotations(Some(annotations));
    if let Some(linux) = spec.linux_mut() {
        let mut resources = linux.resources().clone().unwrap_or_default();
        let mut rules = resources.devices().clone().unwrap_or_default();
        rules.extend(crate::container::spec::default_device_rules());
        resources.set_devices(Some(rules));
        linux.set_resources(Some(resources));
    }
    if let Some(process) = spec.process_mut() {
        if let Some(mut caps) = process.capabilities().clone() {
            if let Some(ambient) = caps.ambient().clone() {
                let allowed = |c: &oci_spec::runtime::Capability| {
                    caps.permitted().as_ref().is_some_and(|p| p.contains(c))
                        && caps.inheritable().as_ref().is_some_and(|i| i.contains(c))
                };
                let (kept, dropped): (Vec<_>, Vec<_>) = ambient.into_iter().partition(allowed);
                if !dropped.is_empty() {
                    eprintln!(
                        "husk-runc: warning: ambient capabilities {dropped:?} are not both \
                         permitted and inheritable; dropped"
                    );
                }
                caps.set_ambient(Some(kept.into_iter().collect()));
            }
            process.set_capabilities(Some(caps));
        }
    }
}

/// Wait for our child `pid`; its exit code, 128+N for a signal (a shell's convention).
pub fn wait_for_exit(pid: i32) -> i32 {
    loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => return code,
            Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => return 255,
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{}.tmp", name.unwrap_or_default()));
    std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("writing", path))
}

/// `exec -t` with no console socket: our own terminal in raw mode, relayed to the process's
/// pty until it exits.
fn relay_terminal(
    master: OwnedFd,
    running: process::exec::ExecProcess,
) -> Result<i32, ProcessError> {
    let _raw = process::enter_raw_mode();
    process::copy_window_size(&master);
    let master = std::fs::File::from(master);
    let mut reader = master.try_clone().map_err(|source| ProcessError::Io {
        op: "relaying the terminal",
        source,
    })?;
    let output = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    });
    let mut writer = master;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut writer);
    });
    let code = running.wait();
    let _ = output.join();
    code
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// A signal by name ("TERM", "SIGTERM", "SIGRTMIN+3") or number, as `runc kill` takes it.
pub fn parse_signal(text: &str) -> Result<i32, OciError> {
    if let Ok(number) = text.parse::<i32>() {
        if (1..=64).contains(&number) {
            return Ok(number);
        }
        return Err(OciError::BadSignal(text.to_string()));
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(offset) = name.strip_prefix("RTMIN+") {
        let offset: i32 = offset
            .parse()
            .map_err(|_| OciError::BadSignal(text.to_string()))?;
        let number = libc::SIGRTMIN() + offset;
        if (0..=libc::SIGRTMAX()).contains(&number) {
            return Ok(number);
        }
        return Err(OciError::BadSignal(text.to_string()));
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| OciError::BadSignal(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("sigusr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("RTMIN+2").unwrap(), libc::SIGRTMIN() + 2);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("65").is_err());
    }

    #[test]
    fn ids_are_plain_names() {
        for good in ["abc", "a-b_c.d+e", "0123456789abcdef"] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", &"x".repeat(1025)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_annotation_picks_the_isolation_else_the_default() {
        let mut annotations = HashMap::new();
        assert_eq!(
            isolation_of(&annotations, Isolation::Vm).unwrap(),
            Isolation::Vm
        );
        annotations.insert(ANNOTATION_ISOLATION.to_string(), "process".to_string());
        assert_eq!(
            isolation_of(&annotations, Isolation::Vm).unwrap(),
            Isolation::Process
        );
        annotations.insert(ANNOTATION_ISOLATION.to_string(), "hyperv".to_string());
        assert!(isolation_of(&annotations, Isolation::Process).is_err());
    }

    #[test]
    fn a_pod_sandbox_is_a_process_container_unless_the_annotation_says_otherwise() {
        for key in POD_SANDBOX_ANNOTATIONS {
            let mut annotations = HashMap::from([(key.to_string(), "sandbox".to_string())]);
            assert_eq!(
                isolation_of(&annotations, Isolation::Vm).unwrap(),
                Isolation::Process
            );
            annotations.insert(key.to_string(), "container".to_string());
            assert_eq!(
                isolation_of(&annotations, Isolation::Vm).unwrap(),
                Isolation::Vm
            );
            annotations.insert(key.to_string(), "sandbox".to_string());
            annotations.insert(ANNOTATION_ISOLATION.to_string(), "vm".to_string());
            assert_eq!(
                isolation_of(&annotations, Isolation::Process).unwrap(),
                Isolation::Vm
            );
        }
    }

    #[test]
    fn the_process_state_is_read_past_the_command_name() {
        let stat = "42 (a) b) Z 1 42 42 0 -1";
        assert_eq!(process_state(stat), Some('Z'));
    }

    #[test]
    fn cgroup_paths_are_relative_and_systemd_ones_refused() {
        let mut spec = Spec::default();
        let with_path = |spec: &mut Spec, path: &str| {
            let mut linux = spec.linux().clone().unwrap_or_default();
            linux.set_cgroups_path(Some(PathBuf::from(path)));
            spec.set_linux(Some(linux));
        };
        spec.set_linux(None);
        assert_eq!(cgroup_name(&spec, "c1").unwrap(), "husk-runc/c1");
        with_path(&mut spec, "/libpod_parent/libpod-c1");
        assert_eq!(cgroup_name(&spec, "c1").unwrap(), "libpod_parent/libpod-c1");
        with_path(&mut spec, "system.slice:docker:c1");
        assert!(cgroup_name(&spec, "c1").is_err());
    }
}
