//! Compiles `.proto` files in a build script, with no `protoc` on the machine.
//!
//! [`compile_protos`] parses the files with `protox` (a pure-Rust protobuf
//! compiler), generates tonic clients and servers with `tonic-prost-build`, and
//! writes the encoded `FileDescriptorSet` next to the generated code. A micro
//! server needs those descriptors: it registers each method's request and
//! response shape in the registry and serves gRPC reflection from them.
//!
//! In `build.rs`:
//!
//! ```no_run
//! micro_build::compile_protos(&["proto/greeter/greeter.proto"], &["proto"])
//!     .expect("compile protos");
//! ```
//!
//! In the crate:
//!
//! ```ignore
//! pub mod greeter {
//!     tonic::include_proto!("go.micro.srv.greeter");
//! }
//! pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("micro_descriptor");
//! ```

use std::io;
use std::path::{Path, PathBuf};

use prost::Message;

/// File name (without `.bin`) of the descriptor set written to `OUT_DIR`, for
/// `tonic::include_file_descriptor_set!`.
pub const DESCRIPTOR_SET_NAME: &str = "micro_descriptor";

/// Compiles `protos` (searched for in `includes`) into Rust code in `OUT_DIR`,
/// plus `OUT_DIR/micro_descriptor.bin`.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> io::Result<()> {
    Builder::new().compile(protos, includes)
}

/// Options for [`compile_protos`], for crates that need only clients or only
/// servers, or extra attributes.
#[derive(Debug, Default)]
pub struct Builder {
    client: Option<bool>,
    server: Option<bool>,
    out_dir: Option<PathBuf>,
    extern_paths: Vec<(String, String)>,
}

impl Builder {
    pub fn new() -> Self {
        Builder::default()
    }

    /// Generate client code (default: yes).
    pub fn build_client(mut self, enable: bool) -> Self {
        self.client = Some(enable);
        self
    }

    /// Generate server code (default: yes).
    pub fn build_server(mut self, enable: bool) -> Self {
        self.server = Some(enable);
        self
    }

    /// Use existing Rust types for a proto package instead of generating them,
    /// e.g. `(".go.api", "::micro_api_proto")` for protos importing go-micro's API.
    pub fn extern_path(
        mut self,
        proto_path: impl Into<String>,
        rust_path: impl Into<String>,
    ) -> Self {
        self.extern_paths
            .push((proto_path.into(), rust_path.into()));
        self
    }

    /// Write into this directory instead of `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    pub fn compile(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> io::Result<()> {
        let out_dir = match self.out_dir {
            Some(dir) => dir,
            None => PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| {
                io::Error::other("OUT_DIR is not set: call micro-build from a build script")
            })?),
        };
        for proto in protos {
            println!("cargo:rerun-if-changed={}", proto.as_ref().display());
        }
        for include in includes {
            println!("cargo:rerun-if-changed={}", include.as_ref().display());
        }
        let fds = protox::compile(protos, includes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        std::fs::write(
            out_dir.join(format!("{DESCRIPTOR_SET_NAME}.bin")),
            fds.encode_to_vec(),
        )?;
        let mut builder = tonic_prost_build::configure()
            .build_client(self.client.unwrap_or(true))
            .build_server(self.server.unwrap_or(true))
            .out_dir(&out_dir);
        for (proto_path, rust_path) in &self.extern_paths {
            builder = builder.extern_path(proto_path, rust_path);
        }
        // Every message names itself (`prost::Name`): what a typed
        // subscriber needs to find its descriptor (JSON events, the
        // registered endpoint).
        let mut config = tonic_prost_build::Config::new();
        config.enable_type_names();
        builder.compile_fds_with_config(fds, config)
    }
}
