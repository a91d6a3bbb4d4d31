//! The Docker Engine API (`husk system service`) driven by the real docker CLI (Debian's
//! docker.io client, API 1.41), process and VM isolation from one service: run --rm with
//! its exit code and both streams, -d/logs/ps/stop/inspect/rm, images, refusals in Docker's
//! error shape. No bridge: every container runs with --network none.

mod common;
mod image_support;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cli::Husk;

struct Service {
    husk: Husk,
    socket: PathBuf,
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        for id in self
            .docker(&["ps", "-a", "-q"])
            .stdout
            .split(|b| *b == b'\n')
        {
            let id = String::from_utf8_lossy(id).trim().to_string();
            if !id.is_empty() {
                let _ = self.husk.run(&["rm", "-f", &id]);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// The service over a root with busybox, VM settings in its environment when the guest
    /// assets exist (so `--isolation vm` works too).
    fn start(test: &str) -> Option<(Service, bool)> {
        Self::start_with(test, true)
    }

    /// The service, over a root with busybox when `busybox`, else over an empty one.
    fn start_with(test: &str, busybox: bool) -> Option<(Service, bool)> {
        if !common::is_root() || common::host_busybox().is_none() {
            common::note_skip(test, "needs root and busybox-static (scripts/setup.sh)");
            return None;
        }
        if !std::path::Path::new("/usr/bin/docker").exists() {
            common::note_skip(
                test,
                "Debian's docker.io client is not installed (scripts/setup.sh)",
            );
            return None;
        }
        let mut env = vec![("HUSK_ISOLATION", "process".into())];
        let vm = match common::guest_assets() {
            Ok((kernel, agent)) => {
                env.push(("HUSK_KERNEL", kernel.clone().into_os_string()));
                env.push(("HUSK_AGENT", agent.clone().into_os_string()));
                env.push(("HUSK_VMM", common::vm_monitor().into()));
                true
            }
            Err(why) => {
                common::note_skip(&format!("{test} (vm)"), &why);
                false
            }
        };
        let husk = Husk::new(env);
        if busybox {
            husk.import_busybox(|_| {});
        }
        let socket = husk.root.path().join("docker.sock");
        let child = husk
            .cmd()
            .args(["system", "service", "--socket"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let service = Service {
            husk,
            socket,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !service.docker(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "the service never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some((service, vm))
    }

    fn docker(&self, args: &[&str]) -> Output {
        let out = Command::new("/usr/bin/docker")
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "docker {args:?} -> {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The docker CLI with `input` on its stdin (a pipe, closed after it).
    fn docker_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new("/usr/bin/docker")
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "docker {args:?} <<< {:?} -> {:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(input),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The docker CLI on a terminal of 30x100 (a pty this test holds) that, once the command
    /// has printed "30 100", becomes 40x120. `args` run a shell that prints `stty size` for
    /// every line it reads: a newline goes in every 300 ms until each size comes out, then
    /// Ctrl-D. Ok(transcript) when both sizes arrived.
    fn docker_on_a_terminal(&self, args: &[&str]) -> Result<String, String> {
        const SCRIPT: &str = r#"
import fcntl, os, struct, subprocess, sys, termios, time
def size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
master, slave = os.openpty()
size(slave, 30, 100)
child = subprocess.Popen(sys.argv[2:], stdin=slave, stdout=slave, stderr=slave,
                         start_new_session=True,
                         preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
os.close(slave)
os.set_blocking(master, False)
seen = b""
def wait_for(text):
    global seen
    deadline = time.time() + 90
    while time.time() < deadline:
        os.write(master, b"\n")
        time.sleep(0.3)
        try:
            while True:
                chunk = os.read(master, 4096)
                if not chunk:
                    return False
                seen += chunk
        except BlockingIOError:
            pass
        except OSError:
            return False
        if text in seen:
            return True
    return False
ok = wait_for(b"30 100")
if ok:
    size(master, 40, 120)
    ok = wait_for(b"40 120")
os.write(master, b"\x04")
code = child.wait(timeout=60)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(0 if ok and code == 0 else 1)
"#;
        match self.docker_under_python(SCRIPT, "", args) {
            (transcript, Some(0)) => Ok(transcript),
            (transcript, _) => Err(transcript),
        }
    }

    /// The docker CLI on a terminal (a pty this test holds), as a person at a shell types:
    /// once the prompt (`# `) shows, `input` goes in; the transcript and the CLI's exit code.
    fn docker_typing(&self, args: &[&str], input: &str) -> (String, Option<i32>) {
        const SCRIPT: &str = r##"
import fcntl, os, subprocess, sys, termios, time
master, slave = os.openpty()
child = subprocess.Popen(sys.argv[2:], stdin=slave, stdout=slave, stderr=slave,
                         start_new_session=True,
                         preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
os.close(slave)
seen = b""
typed = False
deadline = time.time() + 120
while time.time() < deadline:
    try:
        chunk = os.read(master, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
    if not typed and b"# " in seen:
        os.write(master, sys.argv[1].encode())
        typed = True
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(child.wait(timeout=60))
"##;
        self.docker_under_python(SCRIPT, input, args)
    }

    /// The docker CLI run by a python `script` that holds its terminal, given `input` and
    /// the command line as its arguments: what the script printed, and its exit code.
    fn docker_under_python(
        &self,
        script: &str,
        input: &str,
        args: &[&str],
    ) -> (String, Option<i32>) {
        let out = Command::new("python3")
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .arg("-c")
            .arg(script)
            .arg(input)
            .arg("/usr/bin/docker")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!(
            "docker {args:?} on a terminal, typed {input:?} -> {:?}\n{transcript}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        (transcript, out.status.code())
    }

    /// docker-compose (Debian's 1.29) on the project in `dir`, named `project`.
    fn compose(&self, dir: &std::path::Path, project: &str, args: &[&str]) -> Output {
        let out = Command::new("/usr/bin/docker-compose")
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .current_dir(dir)
            .args(["--ansi", "never", "-p", project])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "docker-compose {args:?} -> {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.status.success(), "docker {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A raw request on the socket (curl), for what the CLI never sends.
    fn curl(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let data = ["-H", "Content-Type: application/json", "-d", body];
        self.raw(method, path, &data)
    }

    /// A raw PUT of a file's bytes (an archive) on the socket.
    fn put_file(&self, path: &str, file: &std::path::Path) -> (u16, String) {
        let data = format!("@{}", file.display());
        let args = [
            "-H",
            "Content-Type: application/x-tar",
            "--data-binary",
            &data,
        ];
        self.raw("PUT", path, &args)
    }

    /// curl on the socket with `args` for the body: the status and the body of the answer.
    fn raw(&self, method: &str, path: &str, args: &[&str]) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(&self.socket)
            .args(["-X", method])
            .args(args)
            .arg(format!("http://husk{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

fn cases(service: &Service, isolation: &str) {
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let started = unix_now();
    let run = |rest: &[&str]| -> Output {
        let mut args = vec!["run", "--isolation", isolation, "--network", "none"];
        args.extend_from_slice(rest);
        service.docker(&args)
    };
    let out = run(&[
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo hello; echo oops >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    let kernel = run(&["--rm", "busybox", "uname", "-r"]);
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&kernel.stdout).trim() != host.trim(),
        isolation == "vm",
        "the kernel of a {isolation} container"
    );

    // -i: the client's input reaches the container, and its end is the container's EOF.
    let piped = |rest: &[&str], input: &[u8]| -> Output {
        let mut args = vec!["run", "--isolation", isolation, "--network", "none"];
        args.extend_from_slice(rest);
        service.docker_with_input(&args, input)
    };
    let out = piped(
        &["-i", "--rm", "busybox", "sh", "-c", "cat; echo done"],
        b"one\ntwo\n",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\ndone\n");

    let name = format!("web-{isolation}");
    let script = "trap 'echo got TERM; exit 7' TERM; echo started; while true; do sleep 0.1; done";
    let id = run(&["-d", "--name", &name, "busybox", "sh", "-c", script]);
    assert!(id.status.success());
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim().len(), 64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !service.ok(&["logs", &name]).contains("started") {
        assert!(Instant::now() < deadline, "no log line");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(service.ok(&["ps"]).contains(&name));

    // exec: both streams and the exit code, the environment, directory and user given, stdin
    // with -i, a terminal with -t that follows the client's window.
    let out = service.docker(&["exec", &name, "sh", "-c", "echo in; echo err >&2; exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = service.ok(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        &name,
        "sh",
        "-c",
        "echo $X $(pwd) $(id -u)",
    ]);
    assert_eq!(out, "1 /tmp 65534\n");
    let out = service.docker_with_input(
        &["exec", "-i", &name, "sh", "-c", "read x; echo got $x"],
        b"hi\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hi\n");
    let out = service.ok(&["exec", "-t", &name, "tty"]);
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    let shell = "while :; do stty size; read x || exit 0; done";
    let terminal = service.docker_on_a_terminal(&["exec", "-it", &name, "sh", "-c", shell]);
    assert!(
        terminal.is_ok(),
        "the exec's terminal did not follow the client's window: {terminal:?}"
    );
    // run -it: the container's own terminal takes the client's size at the start, then
    // follows it (the CLI's resize of the container).
    let terminal = service.docker_on_a_terminal(&[
        "run",
        "-it",
        "--rm",
        "--isolation",
        isolation,
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        shell,
    ]);
    assert!(
        terminal.is_ok(),
        "the container's terminal did not follow the client's window: {terminal:?}"
    );

    // top (ps in the container's own kernel), one-shot stats, rename and back.
    let top = service.ok(&["top", &name]);
    assert!(top.lines().next().unwrap_or("").contains("PID"), "{top}");
    assert!(top.contains("while true") || top.contains("sleep"), "{top}");
    let stats = service.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}} {{.MemUsage}}",
        &name,
    ]);
    let fields: Vec<&str> = stats.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&name.as_str()), "{stats}");
    assert!(
        fields
            .get(1)
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| p >= 1),
        "{stats}"
    );
    assert!(!stats.contains("--"), "{stats}");
    let renamed = format!("{name}-renamed");
    service.ok(&["rename", &name, &renamed]);
    assert!(service
        .ok(&["ps", "--format", "{{.Names}}"])
        .lines()
        .any(|l| l == renamed));
    service.ok(&["rename", &renamed, &name]);

    // pause and unpause: Docker's state while paused, its refusal of exec, the journal.
    service.ok(&["pause", &name]);
    assert_eq!(
        service
            .ok(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.Paused}}",
                &name
            ])
            .trim(),
        "paused true"
    );
    let listed = service.ok(&[
        "ps",
        "--filter",
        "status=paused",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(
        listed.starts_with(&name) && listed.trim_end().ends_with("(Paused)"),
        "{listed}"
    );
    let refused = service.docker(&["exec", &name, "true"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("is paused, unpause the container before exec"),
        "{refused:?}"
    );
    service.ok(&["unpause", &name]);
    assert_eq!(
        service
            .ok(&["inspect", "-f", "{{.State.Paused}}", &name])
            .trim(),
        "false"
    );

    // docker cp through the archive endpoints: a directory in, a file in under a new name, a
    // file out, a missing path's 404.
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir(host.path().join("in")).unwrap();
    std::fs::write(host.path().join("in/a.txt"), "from the host\n").unwrap();
    let host_path = |p: &str| host.path().join(p).display().to_string();
    service.ok(&["cp", &host_path("in"), &format!("{name}:/tmp/")]);
    service.ok(&[
        "cp",
        &host_path("in/a.txt"),
        &format!("{name}:/tmp/renamed.txt"),
    ]);
    assert_eq!(
        service.ok(&["exec", &name, "cat", "/tmp/in/a.txt", "/tmp/renamed.txt"]),
        "from the host\nfrom the host\n"
    );
    service.ok(&[
        "exec",
        &name,
        "sh",
        "-c",
        "echo from the container > /tmp/out.txt",
    ]);
    service.ok(&["cp", &format!("{name}:/tmp/out.txt"), &host_path("out.txt")]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("out.txt")).unwrap(),
        "from the container\n"
    );
    service.ok(&["cp", &format!("{name}:/tmp/in"), &host_path("back")]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("back/a.txt")).unwrap(),
        "from the host\n"
    );
    // A hostile archive: a symlink to / and a file through it. Nothing of it lands, on the
    // host or in the container; the request gets a 400 with the reason.
    let hostile = host.path().join("hostile.tar");
    {
        let mut tar = tar::Builder::new(std::fs::File::create(&hostile).unwrap());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        tar.append_link(&mut link, "link", "/").unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_size(4);
        file.set_mode(0o644);
        tar.append_data(&mut file, "link/husk-escaped", &b"bad\n"[..])
            .unwrap();
        tar.finish().unwrap();
    }
    let (code, body) = service.put_file(
        &format!("/v1.41/containers/{name}/archive?path=/tmp"),
        &hostile,
    );
    assert_eq!(code, 400, "{body}");
    assert!(!std::path::Path::new("/husk-escaped").exists());
    let listed = service.ok(&["exec", &name, "ls", "/tmp", "/"]);
    assert!(
        !listed.contains("husk-escaped") && !listed.contains("link"),
        "{listed}"
    );
    let missing = service.docker(&["cp", &format!("{name}:/no/such"), &host_path("x")]);
    assert!(
        !missing.status.success()
            && String::from_utf8_lossy(&missing.stderr).contains("No such container:path"),
        "{missing:?}"
    );

    service.ok(&["stop", "-t", "10", &name]);
    assert_eq!(
        service
            .ok(&["inspect", "-f", "{{.State.ExitCode}}", &name])
            .trim(),
        "7"
    );
    assert!(service.ok(&["logs", &name]).contains("got TERM"));
    // The journal through /events: the stop's die, with its exit code.
    let events = service.ok(&[
        "events",
        "--since",
        &started.to_string(),
        "--until",
        &(unix_now() + 1).to_string(),
        "--filter",
        "event=die",
        "--filter",
        &format!("container={name}"),
    ]);
    assert_eq!(events.lines().count(), 1, "{events}");
    assert!(
        events.contains("container die") && events.contains("exitCode=7"),
        "{events}"
    );
    let (code, body) = service.curl(
        "POST",
        &format!("/v1.41/containers/{name}/exec"),
        r#"{"Cmd":["env"],"Env":["PATH"]}"#,
    );
    assert_eq!(
        code, 400,
        "an Env entry without = reads the service's environment: {body}"
    );
    let late = service.docker(&["exec", &name, "true"]);
    assert!(!late.status.success());
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("is not running"),
        "{late:?}"
    );
    assert!(service
        .ok(&["ps", "-a", "-f", "status=exited"])
        .contains(&name));
    service.ok(&["rm", &name]);
    let gone = service.docker(&["inspect", &name]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("No such"));
}

#[test]
fn the_docker_cli_drives_husk_in_both_isolations() {
    let Some((service, vm)) = Service::start("the_docker_cli_drives_husk_in_both_isolations")
    else {
        return;
    };
    assert!(service
        .ok(&["version", "--format", "{{.Server.APIVersion}}"])
        .contains("1.41"));
    assert!(service.ok(&["images"]).contains("busybox"));
    cases(&service, "process");
    if vm {
        cases(&service, "vm");
    }
    assert!(
        service.ok(&["ps", "-a", "-q"]).trim().is_empty(),
        "--rm left containers"
    );

    // What husk cannot honour: one line, in Docker's error shape, nothing created.
    let refused = service.docker(&["run", "--rm", "--cpu-shares", "512", "busybox", "true"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("CpuShares is not supported by husk"),
        "{refused:?}"
    );
    let (code, body) = service.curl("POST", "/v1.41/containers/create", "{not json");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"message\""), "{body}");
    let (code, _) = service.curl("GET", "/v1.41/containers/nosuch/json", "");
    assert_eq!(code, 404);
    let (code, body) = service.curl("GET", "/v1.41/swarm", "");
    assert_eq!(code, 404, "{body}");
    assert!(service.ok(&["ps", "-a", "-q"]).trim().is_empty());
    images(&service);
}

/// Docker's getting-started walkthrough, verbatim but for the registry (a local
/// docker-registry: Docker Hub is out of reach), through the docker CLI: `run hello-world`
/// pulls it (the CLI's own pull on a missing image), `pull busybox`, `images`, `run busybox
/// echo`, `ps -a`, `run -it busybox sh` typed into on a terminal, `-d` with `logs -f`, a
/// volume made with `volume create` and used by two containers, `rm $(docker ps -a -q -f
/// status=exited)`, `rmi`; every run in both isolations.
#[test]
fn dockers_walkthrough_runs_through_husk_in_both_isolations() {
    let test = "dockers_walkthrough_runs_through_husk_in_both_isolations";
    for tool in ["docker-registry", "skopeo", "gcc"] {
        if !image_support::have(tool) {
            common::note_skip(test, &format!("{tool} is not installed (scripts/setup.sh)"));
            return;
        }
    }
    let Some((service, vm)) = Service::start_with(test, false) else {
        return;
    };
    let registry = image_support::Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    push_walkthrough_images(&registry, work.path());
    let hello = format!("{}/hello-world", registry.host());
    let busybox = format!("{}/busybox", registry.host());

    // `docker run hello-world` on an empty store: the CLI is told the image is missing,
    // pulls it through the service (its progress shown) and runs it.
    let out = service.docker(&["run", "--network", "none", &hello]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("Hello from husk!"), "{stdout}");
    // The progress stream as Docker's CLI shows it off a terminal: the layer's own steps,
    // the digest, the outcome.
    for line in [
        "Unable to find image",
        "latest: Pulling from hello-world",
        ": Pull complete",
        "Digest: sha256:",
        &format!("Status: Downloaded newer image for {hello}:latest"),
    ] {
        assert!(
            stderr.contains(line),
            "the CLI's pull lacks {line:?}: {stderr}"
        );
    }
    let pulled = service.ok(&["pull", &busybox]);
    assert!(
        pulled.contains(": Pull complete")
            && pulled.contains(&format!(
                "Status: Downloaded newer image for {busybox}:latest"
            )),
        "{pulled}"
    );
    let again = service.ok(&["pull", &busybox]);
    assert!(
        again.contains(&format!("Status: Image is up to date for {busybox}:latest"))
            && !again.contains("Pull complete")
            && !again.contains("Already exists"),
        "{again}"
    );
    let images = service.ok(&["images"]);
    assert!(images.starts_with("REPOSITORY"), "{images}");
    assert!(
        images.contains(&hello) && images.contains(&busybox),
        "{images}"
    );

    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let isolations: &[&str] = if vm { &["process", "vm"] } else { &["process"] };
    let mut runs = 1;
    for isolation in isolations {
        let run = |rest: &[&str]| -> Output {
            let mut args = vec!["run", "--isolation", isolation, "--network", "none"];
            args.extend_from_slice(rest);
            service.docker(&args)
        };
        let out = run(&[&hello]);
        assert_eq!(out.status.code(), Some(0));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("Hello from husk!"), "{said}");
        assert_eq!(
            said.contains(host_kernel.trim()),
            *isolation == "process",
            "hello-world names the kernel it ran on ({isolation}): {said}"
        );
        let out = run(&[&busybox, "echo", "hello from busybox"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from busybox\n");
        runs += 2;

        // `run -it busybox sh`: a shell on the client's terminal, its exit code the CLI's.
        let (transcript, code) = service.docker_typing(
            &[
                "run",
                "-it",
                "--isolation",
                isolation,
                "--network",
                "none",
                &busybox,
                "sh",
            ],
            "echo $((6*7)); exit 3\r",
        );
        assert!(transcript.contains("42"), "{transcript}");
        assert_eq!(code, Some(3), "{transcript}");
        runs += 1;

        // -d, then `logs -f`, which follows the container until it exits.
        let name = format!("counter-{isolation}");
        let count = "for i in 1 2 3; do echo tick $i; sleep 0.5; done";
        let id = run(&["-d", "--name", &name, &busybox, "sh", "-c", count]);
        assert!(id.status.success());
        let followed = service.ok(&["logs", "-f", &name]);
        assert_eq!(followed, "tick 1\ntick 2\ntick 3\n");
        runs += 1;

        // `volume create`, written by one container, read by the next.
        let volume = format!("data-{isolation}");
        assert_eq!(service.ok(&["volume", "create", &volume]).trim(), volume);
        let mount = format!("{volume}:/data");
        let out = run(&["-v", &mount, &busybox, "sh", "-c", "echo kept > /data/note"]);
        assert!(out.status.success());
        let out = run(&["-v", &mount, &busybox, "cat", "/data/note"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
        runs += 2;
    }

    // `ps -a`: every run, newest first, all exited; then Docker's one-liner removes them.
    let ps = service.ok(&["ps", "-a"]);
    let rows: Vec<&str> = ps.lines().skip(1).collect();
    assert_eq!(rows.len(), runs, "{ps}");
    assert!(rows.iter().all(|r| r.contains("Exited (")), "{ps}");
    let exited = service.ok(&["ps", "-a", "-q", "-f", "status=exited"]);
    let exited: Vec<&str> = exited.split_whitespace().collect();
    assert_eq!(exited.len(), runs);
    let mut rm = vec!["rm"];
    rm.extend(exited);
    service.ok(&rm);
    assert!(service.ok(&["ps", "-a", "-q"]).trim().is_empty());

    for isolation in isolations {
        service.ok(&["volume", "rm", &format!("data-{isolation}")]);
    }
    let out = service.ok(&["rmi", &hello, &busybox]);
    assert!(
        out.contains(&format!("Untagged: {hello}:latest")) && out.contains("Deleted: sha256:"),
        "{out}"
    );
    assert!(service.ok(&["images", "-q"]).trim().is_empty());
    assert!(service.ok(&["volume", "ls", "-q"]).trim().is_empty());
}

/// busybox (the host's busybox-static, every applet) and hello-world (images/hello.c, built
/// static) pushed by skopeo into `registry` as `busybox` and `hello-world`.
fn push_walkthrough_images(registry: &image_support::Registry, work: &std::path::Path) {
    use image_support::{build_image, write_oci_layout, Comp};
    let rootfs = work.join("busybox");
    common::make_busybox_rootfs(&rootfs).unwrap();
    let tar = work.join("busybox.tar");
    common::tar_dir(&rootfs, &tar);
    let busybox = build_image(&[(std::fs::read(&tar).unwrap(), Comp::Gzip)], &["sh"]);

    let hello_dir = work.join("hello");
    std::fs::create_dir(&hello_dir).unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/images/hello.c");
    let built = Command::new("gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(hello_dir.join("hello"))
        .arg(source)
        .status()
        .unwrap();
    assert!(built.success(), "gcc -static {source}");
    let tar = work.join("hello.tar");
    common::tar_dir(&hello_dir, &tar);
    let hello = build_image(&[(std::fs::read(&tar).unwrap(), Comp::Gzip)], &["/hello"]);

    for (image, name) in [(busybox, "busybox"), (hello, "hello-world")] {
        let layout = work.join(format!("{name}-layout"));
        write_oci_layout(&layout, &image, "latest");
        registry.skopeo_push(&layout, "latest", &format!("{name}:latest"), None);
    }
}

/// tag, save, rmi, load and import through the API, each image run afterwards.
fn images(service: &Service) {
    let dir = service.husk.root.path();
    service.ok(&["tag", "busybox", "localhost/copy:v1"]);
    assert!(service.ok(&["images"]).contains("localhost/copy"));
    let archive = dir.join("copy.tar");
    service.ok(&["save", "-o", archive.to_str().unwrap(), "localhost/copy:v1"]);
    assert!(std::fs::metadata(&archive).unwrap().len() > 100_000);
    let out = service.ok(&["rmi", "localhost/copy:v1"]);
    assert_eq!(out.trim(), "Untagged: localhost/copy:v1");
    // The last name of an image in use needs force; without containers it deletes the image.
    service.ok(&[
        "create",
        "--name",
        "user",
        "--network",
        "none",
        "busybox",
        "true",
    ]);
    let refused = service.docker(&["rmi", "busybox"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("must force"),
        "{refused:?}"
    );
    service.ok(&["rm", "user"]);
    let out = service.ok(&["rmi", "busybox"]);
    assert!(
        out.contains("Untagged: busybox:latest") && out.contains("Deleted: sha256:"),
        "{out}"
    );
    assert!(!service.ok(&["images"]).contains("busybox"));

    let out = service.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("Loaded image: localhost/copy:v1"), "{out}");
    let run = service.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/copy:v1",
        "echo",
        "loaded",
    ]);
    assert_eq!(run, "loaded\n");

    // import: a root filesystem tar (from the body) becomes an image.
    let rootfs = dir.join("rootfs");
    common::make_busybox_rootfs(&rootfs).unwrap();
    let tarball = dir.join("rootfs.tar");
    common::tar_dir(&rootfs, &tarball);
    let tar = std::fs::read(&tarball).unwrap();
    let out = service.docker_with_input(
        &[
            "import",
            "-c",
            "CMD [\"echo\", \"from-cmd\"]",
            "-",
            "imported:v1",
        ],
        &tar,
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sha256:"));
    let run = service.ok(&["run", "--rm", "--network", "none", "imported:v1"]);
    assert_eq!(run, "from-cmd\n");
    let corrupt = service.docker_with_input(&["load"], b"not a tar at all");
    assert!(!corrupt.status.success());
    assert_eq!(
        service.ok(&["images", "-q"]).lines().count(),
        2,
        "a bad load kept something"
    );
}

/// A service for a compose test and the project directory holding `project`, whose
/// ISOLATION is vm when VMs run here (else process, which is also returned).
fn compose_project(test: &str, project: &str) -> Option<(Service, PathBuf, &'static str)> {
    if !std::path::Path::new("/usr/bin/docker-compose").exists() {
        common::note_skip(
            test,
            "Debian's docker-compose is not installed (scripts/setup.sh)",
        );
        return None;
    }
    let (service, vm) = Service::start(test)?;
    let dir = service.husk.root.path().join("project");
    std::fs::create_dir_all(&dir).unwrap();
    let isolation = if vm { "vm" } else { "process" };
    std::fs::write(
        dir.join("docker-compose.yml"),
        project.replace("ISOLATION", isolation),
    )
    .unwrap();
    Some((service, dir, isolation))
}

/// The project of the compose test: two services sharing a named volume, the writer a process
/// container and the reader (when VMs can run here) a VM, as compose's own `isolation` says.
const COMPOSE_PROJECT: &str = r#"version: "2.4"
services:
  writer:
    image: busybox
    network_mode: none
    labels:
      role: writer
    volumes: ["shared:/data"]
    command: ["sh", "-c", "trap 'exit 0' TERM; echo from-writer > /data/note; sleep 1000 & wait"]
  reader:
    image: busybox
    network_mode: none
    isolation: ISOLATION
    volumes: ["shared:/data"]
    command: ["sh", "-c", "trap 'exit 0' TERM; while [ ! -f /data/note ]; do sleep 0.2; done; cat /data/note; uname -r; sleep 1000 & wait"]
volumes:
  shared: {}
"#;

#[test]
fn docker_compose_brings_a_project_up_and_down_leaving_nothing() {
    let Some((service, dir, isolation)) = compose_project(
        "docker_compose_brings_a_project_up_and_down_leaving_nothing",
        COMPOSE_PROJECT,
    ) else {
        return;
    };
    let vm = isolation == "vm";
    let compose = |args: &[&str]| service.compose(&dir, "proj", args);
    assert!(compose(&["up", "-d"]).status.success());
    // The reader sees what the writer put in the shared volume, from its own kernel when VM.
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let logs = loop {
        let out = compose(&["logs", "--no-color", "reader"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("from-writer") && text.lines().count() >= 2 {
            break text;
        }
        assert!(Instant::now() < deadline, "the reader never saw the note");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        !logs.contains(host.trim()),
        vm,
        "the reader's kernel ({isolation}): {logs}"
    );
    let ps = String::from_utf8_lossy(&compose(&["ps"]).stdout).into_owned();
    assert!(
        ps.contains("proj_writer_1") && ps.contains("proj_reader_1"),
        "{ps}"
    );
    assert_eq!(
        service
            .ok(&[
                "inspect",
                "-f",
                "{{.HostConfig.Isolation}}",
                "proj_reader_1"
            ])
            .trim(),
        isolation
    );
    assert!(
        service
            .ok(&[
                "ps",
                "-q",
                "-f",
                "label=role=writer",
                "-f",
                "label=com.docker.compose.project=proj"
            ])
            .trim()
            .len()
            == 12
    );
    assert!(service.ok(&["volume", "ls", "-q"]).contains("proj_shared"));
    assert!(service
        .ok(&["volume", "inspect", "-f", "{{json .Labels}}", "proj_shared"])
        .contains("\"com.docker.compose.project\":\"proj\""));

    assert!(compose(&["down", "-v", "-t", "5"]).status.success());
    assert!(service.ok(&["ps", "-a", "-q"]).trim().is_empty());
    assert!(service.ok(&["volume", "ls", "-q"]).trim().is_empty());
    assert!(service.husk.ok(&["ps", "-a", "-q"]).trim().is_empty());
}

/// A project on compose's default network: the client (a VM when VMs run here) reaches the
/// web server (a process container) by its service name.
const COMPOSE_NETWORKED: &str = r#"version: "2.4"
services:
  web:
    image: busybox
    ports: ["127.0.0.1:18080:8080"]
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www"]
  client:
    image: busybox
    isolation: ISOLATION
    command: ["sh", "-c", "trap 'exit 0' TERM; until wget -q -O - http://web:8080/; do sleep 0.5; done; sleep 1000 & wait"]
"#;

#[test]
fn docker_compose_services_reach_each_other_by_name() {
    let Some((service, dir, _)) = compose_project(
        "docker_compose_services_reach_each_other_by_name",
        COMPOSE_NETWORKED,
    ) else {
        return;
    };
    let compose = |args: &[&str]| service.compose(&dir, "net", args);
    assert!(compose(&["up", "-d"]).status.success());
    let network = service.ok(&[
        "network",
        "inspect",
        "-f",
        "{{json .Labels}}",
        "net_default",
    ]);
    assert!(
        network.contains("\"com.docker.compose.network\":\"default\""),
        "{network}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = compose(&["logs", "--no-color", "client"]);
        if String::from_utf8_lossy(&out.stdout).contains("hello-from-web") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client never reached web by name"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The published port, as the CLI's PORTS column shows it from the container list.
    let listed = service.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains("web") && l.ends_with("127.0.0.1:18080->8080/tcp")),
        "{listed}"
    );
    let page = Command::new("curl")
        .args(["-s", "--max-time", "10", "http://127.0.0.1:18080/"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&page.stdout), "hello-from-web\n");
    assert!(compose(&["down", "-t", "2"]).status.success());
    assert!(service.ok(&["ps", "-a", "-q"]).trim().is_empty());
    assert!(!service.ok(&["network", "ls"]).contains("net_default"));
}

/// The same docker CLI commands on husk's service and on dockerd, where one answers here
/// (scripts/test.sh starts it), on one busybox image imported into both: exit codes, stdout
/// and the logs' two streams, inspect fields, the ps and images columns and cells, and the
/// CLI's lines for a missing container, which it builds from each engine's 404.
#[test]
fn the_docker_cli_sees_husk_as_it_sees_dockerd() {
    let dockerd = |args: &[&str]| -> Output {
        let out = Command::new("/usr/bin/docker")
            .env_remove("DOCKER_HOST")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "dockerd: docker {args:?} -> {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let test = "the_docker_cli_sees_husk_as_it_sees_dockerd";
    if !dockerd(&["info", "--format", "{{.ServerVersion}}"])
        .status
        .success()
    {
        common::note_skip(test, "no dockerd answers here (scripts/test.sh starts one)");
        return;
    }
    let Some((service, _)) = Service::start(test) else {
        return;
    };
    let text = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    common::make_busybox_rootfs(&rootfs).unwrap();
    let tar = dir.path().join("rootfs.tar");
    common::tar_dir(&rootfs, &tar);
    let tag = format!("hapi-{}:latest", std::process::id());
    let prefix = format!("hapi-{}-", std::process::id());
    let tar_arg = tar.to_str().unwrap();
    for import in [
        service.docker(&["import", "--change", "CMD [\"sh\"]", tar_arg, &tag]),
        dockerd(&["import", "--change", "CMD [\"sh\"]", tar_arg, &tag]),
    ] {
        assert!(import.status.success(), "{import:?}");
    }
    // dockerd's containers and image go with the test, passed or not.
    struct DockerdLeftovers(String, String);
    impl Drop for DockerdLeftovers {
        fn drop(&mut self) {
            let docker = |args: &[&str]| {
                Command::new("/usr/bin/docker")
                    .env_remove("DOCKER_HOST")
                    .args(args)
                    .output()
            };
            if let Ok(out) = docker(&["ps", "-a", "-q", "--filter", &format!("name={}", self.0)]) {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = docker(&["rm", "-f", id]);
                }
            }
            let _ = docker(&["rmi", "-f", &self.1]);
        }
    }
    let _leftovers = DockerdLeftovers(prefix.clone(), tag.clone());

    let cases: &[(&str, &[&str])] = &[
        ("echo", &["echo", "hello from busybox"]),
        ("exit3", &["sh", "-c", "echo out; echo err >&2; exit 3"]),
        ("missing", &["no-such-command"]),
        ("notexec", &["/etc"]),
    ];
    for (name, cmd) in cases {
        let husk_name = format!("{prefix}{name}-husk");
        let docker_name = format!("{prefix}{name}-docker");
        let run = |container: &str| {
            let mut args = vec!["run", "--network", "none", "--name", container, &tag];
            args.extend_from_slice(cmd);
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
        };
        let husk_args = run(&husk_name);
        let docker_args = run(&docker_name);
        let husk = service.docker(&husk_args.iter().map(String::as_str).collect::<Vec<_>>());
        let docker = dockerd(&docker_args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            husk.status.code(),
            docker.status.code(),
            "exit code of {cmd:?}"
        );
        assert_eq!(text(&husk), text(&docker), "stdout of {cmd:?}");
        for field in [
            "{{.State.Status}}",
            "{{.State.ExitCode}}",
            "{{.State.Running}}",
            "{{.State.Paused}}",
            "{{.Path}}",
            "{{.Config.Cmd}}",
            "{{.Config.Image}}",
        ] {
            assert_eq!(
                text(&service.docker(&["inspect", "-f", field, &husk_name])),
                text(&dockerd(&["inspect", "-f", field, &docker_name])),
                "inspect {field} for {cmd:?}"
            );
        }
    }
    let logs = |out: Output| {
        (
            text(&out),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(
        logs(service.docker(&["logs", &format!("{prefix}exit3-husk")])),
        logs(dockerd(&["logs", &format!("{prefix}exit3-docker")])),
        "logs, both streams"
    );

    // ps -a and images: the same columns; the same IMAGE, COMMAND and STATUS (up to its time).
    let cells = |line: &str| -> Vec<String> {
        line.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let row = |table: &str, name: &str| -> Vec<String> {
        cells(
            table
                .lines()
                .find(|l| l.contains(name))
                .unwrap_or_else(|| panic!("no row for {name} in:\n{table}")),
        )
    };
    let filter = format!("name={prefix}");
    let husk_ps = text(&service.docker(&["ps", "-a", "--filter", &filter]));
    let docker_ps = text(&dockerd(&["ps", "-a", "--filter", &filter]));
    assert_eq!(
        cells(husk_ps.lines().next().unwrap()),
        cells(docker_ps.lines().next().unwrap()),
        "ps header"
    );
    let status = |s: &str| s.split(')').next().unwrap_or(s).to_string();
    for (name, _) in cases {
        let (h, d) = (
            row(&husk_ps, &format!("{name}-husk")),
            row(&docker_ps, &format!("{name}-docker")),
        );
        assert_eq!(h[1], d[1], "IMAGE of {name}");
        assert_eq!(h[2], d[2], "COMMAND of {name}");
        assert_eq!(status(&h[4]), status(&d[4]), "STATUS of {name}");
    }
    let husk_images = text(&service.docker(&["images", &tag]));
    let docker_images = text(&dockerd(&["images", &tag]));
    assert_eq!(
        cells(husk_images.lines().next().unwrap()),
        cells(docker_images.lines().next().unwrap()),
        "images header"
    );
    let repo = tag.split(':').next().unwrap();
    let (h, d) = (row(&husk_images, repo), row(&docker_images, repo));
    assert_eq!((&h[0], &h[1]), (&d[0], &d[1]), "REPOSITORY and TAG");

    // What the CLI prints for a missing container, from each engine's 404.
    for verb in [&["rm"][..], &["stop"], &["logs"], &["inspect"], &["start"]] {
        let mut args = verb.to_vec();
        args.push("hapi-no-such-container");
        let (h, d) = (service.docker(&args), dockerd(&args));
        assert_eq!(h.status.code(), d.status.code(), "{args:?}");
        assert_eq!(h.stderr, d.stderr, "{args:?}");
    }
}
