//! No code: this crate only pins the features of the workspace's dependencies
//! (see its `Cargo.toml`), so that `cargo test --workspace`, `scripts/demo` and
//! each `cargo run -p ...` compile every dependency once.
