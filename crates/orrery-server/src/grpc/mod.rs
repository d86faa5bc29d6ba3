//! The gRPC front (tonic): each file implements one orrery.v1 service over
//! the domain services, converting protobuf messages to service arguments
//! and back. Nothing here calls the REST front.

mod auth;
mod auth_tokens;
mod cluster;
mod jobs;
mod jobs_convert;
mod kv;
mod policies;
mod policies_shadow;
mod vectors;
mod workflows;

use crate::service::Services;
use orrery_proto::v1::cluster_server::ClusterServer;
use orrery_proto::v1::kv_server::KvServer;
use std::sync::Arc;

/// The caller the guard ([`auth::guard`]) put in the request. Absent only
/// if a service were reached without it, which then counts as anonymous.
pub(crate) fn caller<T>(req: &tonic::Request<T>) -> crate::auth::Caller {
    req.extensions()
        .get::<crate::auth::Caller>()
        .cloned()
        .unwrap_or_else(crate::auth::Caller::anonymous)
}

/// Every public gRPC service, as one axum router (the client port serves
/// REST and gRPC; the content type tells them apart).
pub fn router(s: &Arc<Services>) -> axum::Router {
    let node = &s.node;
    // tonic's default 4 MiB limit would refuse values REST accepts.
    let max_in = node.cfg.max_value_bytes + node.cfg.max_key_bytes + (1 << 20);
    tonic::service::Routes::new(
        KvServer::new(kv::KvApi(s.clone()))
            .max_decoding_message_size(max_in)
            .max_encoding_message_size(256 << 20),
    )
    .add_service(ClusterServer::new(cluster::ClusterApi(s.clone())))
    .add_service(orrery_proto::v1::auth_server::AuthServer::new(
        auth_tokens::AuthApi(s.clone()),
    ))
    .add_service(
        orrery_proto::v1::jobs_server::JobsServer::new(jobs::JobsApi(s.clone()))
            // Bulk submits and completes: the same 16 MiB as their REST bodies.
            .max_decoding_message_size(crate::api::limits::BULK_BODY_BYTES),
    )
    .add_service(
        orrery_proto::v1::vectors_server::VectorsServer::new(vectors::VectorsApi(s.clone()))
            .max_decoding_message_size(crate::api::limits::MAX_VECTOR_BATCH_BYTES + (1 << 20))
            .max_encoding_message_size(256 << 20),
    )
    .add_service(
        orrery_proto::v1::policies_server::PoliciesServer::new(policies::PoliciesApi(s.clone()))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(256 << 20),
    )
    .prepare()
    .into_axum_router()
    .layer(axum::middleware::from_fn_with_state(
        s.auth.clone(),
        auth::guard,
    ))
}
