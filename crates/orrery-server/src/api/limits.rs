//! Limits both fronts apply to job queue requests (and defaults where a
//! request leaves a value out).

pub const MAX_QUEUE_NAME: usize = 128;
pub const MAX_PARTITIONS: u32 = 256;
pub const MAX_PARAMS_BYTES: usize = 256 * 1024;
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
