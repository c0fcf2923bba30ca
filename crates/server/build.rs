#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

use std::path::PathBuf;

/// Generates the server side of every `proto/puente/v1/*.proto` service here, not in
/// `puente-proto`, so that it decodes requests with this crate's codec (`crate::codec::Codec`:
/// malformed protobuf is INVALID_ARGUMENT, decided in `error.rs`). The messages themselves stay
/// in `puente_proto::v1`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let dir = root.join("puente/v1");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut protos: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    // SAFETY: build scripts are single-threaded; prost reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .extern_path(".puente.v1", "::puente_proto::v1")
        .codec_path("crate::codec::Codec")
        .compile_protos(&protos, &[root])?;
    Ok(())
}
