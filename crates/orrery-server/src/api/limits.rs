//! Request limits both fronts enforce (REST body caps, gRPC decoding
//! limits) and the services check, so that neither front accepts what the
//! other refuses.

// vectors
/// Points in one upsert request (docs/api.md, "Limits and errors").
pub const MAX_VECTOR_BATCH_POINTS: usize = 10_000;
/// Bytes of one points request: the REST body cap; gRPC allows 1 MiB more
/// for framing.
pub const MAX_VECTOR_BATCH_BYTES: usize = 64 * 1024 * 1024;
