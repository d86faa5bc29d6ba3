//! Request limits both fronts enforce (REST body caps, gRPC decoding
//! limits) and the services check, so that neither front accepts what the
//! other refuses.

// vectors
/// Points in one upsert request (docs/api.md, "Limits and errors").
pub const MAX_VECTOR_BATCH_POINTS: usize = 10_000;
/// Bytes of one points request: the REST body cap; gRPC allows 1 MiB more
/// for framing.
pub const MAX_VECTOR_BATCH_BYTES: usize = 64 * 1024 * 1024;

// jobs

pub const MAX_QUEUE_NAME: usize = 128;
pub const MAX_PARTITIONS: u32 = 256;
/// One value for submits and the workflow steps the queue assembles.
pub const MAX_PARAMS_BYTES: usize = orrery_queue::MAX_PARAMS_BYTES;
/// Longest long-poll of a claim.
pub const MAX_WAIT_S: u64 = 60;
pub const MAX_CLAIM_BATCH: u32 = 256;
pub const DEFAULT_JOB_LIMIT: usize = 100;
pub const MAX_JOB_LIMIT: usize = 1000;
pub const DEFAULT_EVENT_LIMIT: usize = 1000;
pub const MAX_EVENT_LIMIT: usize = 10_000;
/// Bodies of bulk requests (and claims carrying completions): up to 1000
/// items, each up to its own limit. gRPC decodes messages up to this too.
pub const BULK_BODY_BYTES: usize = 16 << 20;
