//! The guest agent's request loop run on the host over a socketpair, driven by husk's agent
//! client: the same code paths as in the microVM minus the PID 1 setup (mounts, hostname,
//! reboot). Needs /bin/sh and coreutils-style tools on the host; nothing else.

mod common;

use std::io::{Cursor, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use husk::vm::{connect_agent, run_in_guest};
use rootfs_agent::agent::{serve, AgentError, ServeOptions, SessionEnd};
use rootfs_agent::client::{AgentClient, ProcessIo};
use rootfs_agent::protocol::{
    read_frame, Frame, FrameKind, GuestHook, ProcessSpec, ReadyInfo, StartRequest, INITIAL_WINDOW,
};

/// A shared buffer usable as a `Write + Send` sink.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

fn ready_info() -> ReadyInfo {
    ReadyInfo {
        protocol: 1,
        agent_version: "test".into(),
        console: "socketpair".into(),
        ..ReadyInfo::default()
    }
}

/// Start the agent loop on one end of a socketpair; returns the host end.
fn agent() -> (UnixStream, JoinHandle<Result<SessionEnd, AgentError>>) {
    let (host, guest) = UnixStream::pair().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let handle = thread::spawn(move || serve(guest.into(), &ready_info(), ServeOptions::default()));
    (host, handle)
}

fn sh(script: &str) -> StartRequest {
    StartRequest {
        process: ProcessSpec::new(["/bin/sh", "-c", script]),
        hostname: None,
        readonly_root: false,
        mounts: Vec::new(),
        ..Default::default()
    }
}

fn run(
    start: StartRequest,
    stdin: Option<Box<dyn Read + Send>>,
) -> (i32, Capture, Capture, Result<SessionEnd, AgentError>) {
    let (host, handle) = agent();
    let (out, err) = (Capture::default(), Capture::default());
    let code = run_in_guest(
        host,
        start,
        stdin,
        Box::new(out.clone()),
        Box::new(err.clone()),
    )
    .unwrap();
    let end = handle.join().unwrap();
    (code, out, err, end)
}

#[test]
fn echo_and_exit_status() {
    let (code, out, err, end) = run(sh("echo hello; echo oops >&2; exit 0"), None);
    assert_eq!(code, 0);
    assert_eq!(out.text(), "hello\n");
    assert_eq!(err.text(), "oops\n");
    assert_eq!(end.unwrap(), SessionEnd::Exited(0));
}

#[test]
fn exit_codes_follow_shell_conventions() {
    assert_eq!(run(sh("exit 1"), None).0, 1);
    assert_eq!(run(sh("kill -9 $$"), None).0, 137);
    let (code, _, err, _) = run(
        StartRequest {
            process: ProcessSpec::new(["/nonexistent/program"]),
            hostname: None,
            readonly_root: false,
            mounts: Vec::new(),
            ..Default::default()
        },
        None,
    );
    assert_eq!(code, 127);
    assert!(
        err.text().contains("/nonexistent/program"),
        "{}",
        err.text()
    );
    let tmp = tempfile::tempdir().unwrap();
    let not_exec = tmp.path().join("data");
    std::fs::write(&not_exec, "x").unwrap();
    let (code, _, _, _) = run(
        StartRequest {
            process: ProcessSpec::new([not_exec.to_str().unwrap()]),
            hostname: None,
            readonly_root: false,
            mounts: Vec::new(),
            ..Default::default()
        },
        None,
    );
    assert_eq!(code, 126);
}

/// husk-runc's startContainer hooks for a VM: run in order, with the state on stdin and only
/// their own environment, before the process; a failing one stops the start with its stderr.
#[test]
fn start_hooks_run_before_the_process_and_a_failing_one_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display();
    let hook = |script: String, env: Vec<String>| GuestHook {
        path: "/bin/sh".into(),
        args: vec!["sh".into(), "-c".into(), script],
        env,
        timeout: None,
    };
    let mut start = sh(&format!("cat {dir}/first {dir}/second"));
    start.hook_state = r#"{"id":"v9","status":"created"}"#.into();
    start.start_hooks = vec![
        hook(format!("cat > {dir}/first; echo"), Vec::new()),
        hook(
            format!("echo \" $MARK\" > {dir}/second"),
            vec!["MARK=second-hook".into()],
        ),
    ];
    let (code, out, err, _) = run(start, None);
    assert_eq!(code, 0, "{}", err.text());
    assert_eq!(
        out.text(),
        "{\"id\":\"v9\",\"status\":\"created\"} second-hook\n"
    );

    let mut start = sh(&format!("touch {dir}/process-ran"));
    start.start_hooks = vec![hook("echo refused >&2; exit 3".into(), Vec::new())];
    let (code, _, err, _) = run(start, None);
    assert_ne!(code, 0);
    assert!(
        err.text().contains("startContainer hook /bin/sh"),
        "{}",
        err.text()
    );
    assert!(err.text().contains("refused"), "{}", err.text());
    assert!(!tmp.path().join("process-ran").exists());

    let mut start = sh(&format!("touch {dir}/process-ran"));
    start.start_hooks = vec![GuestHook {
        timeout: Some(1),
        ..hook("sleep 30".into(), Vec::new())
    }];
    let (code, _, err, _) = run(start, None);
    assert_ne!(code, 0);
    assert!(err.text().contains("timeout of 1s"), "{}", err.text());
    assert!(!tmp.path().join("process-ran").exists());
}

