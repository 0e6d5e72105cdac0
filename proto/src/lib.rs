//! Minqing's gRPC contracts, generated from the `.proto` files beside this crate.
//!
//! Packages follow the directory layout: `minqing.intake.v1` is
//! [`minqing::intake::v1`], `minqing.events.v1` is [`minqing::events::v1`], and so on.
//! [`FILE_DESCRIPTOR_SET`] holds every file, for gRPC reflection.

#![forbid(unsafe_code)]
#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

include!(concat!(env!("OUT_DIR"), "/minqing.rs"));

/// The encoded `FileDescriptorSet` of every Minqing contract (with imports), for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/minqing_descriptor.bin"));

/// The full protobuf name of a generated message, e.g. `minqing.intake.v1.CaseSubmitted`.
pub fn message_name<M: prost::Name>() -> String {
    M::full_name()
}
