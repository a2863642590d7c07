//! The Parley API: the protobuf messages and gRPC stubs generated from `proto/parley/v1`,
//! and the encoded file descriptor set that the server publishes through reflection. The
//! server publishes `google.rpc.Status` and the error-detail messages from tonic-types'
//! own descriptor set (`tonic_types::pb::FILE_DESCRIPTOR_SET`), so that `grpcurl` decodes an
//! error's `ErrorInfo` with the same definitions the server encodes it with.

/// Generated code for package `parley.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("parley.v1");
}

/// The encoded `FileDescriptorSet` of every Parley proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/parley_descriptor.bin"));

/// The `ErrorInfo.domain` of every Parley error.
pub const ERROR_DOMAIN: &str = "parley.v1";

/// The largest reply a Parley client must accept, in bytes. The server bounds what one call can
/// return to fit it (an AddParticipants reply lists one result per person reached, see the
/// server's `--max-group-reach`), and the SDK decodes replies up to it (tonic's default is
/// 4 MiB, which a large group's reply can pass).
pub const MAX_REPLY_BYTES: usize = 32 * 1024 * 1024;
