// Compiles proto/ with protox (pure Rust), so building needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "orrery/v1/kv.proto",
        "orrery/v1/cluster.proto",
        "orrery/v1/auth.proto",
        "orrery/v1/jobs.proto",
        "orrery/v1/vectors.proto",
        "orrery/v1/policies.proto",
        "orrery/peer/v1/peer.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
