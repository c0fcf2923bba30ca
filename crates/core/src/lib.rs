//! Puente's shared vocabulary: what every other crate names the same way.
//!
//! - [`ids`]: the one id derivation and the reserved namespace of system ids.

pub mod ids;
