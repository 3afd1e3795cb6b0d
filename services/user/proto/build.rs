//! Messages and clients only: user-srv generates its own servers (and
//! descriptors) over these types, user-api and user-client only call.
fn main() {
    micro_build::Builder::new()
        .build_server(false)
        .compile(
            &[
                "../../../proto/user/user.proto",
                "../../../proto/post/post.proto",
            ],
            &["../../../proto"],
        )
        .expect("compile the user service protos");
}
