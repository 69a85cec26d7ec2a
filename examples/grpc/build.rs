//! Generates the `Invoices` service from `proto/invoices.proto` with `protox` (a protobuf compiler in Rust), so
//! that building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/invoices.proto");
    let descriptors = protox::compile(["invoices.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
