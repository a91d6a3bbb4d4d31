//! `-i`: stdin reaches the program whole, and its end is an end of file.
use std::io::Write;
use std::process::Stdio;

use crate::support::*;

in_every_isolation!(stdin_arrives_whole_and_ends);

fn stdin_arrives_whole_and_ends(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut child = husk
        .cmd()
        .args([
            "run",
            "--rm",
            "-i",
            "--isolation",
            iso,
            "busybox",
            "sh",
            "-c",
            "md5sum; echo done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = input.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    let digest = std::process::Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&input)?;
            c.wait_with_output()
        })
        .unwrap();
    let want = String::from_utf8_lossy(&digest.stdout);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{want}done\n")
    );
}
