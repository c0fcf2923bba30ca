//! Integration tests of the ledger crate (one test target).

mod durability;
mod fuzz;
mod migration;
mod model;
