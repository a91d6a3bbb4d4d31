//! The microVM monitor: KVM, guest memory, boot, vCPUs and virtio-mmio devices.