#[test]
fn env_cwd_and_identity_are_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let mut start = sh("echo $GREETING; pwd; id -u; id -g; ulimit -n");
    start.process.env.push("GREETING=hi there".into());
    start.process.cwd = tmp.path().to_str().unwrap().into();
    start.process.rlimits.push(rootfs_agent::protocol::Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 77,
        hard: 77,
    });
    if common::is_root() {
        start.process.uid = 65534;
        start.process.gid = 65534;
    }
    let (code, out, err, _) = run(start, None);
    assert_eq!(code, 0, "{}", err.text());
    let lines: Vec<String> = out.text().lines().map(String::from).collect();
    assert_eq!(lines[0], "hi there");
    assert_eq!(lines[1], tmp.path().to_str().unwrap());
    if common::is_root() {
        assert_eq!(lines[2], "65534");
        assert_eq!(lines[3], "65534");
    }
    assert_eq!(lines[4], "77");
}

#[test]
fn stdin_larger_than_the_window_is_piped_through() {
    // Four windows' worth: the client must wait for credits, the agent must grant them.
    let data: Vec<u8> = (0..INITIAL_WINDOW as usize * 4)
        .map(|i| (i % 251) as u8)
        .collect();
    let (code, out, _, _) = run(sh("cat"), Some(Box::new(Cursor::new(data.clone()))));
    assert_eq!(code, 0);
    assert_eq!(out.len(), data.len());
    assert_eq!(*out.0.lock().unwrap(), data);
}

#[test]
fn output_larger_than_the_window_arrives_complete() {
    let (code, out, _, _) = run(sh("head -c 3000000 /dev/zero"), None);
    assert_eq!(code, 0);
    assert_eq!(out.len(), 3_000_000);
}

#[test]
fn terminal_process_gets_a_pty_and_resizes() {
    let mut start = sh("test -t 0 && test -t 1 && echo is-a-tty; stty size");
    start.process.terminal = true;
    start.process.console_size = Some((33, 101));
    let (code, out, _, _) = run(start, None);
    assert_eq!(code, 0);
    let text = out.text();
    assert!(text.contains("is-a-tty\r\n"), "{text:?}");
    assert!(text.contains("33 101"), "{text:?}");
}

