//! Shared by the benchmarks, and with `puente benchmark`: the same files the binary compiles
//! (`src/disk.rs`, `src/workload.rs`), so each check and each id scheme exists once.

/// The tmpfs/ramfs refusal. (Its tests run with the binary's: a bench has cfg(test) under
/// `cargo test` but no test harness, so they would be unused here.)
#[path = "../../src/disk.rs"]
#[allow(dead_code, unused_imports)]
pub mod disk;

/// The allocator's options (call `allocator::set_options()` first in `main`).
#[path = "../../src/allocator.rs"]
pub mod allocator;

/// Random numbers and transfer ids.
#[path = "../../src/workload.rs"]
#[allow(dead_code)]
pub mod workload;
