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

/// Every RPC in an encoded `FileDescriptorSet`, as `(fully qualified service, method)`: for
/// checking that each one has a row in the access table (`yunkey_net::access::RPC_ROLES`).
pub fn rpc_methods(descriptor_set: &[u8]) -> Result<Vec<(String, String)>, prost::DecodeError> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(descriptor_set)?;
    let mut out = Vec::new();
    for file in &set.file {
        let package = file.package.clone().unwrap_or_default();
        for service in &file.service {
            let name = service.name.clone().unwrap_or_default();
            let full = if package.is_empty() {
                name
            } else {
                format!("{package}.{name}")
            };
            for method in &service.method {
                out.push((full.clone(), method.name.clone().unwrap_or_default()));
            }
        }
    }
    Ok(out)
}

/// The typed reason a chip gives with a refusal, on the wire: the chip error's kind (for
/// example `device_not_bound`) in the [`chip_error::KIND_HEADER`] response metadata. Chips set
/// it (`yunkey_chip::status`); coordinators decide on it instead of on a code or a message.
pub mod chip_error {
    /// Metadata key carrying the chip error's kind.
    pub const KIND_HEADER: &str = "x-yunkey-chip-error";
    /// The chip's binding of a key is older than the request's: send it the committed wrapped
    /// key (`UpdateBinding`), then retry.
    pub const BINDING_BEHIND: &str = "binding_behind";

    /// The kind a chip put in `status`, if any.
    pub fn kind(status: &tonic::Status) -> Option<&str> {
        status.metadata().get(KIND_HEADER)?.to_str().ok()
    }
}
