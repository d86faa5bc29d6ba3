//! orrery.v1.Kv over the KV service.

use crate::service::kv::{CasOutcome, DEFAULT_LIST_LIMIT};
use crate::service::Services;
use orrery_proto::v1 as pb;
use orrery_proto::v1::kv_server::Kv;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct KvApi(pub Arc<Services>);

fn lin(c: i32) -> bool {
    c != pb::Consistency::Stale as i32
}

#[tonic::async_trait]
impl Kv for KvApi {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let r = req.into_inner();
        let revision = self.0.kv.put(r.key, r.value).await?;
        Ok(Response::new(pb::PutResponse { revision }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let r = req.into_inner();
        let v = self.0.kv.get(r.key, lin(r.consistency)).await?;
        Ok(Response::new(match v {
            Some(v) => pb::GetResponse {
                found: true,
                value: v.value,
                revision: v.revision,
            },
            None => pb::GetResponse {
                found: false,
                value: vec![],
                revision: 0,
            },
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (deleted, revision) = self.0.kv.delete(req.into_inner().key).await?;
        Ok(Response::new(pb::DeleteResponse { deleted, revision }))
    }

    async fn cas(&self, req: Request<pb::CasRequest>) -> Result<Response<pb::CasResponse>, Status> {
        let r = req.into_inner();
        let CasOutcome {
            succeeded,
            revision,
            current,
        } = self.0.kv.cas(r.key, r.expected, r.value).await?;
        Ok(Response::new(pb::CasResponse {
            succeeded,
            revision,
            current,
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = req.into_inner();
        let limit = if r.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            r.limit as usize
        };
        let items = self.0.kv.list(r.prefix, limit, lin(r.consistency)).await?;
        Ok(Response::new(pb::ListResponse {
            items: items
                .into_iter()
                .map(|i| pb::KeyValue {
                    key: i.key,
                    value: i.value,
                    revision: i.revision,
                })
                .collect(),
        }))
    }

    async fn delete_prefix(
        &self,
        req: Request<pb::DeletePrefixRequest>,
    ) -> Result<Response<pb::DeletePrefixResponse>, Status> {
        let deleted = self.0.kv.delete_prefix(req.into_inner().prefix).await?;
        Ok(Response::new(pb::DeletePrefixResponse { deleted }))
    }
}