#[test]
fn exec_signal_and_resize_in_a_running_session() {
    let (host, handle) = agent();
    let client: AgentClient = connect_agent(host).unwrap();
    assert_eq!(client.ready().console, "socketpair");
    let main_out = Capture::default();
    let main = client
        .start(
            &sh("echo started; exec sleep 60"),
            ProcessIo {
                stdin: None,
                stdout: Box::new(main_out.clone()),
                stderr: Box::new(std::io::sink()),
            },
        )
        .unwrap();
    assert!(main.pid().unwrap().unwrap() > 0);

    let exec = |spec: ProcessSpec| {
        let out = Capture::default();
        let p = client
            .exec(
                &spec,
                ProcessIo {
                    stdin: None,
                    stdout: Box::new(out.clone()),
                    stderr: Box::new(std::io::sink()),
                },
            )
            .unwrap();
        (p.wait().unwrap(), out.text())
    };
    assert_eq!(
        exec(ProcessSpec::new(["/bin/sh", "-c", "echo from-exec"])),
        (0, "from-exec\n".into())
    );
    assert_eq!(exec(ProcessSpec::new(["/bin/sh", "-c", "exit 1"])).0, 1);
    assert_eq!(exec(ProcessSpec::new(["no-such-program-anywhere"])).0, 127);

    // A terminal exec, resized while it waits for input.
    let mut tty = ProcessSpec::new(["/bin/sh", "-c", "read x; stty size"]);
    tty.terminal = true;
    tty.console_size = Some((10, 20));
    let (stdin_r, mut stdin_w) = UnixStream::pair().unwrap();
    let tty_out = Capture::default();
    let p = client
        .exec(
            &tty,
            ProcessIo {
                stdin: Some(Box::new(stdin_r)),
                stdout: Box::new(tty_out.clone()),
                stderr: Box::new(std::io::sink()),
            },
        )
        .unwrap();
    p.pid().unwrap();
    p.resize(40, 132).unwrap();
    stdin_w.write_all(b"go\n").unwrap();
    assert_eq!(p.wait().unwrap(), 0);
    assert!(tty_out.text().contains("40 132"), "{:?}", tty_out.text());

    main.signal(15).unwrap();
    assert_eq!(main.wait().unwrap(), 128 + 15);
    assert_eq!(main_out.text(), "started\n");
    assert_eq!(handle.join().unwrap().unwrap(), SessionEnd::Exited(143));
}

#[test]
fn host_closing_the_connection_kills_the_processes() {
    let (host, handle) = agent();
    let client = connect_agent(host.try_clone().unwrap()).unwrap();
    let marker = tempfile::tempdir().unwrap();
    let pidfile = marker.path().join("pid");
    let p = client
        .start(
            &sh(&format!("echo $$ > {}; exec sleep 60", pidfile.display())),
            ProcessIo {
                stdin: None,
                stdout: Box::new(std::io::sink()),
                stderr: Box::new(std::io::sink()),
            },
        )
        .unwrap();
    let pid = p.pid().unwrap().unwrap();
    host.shutdown(std::net::Shutdown::Both).unwrap();
    assert_eq!(handle.join().unwrap().unwrap(), SessionEnd::HostClosed);
    // The agent killed and reaped it: the pid no longer exists.
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err());
}

