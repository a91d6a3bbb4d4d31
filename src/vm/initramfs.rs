//! The guest's initramfs: a cpio (newc) archive whose /init is the static rootfs-agent,
//! cached by the agent binary's hash.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::VmError;

/// Build (or reuse) `<root>/vm/initramfs/<sha256 of agent>.cpio` holding the agent as /init plus
/// the few nodes the kernel and agent need before devtmpfs is mounted.
pub fn initramfs(root: &Path, agent_binary: &Path) -> Result<PathBuf, VmError> {
    let agent =
        fs::read(agent_binary).map_err(VmError::io("reading agent binary", agent_binary))?;
    if !agent.starts_with(b"\x7fELF") {
        return Err(VmError::Invalid(format!(
            "{} is not an ELF executable",
            agent_binary.display()
        )));
    }
    let hash = hex::encode(Sha256::digest(&agent));
    let dir = root.join("vm/initramfs");
    let out = dir.join(format!("{}.cpio", &hash[..32]));
    if out.exists() {
        return Ok(out);
    }
    fs::create_dir_all(&dir).map_err(VmError::io("creating", &dir))?;
    let archive = build_cpio(&agent);
    let tmp = dir.join(format!(".tmp-{}-{}", &hash[..16], std::process::id()));
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&archive).and_then(|_| f.sync_all()))
        .map_err(VmError::io("writing", &tmp))
        .and_then(|_| fs::rename(&tmp, &out).map_err(VmError::io("renaming into place", &out)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|_| out)
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// The archive bytes: directories, /dev/console (5:1) so the kernel can give init a console,
/// and /init.
pub fn build_cpio(agent: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(agent.len() + 4096);
    let mut ino = 1;
    let mut entry = |out: &mut Vec<u8>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        push_entry(out, ino, name, mode, rdev, data);
        ino += 1;
    };
    for dir in ["dev", "proc", "sys", "newroot", "image", "rw"] {
        entry(&mut out, dir, S_IFDIR | 0o755, (0, 0), &[]);
    }
    entry(&mut out, "dev/console", S_IFCHR | 0o600, (5, 1), &[]);
    entry(&mut out, "init", S_IFREG | 0o755, (0, 0), agent);
    push_entry(&mut out, 0, "TRAILER!!!", 0, (0, 0), &[]);
    out
}

fn push_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
    // newc: magic then 13 eight-digit hex fields: ino, mode, uid, gid, nlink, mtime, filesize,
    // devmajor, devminor, rdevmajor, rdevminor, namesize (with NUL), check.
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn cpio_is_readable_by_cpio_tool() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = b"\x7fELF fake agent body".to_vec();
        let path = tmp.path().join("a.cpio");
        fs::write(&path, build_cpio(&agent)).unwrap();
        let listing = Command::new("cpio")
            .args(["-t", "-v", "-F"])
            .arg(&path)
            .output();
        let Ok(listing) = listing else {
            eprintln!("SKIP cpio listing: the cpio tool is not installed");
            return;
        };
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(
            listing.status.success(),
            "{}",
            String::from_utf8_lossy(&listing.stderr)
        );
        assert!(text.contains("init"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with('c') && l.contains("dev/console")),
            "{text}"
        );
    }

    #[test]
    fn cached_by_agent_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = tmp.path().join("agent");
        fs::write(&agent, b"\x7fELF one").unwrap();
        let first = initramfs(tmp.path(), &agent).unwrap();
        assert_eq!(initramfs(tmp.path(), &agent).unwrap(), first);
        fs::write(&agent, b"\x7fELF two").unwrap();
        assert_ne!(initramfs(tmp.path(), &agent).unwrap(), first);
        fs::write(&agent, b"#!/bin/sh").unwrap();
        assert!(initramfs(tmp.path(), &agent).is_err());
    }
}
