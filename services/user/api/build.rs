//! go.micro.api.user's servers (and clients, for tests and callers) and the
//! descriptors of api.proto only: the endpoints and reflection user-api
//! registers. The go.micro.srv.user clients it calls come from user-proto.
fn main() {
    micro_build::Builder::new()
        .extern_path(".go.api", "::micro_api_proto")
        .compile(&["../../../proto/api/user/api.proto"], &["../../../proto"])
        .expect("compile the user API proto");
}
