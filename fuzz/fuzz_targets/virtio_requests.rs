//! cargo-fuzz target: virtio-blk and virtio-console request handling on hostile queues.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
