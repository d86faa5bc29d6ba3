//! Domain services: what a request means, whichever front it came through.
//! Each service is a struct holding what it needs (the node runtime, its own
//! caches); the REST and gRPC fronts share them and never call each other.

pub mod backup;
pub mod cluster;
pub mod datasets;
pub mod jobs;
pub mod kv;
pub mod policies;
pub mod vectors;

use crate::node::Node;
use std::sync::Arc;

/// Every service of one node, built once at start and shared by the fronts.
pub struct Services {
    pub node: Arc<Node>,
    /// Who may call what (both fronts' guards).
    pub auth: Arc<crate::auth::Authenticator>,
    pub cluster: cluster::ClusterService,
    pub backup: backup::BackupService,
    pub kv: Arc<kv::KvService>,
    pub vectors: Arc<vectors::VectorsService>,
    pub jobs: Arc<jobs::JobsService>,
    pub policies: Arc<policies::PoliciesService>,
    pub datasets: Arc<datasets::DatasetsService>,
}

impl Services {
    /// Builds every service; the jobs service learns from the policies
    /// service how to check the params of the job kinds it adds.
    pub fn new(node: Arc<Node>, auth: Arc<crate::auth::Authenticator>) -> Arc<Self> {
        let kv = Arc::new(kv::KvService::new(node.clone()));
        let vectors = Arc::new(vectors::VectorsService::new(node.clone()));
        let jobs = Arc::new(jobs::JobsService::new(node.clone()));
        let policies = Arc::new(policies::PoliciesService::new(
            node.clone(),
            kv.clone(),
            vectors.clone(),
            jobs.clone(),
        ));
        jobs.set_kind_check(Arc::new(policies::PolicyKindCheck(node.clone())));
        let datasets = Arc::new(datasets::DatasetsService::new(
            node.clone(),
            jobs.clone(),
            vectors.clone(),
        ));
        Arc::new(Self {
            datasets,
            cluster: cluster::ClusterService::new(node.clone()),
            backup: backup::BackupService::new(node.clone()),
            kv,
            vectors,
            jobs,
            policies,
            node,
            auth,
        })
    }
}
