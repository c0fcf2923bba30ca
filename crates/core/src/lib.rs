//! Puente's shared vocabulary: what every other crate names the same way.
//!
//! - [`ids`]: the one id derivation and the reserved namespace of system ids.
//! - [`vocabulary`]: the nouns several crates share (`Country`, the participant id bound).

#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod ids;
pub mod vocabulary;

pub use vocabulary::{Country, PARTICIPANT_ID_LEN_MAX};
