//! `orrery.v1.Auth`: bearer tokens over gRPC (admins).

use crate::api::now_ms;
use crate::auth::tokens::{self, NewToken, TokenRecord};
use crate::service::Services;
use orrery_proto::v1 as pb;
use orrery_proto::v1::auth_server::Auth;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AuthApi(pub Arc<Services>);

fn info(r: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        role: r.role.as_str().into(),
        queues: r.queues.clone().unwrap_or_default(),
        created_ms: r.created_ms,
        expires_ms: r.expires_ms,
        revoked_ms: r.revoked_ms,
    }
}

#[tonic::async_trait]
impl Auth for AuthApi {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let r = req.into_inner();
        let new = NewToken {
            name: r.name,
            role: r.role,
            queues: (!r.queues.is_empty()).then_some(r.queues),
            ttl_s: (r.ttl_s > 0).then_some(r.ttl_s),
        };
        let (rec, token) = tokens::create(&self.0.node, new, now_ms()).await?;
        Ok(Response::new(pb::CreateTokenResponse {
            info: Some(info(&rec)),
            token,
        }))
    }

    async fn list_tokens(
        &self,
        _req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let all = tokens::list(&self.0.node).await?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: all.iter().map(info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let rec = tokens::revoke(&self.0.node, &req.into_inner().id, now_ms()).await?;
        Ok(Response::new(info(&rec)))
    }
}
