//! Domain services: what a request means, whichever front it came through.
//! Each service is a struct holding what it needs (the node runtime, its own
//! caches); the REST and gRPC fronts share them and never call each other.

pub mod cluster;
pub mod kv;
pub mod policies;
pub mod vectors;

use crate::node::Node;
use std::sync::Arc;

/// Every service of one node, built once at start and shared by the fronts.
pub struct Services {
    pub node: Arc<Node>,
    pub cluster: cluster::ClusterService,
    pub kv: kv::KvService,
    pub vectors: Arc<vectors::VectorsService>,
    pub policies: Arc<policies::PoliciesService>,
}

impl Services {
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        let vectors = Arc::new(vectors::VectorsService::new(node.clone()));
        Arc::new(Self {
            cluster: cluster::ClusterService::new(node.clone()),
            kv: kv::KvService::new(node.clone()),
            vectors: vectors.clone(),
            policies: Arc::new(policies::PoliciesService::new(node.clone(), vectors)),
            node,
        })
    }
}
