//! T0: layer unpacking with hand-built hostile and well-formed tarballs. Root-only parts
//! (ownership, device nodes, overlay whiteouts) skip with the reason when not root.

mod common;
mod image_support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use husk::image::unpack::unpack_layer;
use husk::image::ImageError;
use image_support::{compress, sha256, Comp, TarBuilder};

fn unpack(tar: &[u8], dest: &Path) -> Result<husk::image::unpack::Unpacked, ImageError> {
    fs::create_dir_all(dest).unwrap();
    unpack_layer(tar, dest)
}

#[test]
fn dotdot_entries_are_refused_and_nothing_is_written_outside() {
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("layer");
    let tar = TarBuilder::new()
        .file("ok", b"fine", 0o644)
        .file("../escaped", b"evil", 0o644)
        .finish();
    let err = unpack(&tar, &dest).unwrap_err();
    assert!(matches!(err, ImageError::UnsafeArchive(_)), "{err}");
    assert!(err.to_string().contains(".."), "{err}");
    assert!(!base.path().join("escaped").exists());
    let tar = TarBuilder::new()
        .file("a/../../escaped2", b"evil", 0o644)
        .finish();
    assert!(unpack(&tar, &dest).is_err());
    assert!(!base.path().join("escaped2").exists());
}

#[test]
fn absolute_names_land_inside_the_layer() {
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("abs-target");
    let dest = base.path().join("layer");
    let name = format!("{}/file", outside.display());
    let tar = TarBuilder::new().file(&name, b"inside", 0o644).finish();
    unpack(&tar, &dest).unwrap();
    assert!(
        !outside.exists(),
        "absolute entry escaped to {}",
        outside.display()
    );
    let inside = dest.join(name.trim_start_matches('/'));
    assert_eq!(fs::read(inside).unwrap(), b"inside");
}

#[test]
fn symlinked_parent_directories_are_never_followed() {
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("outside");
    fs::create_dir(&outside).unwrap();
    for target in [
        outside.display().to_string(),
        "../outside".to_string(),
        "..".to_string(),
    ] {
        let dest = base.path().join(format!("layer-{}", target.len()));
        let tar = TarBuilder::new()
            .symlink("link", &target)
            .file("link/pwned", b"evil", 0o644)
            .finish();
        let err = unpack(&tar, &dest).unwrap_err();
        assert!(
            matches!(err, ImageError::UnsafeArchive(_)),
            "{target}: {err}"
        );
        assert!(
            !outside.join("pwned").exists(),
            "{target}: wrote through the symlink"
        );
        assert!(!base.path().join("pwned").exists());
    }
}

#[test]
fn a_file_replacing_a_symlink_does_not_write_through_it() {
    let base = tempfile::tempdir().unwrap();
    let victim = base.path().join("victim");
    fs::write(&victim, b"original").unwrap();
    let dest = base.path().join("layer");
    let tar = TarBuilder::new()
        .symlink("f", &victim.display().to_string())
        .file("f", b"replacement", 0o600)
        .finish();
    unpack(&tar, &dest).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    let meta = fs::symlink_metadata(dest.join("f")).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"replacement");
}

#[test]
fn symlinks_pointing_out_are_kept_as_links_only() {
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("layer");
    let tar = TarBuilder::new()
        .symlink("etc-link", "/etc")
        .symlink("up", "../../..")
        .finish();
    unpack(&tar, &dest).unwrap();
    assert_eq!(
        fs::read_link(dest.join("etc-link")).unwrap(),
        Path::new("/etc")
    );
    assert_eq!(
        fs::read_link(dest.join("up")).unwrap(),
        Path::new("../../..")
    );
}

#[test]
fn hardlinks_must_point_at_earlier_entries_inside_the_layer() {
    let base = tempfile::tempdir().unwrap();
    let secret = base.path().join("secret");
    fs::write(&secret, b"host secret").unwrap();
    let cases = [
        TarBuilder::new().hardlink("h", "../secret").finish(),
        TarBuilder::new()
            .hardlink("h", &secret.display().to_string())
            .finish(),
        TarBuilder::new()
            .symlink("d", &base.path().display().to_string())
            .hardlink("h", "d/secret")
            .finish(),
    ];
    for (i, tar) in cases.iter().enumerate() {
        let dest = base.path().join(format!("layer{i}"));
        let err = unpack(tar, &dest).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::UnsafeArchive(_) | ImageError::BadArchive(_)
            ),
            "case {i}: {err}"
        );
        assert!(!dest.join("h").exists(), "case {i}: link created");
        assert_eq!(
            fs::metadata(&secret).unwrap().nlink(),
            1,
            "case {i}: host file got a new link"
        );
    }
    let dest = base.path().join("good");
    let tar = TarBuilder::new()
        .file("a", b"data", 0o644)
        .hardlink("b", "a")
        .finish();
    unpack(&tar, &dest).unwrap();
    assert_eq!(
        fs::metadata(dest.join("a")).unwrap().ino(),
        fs::metadata(dest.join("b")).unwrap().ino()
    );
}

