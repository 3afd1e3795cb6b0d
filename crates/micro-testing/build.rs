fn main() {
    micro_build::compile_protos(&["../../proto/greeter/greeter.proto"], &["../../proto"])
        .expect("compile greeter.proto");
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let api_dir = out_dir.join("testapi");
    std::fs::create_dir_all(&api_dir).expect("create OUT_DIR/testapi");
    micro_build::Builder::new()
        .extern_path(".go.api", "::micro_api_proto")
        .out_dir(api_dir)
        .compile(&["proto/testapi/say.proto"], &["proto", "../../proto"])
        .expect("compile testapi/say.proto");
}
