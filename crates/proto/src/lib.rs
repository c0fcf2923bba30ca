//! Puente's wire API, generated from `proto/puente/v1/*.proto` at build time.
//! Only this crate, the server, the client and the facade binary know protobuf.

#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("puente.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("puente_descriptor");
}

pub use prost_types::Timestamp;

/// The ErrorInfo reason of a write refused by a standby (UNAVAILABLE): the server sets it, the
/// clients follow the leader on it.
pub const NOT_LEADER_REASON: &str = "NOT_LEADER";
/// The ErrorInfo metadata key that carries the leader's advertised address with
/// [`NOT_LEADER_REASON`].
pub const LEADER_ADDRESS_KEY: &str = "leader_address";
