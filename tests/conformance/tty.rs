//! `-t`: the program gets a terminal of the container's own devpts, with the size of husk's.
use std::io::Read;
use std::os::fd::AsFd;
use std::process::Stdio;

use crate::support::*;

in_every_isolation!(the_terminal_is_a_pty_of_the_callers_size);

fn the_terminal_is_a_pty_of_the_callers_size(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let size = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    // No wait before `stty`: the pty has the caller's size before the program starts (the
    // process's consoleSize on the host, the start request's size in a VM).
    let slave = || Stdio::from(pty.slave.as_fd().try_clone_to_owned().unwrap());
    let mut child = husk
        .cmd()
        .args([
            "run",
            "--rm",
            "-t",
            "--isolation",
            iso,
            "busybox",
            "sh",
            "-c",
            "stty size; tty",
        ])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    drop(pty.slave);
    let status = child.wait().unwrap();
    let mut out = Vec::new();
    // EIO once the last slave is closed ends the read.
    let _ = std::fs::File::from(pty.master).read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(status.success(), "{out}");
    assert!(out.contains("33 101\r\n"), "{out:?}");
    assert!(out.contains("/dev/pts/0\r\n"), "{out:?}");
}
