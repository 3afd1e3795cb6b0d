fn main() {
    micro_build::compile_protos(&["../proto/greeter/greeter.proto"], &["../proto"])
        .expect("compile greeter.proto");
}
