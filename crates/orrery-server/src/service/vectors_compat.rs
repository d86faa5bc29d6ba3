//! TEMPORARY (deleted when the policies service calls `VectorsService`):
//! the `Node` methods the policy engine's vector lookups still call,
//! forwarding to the vectors service's code.

use crate::api::ApiError;
use crate::node::typed::VectorCatalog;
use crate::node::Node;
use crate::service::vectors::{self, SearchSpec};
use orrery_types::PLACEMENT_GROUP;
use orrery_vector::{CollectionConfig, Hit};
use std::collections::BTreeMap;

impl Node {
    /// See [`vectors::VectorsService::catalog`].
    pub async fn vector_catalog(&self) -> Result<BTreeMap<String, CollectionConfig>, ApiError> {
        self.read(PLACEMENT_GROUP, VectorCatalog, true).await
    }

    /// See [`vectors::VectorsService::search`].
    pub async fn search(
        &self,
        name: &str,
        spec: SearchSpec,
        linearizable: bool,
    ) -> Result<Vec<Hit>, ApiError> {
        let c = vectors::collection(self, name).await?;
        vectors::search_in(self, &c, spec, linearizable).await
    }
}