#[test]
fn plain_gzip_and_zstd_give_the_same_tree_and_diff_id() {
    let tar = TarBuilder::new()
        .dir("dir/", 0o750)
        .file("dir/file", b"content", 0o640)
        .symlink("dir/link", "file")
        .finish();
    for comp in [Comp::None, Comp::Gzip, Comp::Zstd] {
        let base = tempfile::tempdir().unwrap();
        let dest = base.path().join("layer");
        let unpacked = unpack(&compress(&tar, comp), &dest).unwrap();
        assert_eq!(unpacked.diff_id, sha256(&tar), "{comp:?}");
        assert_eq!(unpacked.tar_size, tar.len() as u64);
        assert_eq!(fs::read(dest.join("dir/file")).unwrap(), b"content");
        assert_eq!(
            fs::metadata(dest.join("dir")).unwrap().permissions().mode() & 0o7777,
            0o750
        );
        assert_eq!(
            fs::metadata(dest.join("dir/file"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o640
        );
        assert_eq!(
            fs::metadata(dest.join("dir")).unwrap().mtime(),
            1_600_000_000
        );
        assert_eq!(
            fs::read_link(dest.join("dir/link")).unwrap(),
            Path::new("file")
        );
    }
}

#[test]
fn truncated_layers_fail_clearly() {
    let tar = TarBuilder::new()
        .file("big", &vec![7u8; 100_000], 0o644)
        .finish();
    for comp in [Comp::None, Comp::Gzip, Comp::Zstd] {
        let blob = compress(&tar, comp);
        let cut = &blob[..blob.len() / 2];
        let base = tempfile::tempdir().unwrap();
        let err = unpack(cut, &base.path().join("layer")).unwrap_err();
        assert!(matches!(err, ImageError::BadArchive(_)), "{comp:?}: {err}");
    }
}

#[test]
fn special_bits_ownership_and_devices_are_kept() {
    if !common::is_root() {
        skip!("ownership and device nodes need root");
    }
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("layer");
    let tar = TarBuilder::new()
        .file_owned("suid", b"x", 0o4755, 1000, 1001)
        .device("null", tar::EntryType::Char, 1, 3)
        .device("loop", tar::EntryType::Block, 7, 0)
        .device("fifo", tar::EntryType::Fifo, 0, 0)
        .finish();
    unpack(&tar, &dest).unwrap();
    let meta = fs::metadata(dest.join("suid")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o4755,
        "setuid bit lost"
    );
    let null = fs::symlink_metadata(dest.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(fs::symlink_metadata(dest.join("loop"))
        .unwrap()
        .file_type()
        .is_block_device());
    assert!(fs::symlink_metadata(dest.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn xattrs_from_pax_records_are_kept() {
    if !common::is_root() {
        skip!("trusted.* xattrs need root");
    }
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("layer");
    let tar = TarBuilder::new()
        .file_with_xattr("f", b"x", "trusted.husk-test", b"value")
        .finish();
    unpack(&tar, &dest).unwrap();
    assert_eq!(
        xattr::get(dest.join("f"), "trusted.husk-test")
            .unwrap()
            .as_deref(),
        Some(&b"value"[..])
    );
}

#[test]
fn oci_whiteouts_become_overlay_whiteouts() {
    if !common::is_root() {
        skip!("overlay whiteouts (0:0 char devices, trusted.* xattrs) need root");
    }
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("layer");
    let tar = TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/.wh.motd", b"", 0o644)
        .dir("opaque/", 0o755)
        .file("opaque/.wh..wh..opq", b"", 0o644)
        .file("opaque/kept", b"new", 0o644)
        .finish();
    unpack(&tar, &dest).unwrap();
    let whiteout = fs::symlink_metadata(dest.join("etc/motd")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert!(!dest.join("etc/.wh.motd").exists());
    assert_eq!(
        xattr::get(dest.join("opaque"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!dest.join("opaque/.wh..wh..opq").exists());
    assert_eq!(fs::read(dest.join("opaque/kept")).unwrap(), b"new");
    let tar = TarBuilder::new().file(".wh..", b"", 0o644).finish();
    assert!(unpack(&tar, &base.path().join("bad")).is_err());
}

#[test]
fn a_directory_replaced_by_a_symlink_is_not_trusted_afterwards() {
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let dest = base.path().join("layer");
    let tar = TarBuilder::new()
        .dir("d/", 0o755)
        .file("d/x", b"inside", 0o644)
        .symlink("d", &outside.display().to_string())
        .file("d/pwned", b"evil", 0o644)
        .finish();
    let err = unpack(&tar, &dest).unwrap_err();
    assert!(matches!(err, ImageError::UnsafeArchive(_)), "{err}");
    assert!(!outside.join("pwned").exists());
}
