//! T0: the fuzz harness (fuzz/harness.rs) fed by a deterministic random generator, so every
//! `cargo test` run replays a fixed set of hostile queues without needing nightly/libFuzzer.

#[path = "../fuzz/harness.rs"]
mod harness;

/// xorshift64*: deterministic, seedable, good enough to spread bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_hostile_queues_never_panic_or_escape() {
    let iterations: u64 = std::env::var("HUSK_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for _ in 0..iterations {
        let len = 64 + (rng.next() % 6000) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        harness::run(&data);
    }
}