/// Raw frames from a misbehaving host: each must end the session with an error report, never
/// a crash or a hang.
#[test]
fn protocol_violations_are_reported_and_end_the_session() {
    let stdin_flood = {
        let mut v = Frame::json(
            FrameKind::Start,
            0,
            &StartRequest {
                process: ProcessSpec::new(["/bin/sh", "-c", "sleep 30"]),
                hostname: None,
                readonly_root: false,
                mounts: Vec::new(),
                ..Default::default()
            },
        )
        .unwrap()
        .encode();
        // More stdin than the agent granted.
        // The pipe to the process absorbs up to 64 KiB (credited back); send well past both.
        for _ in 0..=((INITIAL_WINDOW as usize + (256 << 10)) / 32768) {
            v.extend(Frame::new(FrameKind::Stdin, 0, vec![b'x'; 32768]).encode());
        }
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("oversized", {
            let mut h = Frame::new(FrameKind::Stdin, 0, vec![]).encode();
            h[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
            h
        }),
        (
            "stdin before start",
            Frame::new(FrameKind::Stdin, 0, b"x".to_vec()).encode(),
        ),
        (
            "exec before start",
            Frame::json(FrameKind::Exec, 1, &ProcessSpec::new(["true"]))
                .unwrap()
                .encode(),
        ),
        (
            "agent-only kind",
            Frame::new(FrameKind::Stdout, 0, b"x".to_vec()).encode(),
        ),
        (
            "bad json",
            Frame::new(FrameKind::Start, 0, b"{not json".to_vec()).encode(),
        ),
        (
            "empty argv",
            Frame::new(FrameKind::Start, 0, br#"{"process":{"args":[]}}"#.to_vec()).encode(),
        ),
        ("stdin beyond window", stdin_flood),
    ];
    for (name, bytes) in cases {
        let (mut host, handle) = agent();
        let ready = read_frame(&mut host).unwrap().unwrap();
        assert_eq!(ready.kind, FrameKind::Ready);
        // The agent may hang up before taking everything.
        let _ = host.write_all(&bytes);
        let result = handle.join().unwrap();
        assert!(
            matches!(result, Err(AgentError::Protocol(_))),
            "{name}: {result:?}"
        );
        // The last frame the agent sent says why.
        let mut last = None;
        while let Ok(Some(f)) = read_frame(&mut host) {
            last = Some(f);
        }
        let last = last.unwrap_or_else(|| panic!("{name}: no error report"));
        assert_eq!(last.kind, FrameKind::Error, "{name}");
    }
}

#[test]
fn exec_processes_die_and_report_before_the_container_process_exit() {
    let (host, handle) = agent();
    let client = connect_agent(host).unwrap();
    let (_w, r) = UnixStream::pair().unwrap();
    let main = client
        .start(
            &sh("read line"),
            ProcessIo {
                stdin: Some(Box::new(r)),
                stdout: Box::new(std::io::sink()),
                stderr: Box::new(std::io::sink()),
            },
        )
        .unwrap();
    let long = client
        .exec(
            &ProcessSpec::new(["/bin/sh", "-c", "exec sleep 60"]),
            ProcessIo {
                stdin: None,
                stdout: Box::new(std::io::sink()),
                stderr: Box::new(std::io::sink()),
            },
        )
        .unwrap();
    long.pid().unwrap().unwrap();
    main.signal(9).unwrap();
    assert_eq!(main.wait().unwrap(), 137);
    // The exec process was killed with the sandbox and its Exit arrived before the session ended.
    assert_eq!(long.wait().unwrap(), 137);
    assert_eq!(handle.join().unwrap().unwrap(), SessionEnd::Exited(137));
}

/// A host that floods requests without ever reading replies is throttled, not buffered for.
#[test]
fn host_that_never_reads_is_not_buffered_without_bound() {
    let (mut host, handle) = agent();
    read_frame(&mut host).unwrap().unwrap();
    let start = StartRequest {
        process: ProcessSpec::new(["/bin/sh", "-c", "sleep 60"]),
        hostname: None,
        readonly_root: false,
        mounts: Vec::new(),
        ..Default::default()
    };
    host.write_all(&Frame::json(FrameKind::Start, 0, &start).unwrap().encode())
        .unwrap();
    // Each failing exec makes the agent queue a Stderr and an Exit frame for us.
    host.set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut sent = 0u32;
    let mut blocked = false;
    for id in 1..2_000_000u32 {
        let frame = Frame::json(FrameKind::Exec, id, &ProcessSpec::new(["/nonexistent"])).unwrap();
        if host.write_all(&frame.encode()).is_err() {
            blocked = true;
            break;
        }
        sent = id;
    }
    assert!(
        blocked,
        "the agent kept reading {sent} requests although nobody read its replies"
    );
    // Now read: the agent drains its queue, resumes, and the session is still healthy.
    host.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut exits = 0;
    while exits < 10 {
        let f = read_frame(&mut host).unwrap().unwrap();
        if f.kind == FrameKind::Exit {
            exits += 1;
        }
    }
    drop(host);
    assert_eq!(handle.join().unwrap().unwrap(), SessionEnd::HostClosed);
}

/// The client treats the guest as hostile: out-of-order, unknown-id and garbage frames from a
/// fake agent end the session with an error from `wait`, never a panic or a hang.
#[test]
fn hostile_agent_frames_are_errors_on_the_host() {
    use rootfs_agent::client::ClientError;
    let ready = Frame::json(FrameKind::Ready, 0, &ready_info())
        .unwrap()
        .encode();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\x01garbage-garbage-garbage".to_vec()),
        (
            "host-only kind",
            Frame::new(FrameKind::Stdin, 0, b"x".to_vec()).encode(),
        ),
        (
            "unknown process",
            Frame::new(FrameKind::Stdout, 77, b"x".to_vec()).encode(),
        ),
        (
            "bad exit json",
            Frame::new(FrameKind::Exit, 0, b"{]".to_vec()).encode(),
        ),
        ("short credit", {
            let mut f = Frame::credit(0, 1).encode();
            f[12] = 3;
            f.truncate(19);
            f
        }),
        ("oversized", {
            let mut f = Frame::new(FrameKind::Stdout, 0, Vec::new()).encode();
            f[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
            f
        }),
        (
            "output beyond the granted window",
            Frame::new(
                FrameKind::Stdout,
                0,
                vec![b'x'; rootfs_agent::protocol::INITIAL_WINDOW as usize + 1],
            )
            .encode(),
        ),
        (
            "hang-up mid-frame",
            Frame::new(FrameKind::Stdout, 0, b"abcdef".to_vec()).encode()[..18].to_vec(),
        ),
    ];
    for (name, bytes) in cases {
        let (host, mut fake_agent) = UnixStream::pair().unwrap();
        fake_agent.write_all(&ready).unwrap();
        let client = connect_agent(host).unwrap();
        let p = client
            .start(
                &sh("true"),
                ProcessIo {
                    stdin: None,
                    stdout: Box::new(std::io::sink()),
                    stderr: Box::new(std::io::sink()),
                },
            )
            .unwrap();
        fake_agent.write_all(&bytes).unwrap();
        fake_agent.shutdown(std::net::Shutdown::Write).unwrap();
        let result = p.wait();
        assert!(
            matches!(result, Err(ClientError::Closed(0, _))),
            "{name}: {result:?}"
        );
        if name == "output beyond the granted window" {
            // Refused as a violation, not delivered and ended by the hang-up that follows.
            let why = result.unwrap_err().to_string();
            assert!(why.contains("beyond the granted window"), "{why}");
        }
    }
    // Not a Ready first: refused at connect.
    let (host, mut fake_agent) = UnixStream::pair().unwrap();
    fake_agent
        .write_all(
            &Frame::json(
                FrameKind::Exit,
                0,
                &rootfs_agent::protocol::ExitStatus {
                    code: 0,
                    oom_killed: false,
                },
            )
            .unwrap()
            .encode(),
        )
        .unwrap();
    assert!(matches!(
        connect_agent(host),
        Err(husk::vm::VmError::Client(ClientError::NotReady(
            FrameKind::Exit
        )))
    ));
}

/// Huge names the host sends come back in error messages bounded, and the session stays framed.
#[test]
fn huge_program_name_is_reported_bounded() {
    let name = format!("/{}", "\u{1F600}".repeat(200_000));
    let (code, _, err, end) = run(
        StartRequest {
            process: ProcessSpec::new([name.as_str()]),
            hostname: None,
            readonly_root: false,
            mounts: Vec::new(),
            ..Default::default()
        },
        None,
    );
    assert_eq!(code, 127);
    assert!(err.text().len() < 8192, "{} bytes", err.text().len());
    assert_eq!(end.unwrap(), SessionEnd::Exited(127));
}
