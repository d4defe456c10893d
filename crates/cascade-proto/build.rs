//! Compiles proto/ with protox (pure Rust; no protoc needed).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        root.join("cascade/v1/hierarchy.proto"),
        root.join("cascade/v1/admin.proto"),
        root.join("cascade/v1/agent.proto"),
    ];
    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;
    for file in compiler.files() {
        if let Some(path) = file.path() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    std::fs::write(out_dir.join("descriptor.bin"), compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure()
        // Content arrives without a copy out of the receive buffer.
        .bytes(".cascade.v1.ContentChunk.data")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
