fn main() {
    micro_build::Builder::new()
        .extern_path(".go.api", "::micro_api_proto")
        .compile(
            &[
                "../../proto/user/user.proto",
                "../../proto/post/post.proto",
                "../../proto/api/user/api.proto",
            ],
            &["../../proto"],
        )
        .expect("compile the user service protos");
}
