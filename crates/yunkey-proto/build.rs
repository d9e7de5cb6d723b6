//! Compiles `proto/yunkey/v1/*.proto` with `protox` (pure Rust, so no `protoc` is needed on
//! the machine) and generates prost messages and tonic services.

use prost::Message;
use std::path::PathBuf;

const FILES: &[&str] = &[
    "yunkey/v1/common.proto",
    "yunkey/v1/key.proto",
    "yunkey/v1/terminal.proto",
    "yunkey/v1/cluster.proto",
    "yunkey/v1/chip.proto",
    "yunkey/v1/raft.proto",
    "yunkey/v1/risk.proto",
    "yunkey/v1/face.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(FILES, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("yunkey_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
