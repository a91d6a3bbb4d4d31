//! `linux.readonlyPaths` and the read-only sysfs: /proc/sys and friends refuse writes, and so
//! does /sys; `--privileged` lifts both.
use crate::support::*;

in_every_isolation!(proc_sys_and_sys_are_read_only_unless_privileged);

// Writes back the value it read: a privileged process container writes the host's sysctl.
const CHECK: &str = "k=/proc/sys/kernel/printk_ratelimit; v=$(cat $k); echo $v 2>/dev/null > $k && echo proc-sys-writable; \
     touch /sys/kernel/x 2>/dev/null; [ $? = 1 ] && grep -q ' /sys sysfs ro' /proc/mounts && echo sys-ro; \
     grep ' /proc/sys ' /proc/mounts | grep -q ' ro,' && echo proc-sys-ro; true";

fn proc_sys_and_sys_are_read_only_unless_privileged(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    assert_eq!(sh(&husk, iso, &[], CHECK), "sys-ro\nproc-sys-ro\n");
    let out = sh(&husk, iso, &["--privileged"], CHECK);
    assert_eq!(out, "proc-sys-writable\n");
}
