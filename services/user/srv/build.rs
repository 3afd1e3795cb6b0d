//! The servers of go.micro.srv.user (handlers `User` and `Post`) over
//! user-proto's messages, and the descriptors of those two protos only: the
//! endpoints and reflection this server registers.
fn main() {
    micro_build::Builder::new()
        .build_client(false)
        .extern_path(".go.micro.srv.user", "::user_proto::user")
        .extern_path(".go.micro.srv.post", "::user_proto::post")
        .compile(
            &[
                "../../../proto/user/user.proto",
                "../../../proto/post/post.proto",
            ],
            &["../../../proto"],
        )
        .expect("compile the user service protos");
}
