use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = ["puente/v1/ledger.proto"];
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // SAFETY: build scripts are single-threaded; prost reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("puente_descriptor.bin"))
        .compile_protos(&protos.iter().map(|p| root.join(p)).collect::<Vec<_>>(), &[root])?;
    Ok(())
}
