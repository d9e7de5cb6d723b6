//! Generated protobuf messages and tonic services of the `yunkey.v1` package.
//!
//! The `.proto` files under `proto/yunkey/v1/` are the contract; this crate only compiles
//! them (with `protox`, so no `protoc` is needed). It depends on nothing of yunkey's own and
//! every other crate depends on it. Documentation of each RPC lives in `docs/api.md`.

#![allow(missing_docs, clippy::all)]

/// The `yunkey.v1` package.
pub mod v1 {
    tonic::include_proto!("yunkey.v1");
}

/// Encoded `FileDescriptorSet` of every yunkey proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/yunkey_descriptor.bin"));
