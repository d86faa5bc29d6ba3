//! A Rust client for Orrery's public gRPC API.
//!
//! Any node can be the endpoint: requests reach the right shard leader on the
//! server side.
//!
//! ```no_run
//! # async fn demo() -> Result<(), orrery_client::Error> {
//! let mut c = orrery_client::Client::connect("127.0.0.1:17001").await?;
//! let rev = c.put("greeting", "hello").await?;
//! let v = c.get("greeting").await?;
//! assert_eq!(v.map(|v| v.value), Some(b"hello".to_vec()));
//! # let _ = rev; Ok(()) }
//! ```

mod jobs;

pub use jobs::ClaimOffer;
pub use orrery_proto::v1 as pb;
mod policies;
use orrery_proto::v1::cluster_client::ClusterClient;
use orrery_proto::v1::kv_client::KvClient;
use std::time::Duration;

mod vectors;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// The channel every service client of a [`Client`] uses: a connection
/// that adds the bearer token to each call.
pub type Channel = InterceptedService<tonic::transport::Channel, Auth>;

/// Adds `authorization: Bearer TOKEN` to every call (when there is one).
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// How to reach a secure cluster: the CA that signed its nodes'
/// certificates (`orreryctl certs create-ca`) and a bearer token.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// PEM file of the cluster CA; `None`: plain HTTP/2 (`--insecure` nodes).
    pub ca_cert: Option<std::path::PathBuf>,
    pub token: Option<String>,
}

impl Options {
    /// From `ORRERY_CA_CERT` and `ORRERY_TOKEN`, when set.
    pub fn from_env() -> Options {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Options {
            ca_cert: var("ORRERY_CA_CERT").map(Into::into),
            token: var("ORRERY_TOKEN"),
        }
    }
}
/// The endpoints in a comma-separated list (`ORRERY_ENDPOINTS`), blanks
/// dropped.
pub fn split_endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect()
}

/// The cluster's endpoints from the environment: `ORRERY_ENDPOINT` (one
/// node) when set, else `ORRERY_ENDPOINTS` (comma-separated); empty when
/// neither is.
pub fn endpoints_from_env() -> Vec<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    var("ORRERY_ENDPOINT")
        .or_else(|| var("ORRERY_ENDPOINTS"))
        .map(|v| split_endpoints(&v))
        .unwrap_or_default()
}

#[cfg(test)]
mod endpoint_tests {
    #[test]
    fn split_endpoints_drops_blanks() {
        assert_eq!(
            super::split_endpoints(" a:1, b:2,,c:3 ,"),
            vec!["a:1", "b:2", "c:3"]
        );
        assert!(super::split_endpoints(" , ").is_empty());
    }
}

pub use vectors::{PointId, VectorCollection, VectorHit, VectorPoint, VectorSearchRequest};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] tonic::Status),
}

fn code_name(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::NotFound => "not found",
        tonic::Code::FailedPrecondition => "conflict",
        tonic::Code::ResourceExhausted => "too large",
        tonic::Code::Unavailable => "unavailable",
        _ => "error",
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    #[default]
    Linearizable,
    Stale,
}

