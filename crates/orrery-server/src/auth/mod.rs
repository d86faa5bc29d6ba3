//! Who is calling, and may they: bearer tokens (ours, stored hashed in the
//! placement group, or JWTs from an identity provider), node certificates
//! on the client port, and `--insecure`'s anonymous caller. The fronts call
//! [`Authenticator::authorize`] through one middleware each (`http::auth`,
//! `grpc::auth`) with the endpoint's [`perms::Perm`].

pub mod jwt;
pub mod perms;
pub mod tokens;

use crate::api::ApiError;
use crate::node::Node;
use perms::Perm;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A role: what a token or JWT may do (docs/security.md, "Roles").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Writer,
    Reader,
    Worker,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "writer" => Some(Role::Writer),
            "reader" => Some(Role::Reader),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Reader => "reader",
            Role::Worker => "worker",
        }
    }
}

/// The caller of one request, in its extensions once authorised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, the JWT's `sub`, `node` or `anonymous`.
    pub name: String,
    /// `None`: anonymous (`--insecure`), which may do everything but run
    /// `command` jobs.
    pub role: Option<Role>,
    /// A worker token's queues (`None`: all).
    pub queues: Option<Vec<String>>,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            name: "anonymous".into(),
            role: None,
            queues: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Some(Role::Admin)
    }

    /// Whether this caller may touch jobs of `queue` (workers are confined
    /// to their token's queues).
    pub fn may_use_queue(&self, queue: &str) -> bool {
        self.queues
            .as_ref()
            .is_none_or(|qs| qs.iter().any(|q| q == queue))
    }

    pub fn check_queue(&self, queue: &str) -> Result<(), ApiError> {
        if self.may_use_queue(queue) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the token of {} is limited to queues {:?}; queue {queue:?} is not among them",
                self.name,
                self.queues.as_deref().unwrap_or_default()
            )))
        }
    }
}

/// How this node authenticates (from `orrery serve`'s flags).
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// `--insecure`: no TLS, every caller anonymous.
    pub insecure: bool,
    /// `--metrics-public`: `/metrics` without a token.
    pub metrics_public: bool,
    pub jwt: Option<jwt::JwtConfig>,
}

/// What the transport proved about the connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnInfo {
    /// The client showed a certificate the cluster CA signed: a node.
    pub node_cert: bool,
}

pub struct Authenticator {
    node: Arc<Node>,
    cfg: AuthConfig,
    jwt: Option<jwt::JwtVerifier>,
}

const MISSING: &str =
    "this endpoint needs a token: send `Authorization: Bearer TOKEN` (see docs/security.md)";

impl Authenticator {
    pub fn new(node: Arc<Node>, cfg: AuthConfig) -> Result<Authenticator, String> {
        let jwt = match &cfg.jwt {
            Some(j) => Some(jwt::JwtVerifier::new(j)?),
            None => None,
        };
        Ok(Authenticator { node, cfg, jwt })
    }

    pub fn insecure(&self) -> bool {
        self.cfg.insecure
    }

    /// The caller of a request with this `Authorization` header on this
    /// connection, if it may use an endpoint needing `perm`.
    pub fn authorize(
        &self,
        perm: Perm,
        authorization: Option<&[u8]>,
        conn: ConnInfo,
    ) -> Result<Caller, ApiError> {
        if self.cfg.insecure {
            return Ok(Caller::anonymous());
        }
        match perm {
            Perm::Open => return Ok(Caller::anonymous()),
            Perm::Metrics if self.cfg.metrics_public => return Ok(Caller::anonymous()),
            // Whoever initialises a fresh node receives the root token.
            Perm::Init if !self.initialized() => return Ok(Caller::anonymous()),
            _ => {}
        }
        let caller = match authorization {
            Some(h) => self.authenticate(h)?,
            // A node fetching another node's job logs shows its
            // certificate instead of a token: it may read, nothing more.
            None if conn.node_cert => Caller {
                name: "node".into(),
                role: Some(Role::Reader),
                queues: None,
            },
            // A node outside a cluster has no tokens to check: say so
            // (503), as the endpoint itself would.
            None if !self.initialized() => return Err(ApiError::NotInitialized),
            None => return Err(ApiError::Unauthenticated(MISSING.into())),
        };
        let role = caller.role.unwrap_or(Role::Reader);
        if perm.allows(role) {
            Ok(caller)
        } else {
            Err(ApiError::Forbidden(format!(
                "{} (role {}) lacks permission {}",
                caller.name,
                role.as_str(),
                perm.name()
            )))
        }
    }

    /// [`Authenticator::authorize`] for an HTTP request (either front):
    /// its `Authorization` header and what its connection proved.
    pub fn authorize_request<B>(
        &self,
        perm: Perm,
        req: &axum::http::Request<B>,
    ) -> Result<Caller, ApiError> {
        let conn = req
            .extensions()
            .get::<axum::extract::ConnectInfo<ConnInfo>>()
            .map(|c| c.0)
            .unwrap_or_default();
        let auth = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        self.authorize(perm, auth, conn)
    }

    /// Whether this node's copy of the placement state is initialised
    /// (without cloning it, as `Node::placement` would).
    fn initialized(&self) -> bool {
        self.node
            .placement_group()
            .is_some_and(|g| g.sm.read(|s| s.placement.is_initialized()))
    }

    fn authenticate(&self, header: &[u8]) -> Result<Caller, ApiError> {
        let text = std::str::from_utf8(header)
            .map_err(|_| ApiError::Unauthenticated("malformed Authorization header".into()))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthenticated("the Authorization header must be `Bearer TOKEN`".into())
            })?;
        if tokens::is_ours(token) {
            return tokens::authenticate(&self.node, token, crate::api::now_ms());
        }
        match &self.jwt {
            Some(v) if token.matches('.').count() == 2 => v.verify(token),
            _ => Err(ApiError::Unauthenticated("unknown token".into())),
        }
    }
}
