//! Compiles every `.proto` under `minqing/` with protox (pure Rust, no protoc) and generates
//! the prost messages and tonic clients and servers. New packages are picked up by the walk,
//! so adding a service's contract needs no change here.

use std::{
    env, fs, io,
    path::{Path, PathBuf},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    collect_protos(&root.join("minqing"), &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=minqing");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Reflection serves this set, so clients such as grpcurl need no .proto files.
    fs::write(
        out.join("minqing_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    // Type names let events carry their payloads as `google.protobuf.Any`.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .include_file("minqing.rs")
        .emit_rerun_if_changed(false)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
