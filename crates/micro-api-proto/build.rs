fn main() {
    micro_build::Builder::new()
        .build_client(false)
        .build_server(false)
        .compile(&["../../proto/go/api/api.proto"], &["../../proto"])
        .expect("compile go/api/api.proto");
}
