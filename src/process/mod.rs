//! Process isolation: namespaces, rootfs, cgroups, capabilities, seccomp and pty.
