//! Vector collections over gRPC (orrery.v1.Vectors). Payloads and filters
//! are JSON text, as in the REST API.

use crate::Channel;
use crate::{Client, Consistency, Error};
use orrery_proto::v1 as pb;
use orrery_proto::v1::vectors_client::VectorsClient;

pub use pb::{VectorCollection, VectorHit, VectorPoint, VectorSearchRequest};

pub(crate) fn client(ch: Channel) -> VectorsClient<Channel> {
    VectorsClient::new(ch)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(80 << 20)
}

/// A point id: an unsigned integer or a UUID string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PointId {
    Num(u64),
    Uuid(String),
}

impl PointId {
    pub fn pb(&self) -> pb::VectorPointId {
        pb::VectorPointId {
            id: Some(match self {
                PointId::Num(n) => pb::vector_point_id::Id::Num(*n),
                PointId::Uuid(u) => pb::vector_point_id::Id::Uuid(u.clone()),
            }),
        }
    }

    pub fn from_pb(p: &Option<pb::VectorPointId>) -> Option<PointId> {
        match p.as_ref()?.id.as_ref()? {
            pb::vector_point_id::Id::Num(n) => Some(PointId::Num(*n)),
            pb::vector_point_id::Id::Uuid(u) => Some(PointId::Uuid(u.clone())),
        }
    }
}

impl std::fmt::Display for PointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{u}"),
        }
    }
}

impl Client {
    /// Unset (zero / empty) fields take the server's defaults.
    pub async fn create_collection(
        &mut self,
        req: pb::VectorCreateCollectionRequest,
    ) -> Result<VectorCollection, Error> {
        Ok(self.vectors.create_collection(req).await?.into_inner())
    }

    pub async fn list_collections(&mut self) -> Result<Vec<VectorCollection>, Error> {
        Ok(self
            .vectors
            .list_collections(pb::VectorListCollectionsRequest {})
            .await?
            .into_inner()
            .collections)
    }

    /// The definition, point count and per-shard index state.
    pub async fn get_collection(&mut self, name: &str) -> Result<VectorCollection, Error> {
        let req = pb::VectorGetCollectionRequest { name: name.into() };
        Ok(self.vectors.get_collection(req).await?.into_inner())
    }

    pub async fn drop_collection(&mut self, name: &str) -> Result<(), Error> {
        let req = pb::VectorGetCollectionRequest { name: name.into() };
        self.vectors.drop_collection(req).await?;
        Ok(())
    }

    /// Upserts up to 10 000 points; returns how many were written.
    pub async fn upsert_points(
        &mut self,
        collection: &str,
        points: Vec<VectorPoint>,
    ) -> Result<u64, Error> {
        let req = pb::VectorUpsertRequest {
            collection: collection.into(),
            points,
        };
        Ok(self.vectors.upsert_points(req).await?.into_inner().upserted)
    }

    pub async fn get_point(
        &mut self,
        collection: &str,
        id: &PointId,
    ) -> Result<VectorPoint, Error> {
        let req = pb::VectorGetPointRequest {
            collection: collection.into(),
            id: Some(id.pb()),
        };
        Ok(self.vectors.get_point(req).await?.into_inner())
    }

    pub async fn delete_points(&mut self, collection: &str, ids: &[PointId]) -> Result<u64, Error> {
        let req = pb::VectorDeleteRequest {
            collection: collection.into(),
            ids: ids.iter().map(PointId::pb).collect(),
            filter_json: String::new(),
        };
        Ok(self.vectors.delete_points(req).await?.into_inner().deleted)
    }

    pub async fn delete_by_filter(
        &mut self,
        collection: &str,
        filter_json: &str,
    ) -> Result<u64, Error> {
        let req = pb::VectorDeleteRequest {
            collection: collection.into(),
            ids: vec![],
            filter_json: filter_json.into(),
        };
        Ok(self.vectors.delete_points(req).await?.into_inner().deleted)
    }

    /// A k-nearest search with defaults (payloads included, linearizable).
    pub async fn search(
        &mut self,
        collection: &str,
        vector: Vec<f32>,
        k: u32,
        filter_json: Option<&str>,
    ) -> Result<Vec<VectorHit>, Error> {
        let req = VectorSearchRequest {
            collection: collection.into(),
            vector,
            k,
            filter_json: filter_json.unwrap_or_default().into(),
            with_payload: true,
            consistency: Consistency::Linearizable.pb(),
            ..Default::default()
        };
        Ok(self.search_with(req).await?.result)
    }

    /// A search with every option (`ef`, `exact`, consistency, ...).
    pub async fn search_with(
        &mut self,
        req: VectorSearchRequest,
    ) -> Result<pb::VectorSearchResponse, Error> {
        Ok(self.vectors.search(req).await?.into_inner())
    }

    pub async fn search_batch(
        &mut self,
        searches: Vec<VectorSearchRequest>,
    ) -> Result<pb::VectorSearchBatchResponse, Error> {
        let req = pb::VectorSearchBatchRequest { searches };
        Ok(self.vectors.search_batch(req).await?.into_inner())
    }
}
