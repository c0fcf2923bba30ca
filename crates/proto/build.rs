#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

use std::path::PathBuf;

/// Compiles every `proto/puente/v1/*.proto` (adding a service needs no change here).
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
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // SAFETY: build scripts are single-threaded; prost reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    // Messages and clients only: the server stubs are generated in puente-server, with its
    // codec (malformed requests are INVALID_ARGUMENT there).
    tonic_prost_build::configure()
        .build_server(false)
        .file_descriptor_set_path(out_dir.join("puente_descriptor.bin"))
        .compile_protos(&protos, &[root])?;
    Ok(())
}
