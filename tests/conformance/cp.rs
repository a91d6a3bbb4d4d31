//! `cp`: files go into a running container and come out of it unchanged.
use crate::support::*;

in_every_isolation!(files_copy_in_and_out);

fn files_copy_in_and_out(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    detached(&husk, iso, "box", &[], "sleep 600");
    let host = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(host.path().join("in.bin"), &data).unwrap();
    husk.ok(&[
        "cp",
        host.path().join("in.bin").to_str().unwrap(),
        "box:/tmp/in.bin",
    ]);
    assert_eq!(
        husk.ok(&["exec", "box", "wc", "-c", "/tmp/in.bin"]),
        "100000 /tmp/in.bin\n"
    );
    husk.ok(&[
        "cp",
        "box:/tmp/in.bin",
        host.path().join("out.bin").to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(host.path().join("out.bin")).unwrap(), data);
}
