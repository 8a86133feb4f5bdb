//! Compiles `schema/*.proto` with protox (pure Rust, no protoc on the machine)
//! and generates the prost types into OUT_DIR.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schemas = ["schema/switchboard/events/v1/call_event.proto", "schema/switchboard/events/v1/task_sync.proto"];
    println!("cargo:rerun-if-changed=schema");
    let descriptors = protox::compile(schemas, ["schema"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
