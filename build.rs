//! Compiles `proto/` with protox (pure Rust, no system `protoc`), generates the tonic/prost
//! code, and writes the encoded descriptor set that the server's reflection service serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "parley/v1/common.proto",
    "parley/v1/directory.proto",
    "parley/v1/participant.proto",
    "parley/v1/conversation.proto",
    "parley/v1/notification.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("parley_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .server_mod_attribute("parley.v1", r#"#[cfg(feature = "server")]"#)
        .compile_fds(fds)?;
    Ok(())
}
