//! The benchmark workload's ids and random numbers, shared by `puente benchmark`
//! (`src/cli/benchmark.rs`) and the benches (`benches/ledger.rs`, `benches/loadgen.rs`, through
//! `benches/common/mod.rs`), so that every one of them sends the same kind of ids.

/// Account ids of the in-process workload: the treasury of currency `c` is `TREASURY_BASE + c`,
/// wallet `i` (counted across currencies) is `WALLET_BASE + i`.
pub const TREASURY_BASE: u128 = 1 << 64;
pub const WALLET_BASE: u128 = 2 << 64;
/// Funding transfer ids count down from here; measured ones come from [`transfer_id`].
pub const TRANSFER_BASE: u128 = 7 << 96;
/// Each wallet starts with 10,000,000.00: a benchmark can never exhaust it with moves of at
/// most 0.99.
pub const FUNDING_MINOR: u64 = 1_000_000_000;

/// A small xorshift generator: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    /// A generator from any seed (xorshift must not start at 0).
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A unique, random-looking transfer id (clients use UUIDv4, so ids arrive in no order): a
/// bijective mix of the counter in the high half, the counter itself in the low half.
pub fn transfer_id(n: u64) -> u128 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z as u128) << 64) | n as u128
}