impl Consistency {
    fn pb(self) -> i32 {
        match self {
            Consistency::Linearizable => pb::Consistency::Linearizable as i32,
            Consistency::Stale => pb::Consistency::Stale as i32,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub value: Vec<u8>,
    pub revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    pub succeeded: bool,
    pub revision: u64,
    pub current: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct Client {
    kv: KvClient<Channel>,
    cluster: ClusterClient<Channel>,
    /// For the clients of other services (jobs, ...).
    channel: Channel,
    vectors: orrery_proto::v1::vectors_client::VectorsClient<Channel>,
    policies: orrery_proto::v1::policies_client::PoliciesClient<Channel>,
}

impl Client {
    /// Connects to `endpoint` (`host:port`) with the CA and token of
    /// [`Options::from_env`] (none: an `--insecure` cluster).
    pub async fn connect(endpoint: &str) -> Result<Self, Error> {
        Self::connect_with(endpoint, &Options::from_env()).await
    }

    /// Connects to the first of `endpoints` (`host:port` each) that
    /// answers, in order: any node serves every request, so a client given
    /// the whole cluster (`ORRERY_ENDPOINTS`) starts while some nodes are
    /// down. The error names every endpoint tried.
    pub async fn connect_any<S: AsRef<str>>(
        endpoints: &[S],
        opts: &Options,
    ) -> Result<Self, Error> {
        let mut failures = Vec::new();
        for e in endpoints {
            match Self::connect_with(e.as_ref(), opts).await {
                Ok(c) => return Ok(c),
                Err(Error::Connect { endpoint, message }) => {
                    failures.push(format!("{endpoint}: {message}"))
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Connect {
            endpoint: endpoints
                .iter()
                .map(|e| e.as_ref())
                .collect::<Vec<_>>()
                .join(","),
            message: if failures.is_empty() {
                "no endpoint given".into()
            } else {
                failures.join("; ")
            },
        })
    }

    /// Connects to `endpoint` (`host:port`): TLS trusting `opts.ca_cert`
    /// when given, and `opts.token` on every call.
    pub async fn connect_with(endpoint: &str, opts: &Options) -> Result<Self, Error> {
        let host = endpoint
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let err = |m: String| Error::Connect {
            endpoint: endpoint.to_string(),
            message: m,
        };
        let scheme = if opts.ca_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let mut ep =
            Endpoint::from_shared(format!("{scheme}://{host}")).map_err(|e| err(e.to_string()))?;
        if let Some(ca) = &opts.ca_cert {
            let pem = std::fs::read(ca)
                .map_err(|e| err(format!("CA certificate {}: {e}", ca.display())))?;
            ep = ep
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|e| err(e.to_string()))?;
        }
        let auth = match &opts.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| err("the token holds characters a header cannot".into()))?,
            ),
            None => None,
        };
        let ch = ep
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| {
                err(format!(
                    "{e} ({})",
                    std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                ))
            })?;
        let ch = InterceptedService::new(ch, Auth(auth));
        Ok(Self {
            kv: KvClient::new(ch.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            cluster: ClusterClient::new(ch.clone()),
            vectors: vectors::client(ch.clone()),
            policies: orrery_proto::v1::policies_client::PoliciesClient::new(ch.clone())
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(64 << 20),
            channel: ch,
        })
    }

    pub async fn put(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<u64, Error> {
        let r = self
            .kv
            .put(pb::PutRequest {
                key: key.into(),
                value: value.into(),
            })
            .await?;
        Ok(r.into_inner().revision)
    }

    pub async fn get(&mut self, key: impl Into<Vec<u8>>) -> Result<Option<Value>, Error> {
        self.get_with(key, Consistency::Linearizable).await
    }

    pub async fn get_with(
        &mut self,
        key: impl Into<Vec<u8>>,
        c: Consistency,
    ) -> Result<Option<Value>, Error> {
        let r = self
            .kv
            .get(pb::GetRequest {
                key: key.into(),
                consistency: c.pb(),
            })
            .await?
            .into_inner();
        Ok(r.found.then_some(Value {
            value: r.value,
            revision: r.revision,
        }))
    }

    /// Returns whether the key existed.
    pub async fn delete(&mut self, key: impl Into<Vec<u8>>) -> Result<bool, Error> {
        Ok(self
            .kv
            .delete(pb::DeleteRequest { key: key.into() })
            .await?
            .into_inner()
            .deleted)
    }

    /// Compare-and-set; `expected = None` means "only if absent".
    pub async fn cas(
        &mut self,
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<CasOutcome, Error> {
        let r = self
            .kv
            .cas(pb::CasRequest {
                key: key.into(),
                expected,
                value: value.into(),
            })
            .await?
            .into_inner();
        Ok(CasOutcome {
            succeeded: r.succeeded,
            revision: r.revision,
            current: r.current,
        })
    }

    pub async fn list(
        &mut self,
        prefix: impl Into<Vec<u8>>,
        limit: u32,
        c: Consistency,
    ) -> Result<Vec<pb::KeyValue>, Error> {
        let r = self
            .kv
            .list(pb::ListRequest {
                prefix: prefix.into(),
                limit,
                consistency: c.pb(),
            })
            .await?;
        Ok(r.into_inner().items)
    }

    /// Deletes every key with `prefix` (not empty); returns how many. Needs
    /// cluster version 2: before, the server refuses it (`FailedPrecondition`).
    pub async fn delete_prefix(&mut self, prefix: impl Into<Vec<u8>>) -> Result<u64, Error> {
        Ok(self
            .kv
            .delete_prefix(pb::DeletePrefixRequest {
                prefix: prefix.into(),
            })
            .await?
            .into_inner()
            .deleted)
    }

    /// The cluster version: active, held, and what each member supports.
    pub async fn cluster_version(&mut self) -> Result<pb::ClusterVersion, Error> {
        Ok(self
            .cluster
            .get_version(pb::GetVersionRequest {})
            .await?
            .into_inner())
    }

    /// Holds (`Hold(true)`), releases (`Hold(false)`) or finalizes the
    /// cluster version; returns it as it then stands.
    pub async fn set_cluster_version(
        &mut self,
        action: pb::set_version_request::Action,
    ) -> Result<pb::ClusterVersion, Error> {
        Ok(self
            .cluster
            .set_version(pb::SetVersionRequest {
                action: Some(action),
            })
            .await?
            .into_inner())
    }

    /// The cluster-administration API.
    /// The shard map with each shard's current leader.
    pub async fn shards(&mut self) -> Result<Vec<pb::Shard>, Error> {
        Ok(self
            .cluster
            .list_shards(pb::ListShardsRequest {})
            .await?
            .into_inner()
            .shards)
    }

    /// The `orrery.v1.Auth` service (tokens; admins only).
    pub fn auth(&self) -> orrery_proto::v1::auth_client::AuthClient<Channel> {
        orrery_proto::v1::auth_client::AuthClient::new(self.channel.clone())
    }

    /// Rebalancing: paused or not, balanced or not, shards moving.
    pub async fn rebalance(&mut self) -> Result<pb::RebalanceState, Error> {
        Ok(self
            .cluster
            .get_rebalance(pb::GetRebalanceRequest {})
            .await?
            .into_inner())
    }

    /// Pauses (`true`) or resumes (`false`) rebalancing, cluster-wide.
    pub async fn set_rebalance(&mut self, paused: bool) -> Result<pb::RebalanceState, Error> {
        self.change_rebalance(Some(paused), None, None).await
    }

    /// Changes any of the rebalancing settings (`None` leaves one as it
    /// is): paused, moves in flight cluster-wide, moves per node (the
    /// limits need cluster version 9).
    pub async fn change_rebalance(
        &mut self,
        paused: Option<bool>,
        max_moves: Option<u32>,
        max_per_node: Option<u32>,
    ) -> Result<pb::RebalanceState, Error> {
        let req = pb::SetRebalanceRequest {
            paused: paused.unwrap_or(false),
            keep_paused: paused.is_none(),
            max_moves,
            max_per_node,
        };
        Ok(self.cluster.set_rebalance(req).await?.into_inner())
    }

    pub fn cluster(&mut self) -> &mut ClusterClient<Channel> {
        &mut self.cluster
    }
}
