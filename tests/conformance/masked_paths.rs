//! `linux.maskedPaths`: runc's list; what exists reads empty (files are /dev/null, directories
//! an empty read-only tmpfs). `--privileged` masks nothing. Which of the paths exist depends
//! on the kernel (the VM's is a minimal one), so the case checks every one that does.
use crate::support::*;

in_every_isolation!(masked_paths_read_empty_unless_privileged);

const CHECK: &str = r#"for p in /proc/acpi /proc/asound /proc/interrupts /proc/kcore /proc/keys \
  /proc/latency_stats /proc/timer_list /proc/timer_stats /proc/sched_debug /proc/scsi \
  /sys/firmware /sys/devices/virtual/powercap; do
  if [ -d $p ]; then [ -z "$(ls -A $p)" ] && echo "$p empty" || echo "$p FULL";
  elif [ -e $p ]; then [ "$(head -c 1 $p | wc -c)" = 0 ] && echo "$p empty" || echo "$p FULL"; fi
done"#;

fn masked_paths_read_empty_unless_privileged(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let out = sh(&husk, iso, &[], CHECK);
    // /proc/interrupts exists on every x86 kernel.
    assert!(out.contains("/proc/interrupts empty"), "{out}");
    assert!(!out.contains("FULL"), "{out}");
    let out = sh(&husk, iso, &["--privileged"], CHECK);
    assert!(out.contains("/proc/interrupts FULL"), "{out}");
}
