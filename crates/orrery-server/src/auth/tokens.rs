//! Our own bearer tokens. A token is `orr_<id>_<secret>`: the id names its
//! record, `auth/tokens/<id>` in the placement group's key-value state
//! (replicated to every node), which holds the SHA-256 of the secret, never
//! the secret. The secret is 256 random bits, so a fast hash is enough: no
//! one can guess their way to a preimage. Every node checks a token against
//! its own applied copy, so a revocation or an expiry takes effect on a
//! node as soon as it applies the change (a heartbeat, ~150 ms).

use super::{Caller, Role};
use crate::api::ApiError;
use crate::node::typed::KvList;
use crate::node::Node;
use base64::Engine;
use orrery_kv::{KvCommand, KvResponse};
use orrery_types::PLACEMENT_GROUP;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "orr_";
pub const KEY_PREFIX: &str = "auth/tokens/";
/// The root token's id: `cluster init` creates it.
pub const ROOT_ID: &str = "root";

/// A token as stored (and, without `hash`, as listed).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub created_ms: u64,
    /// 0: never.
    #[serde(default)]
    pub expires_ms: u64,
    /// 0: not revoked.
    #[serde(default)]
    pub revoked_ms: u64,
}

impl TokenRecord {
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "name": self.name, "role": self.role, "queues": self.queues,
            "created_ms": self.created_ms,
            "expires_ms": (self.expires_ms > 0).then_some(self.expires_ms),
            "revoked_ms": (self.revoked_ms > 0).then_some(self.revoked_ms),
        })
    }
}

pub fn is_ours(token: &str) -> bool {
    token.starts_with(PREFIX)
}

fn hash_hex(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal without an early exit, so response times say nothing about how
/// much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn key(id: &str) -> Vec<u8> {
    format!("{KEY_PREFIX}{id}").into_bytes()
}

/// Checks a token against this node's copy of its record.
pub fn authenticate(node: &Node, token: &str, now_ms: u64) -> Result<Caller, ApiError> {
    let bad = || ApiError::Unauthenticated("unknown or revoked token".into());
    let rest = token.strip_prefix(PREFIX).ok_or_else(bad)?;
    let (id, secret) = rest.split_once('_').ok_or_else(bad)?;
    let g = node
        .placement_group()
        .ok_or_else(|| ApiError::unavailable("the placement group is not running"))?;
    let Some(raw) = g.sm.read(|s| s.kv.get(&key(id)).map(|v| v.value.clone())) else {
        // No record: unknown, unless this node cannot know yet (not part
        // of a cluster, or replaying log entries it has not applied).
        if !g.sm.read(|s| s.placement.is_initialized()) {
            return Err(ApiError::NotInitialized);
        }
        let m = g.raft.metrics().borrow().clone();
        if m.last_applied.map(|l| l.index) < m.last_log_index {
            return Err(ApiError::unavailable(
                "this node is catching up and cannot check the token yet",
            ));
        }
        return Err(bad());
    };
    let rec: TokenRecord = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if !same(rec.hash.as_bytes(), hash_hex(secret).as_bytes()) || rec.revoked_ms > 0 {
        return Err(bad());
    }
    if rec.expires_ms > 0 && now_ms >= rec.expires_ms {
        return Err(ApiError::Unauthenticated(format!(
            "token {} has expired",
            rec.id
        )));
    }
    Ok(Caller {
        name: rec.name,
        role: Some(rec.role),
        queues: rec.queues,
    })
}

/// What `POST /v1/auth/tokens` asks for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    pub name: String,
    /// admin, writer, reader or worker.
    #[schema(pattern = "^(admin|writer|reader|worker)$")]
    pub role: String,
    #[serde(default)]
    /// Workers only: the queues the token may work (none: all).
    pub queues: Option<Vec<String>>,
    /// Lifetime in seconds (none: until revoked).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// Ten years: a bound that keeps `now + ttl` far from overflow.
const MAX_TTL_S: u64 = 10 * 365 * 24 * 3600;

fn check_name(field: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "invalid_token",
            format!(
                "{field} must be 1-64 characters of letters, digits, '-', '_', '.', '@'; got {s:?}"
            ),
        ))
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Creates a token; returns its record and the token itself (shown once).
pub async fn create(
    node: &Node,
    req: NewToken,
    now_ms: u64,
) -> Result<(TokenRecord, String), ApiError> {
    check_name("name", &req.name)?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::bad(
            "invalid_token",
            format!(
                "role must be admin, writer, reader or worker; got {:?}",
                req.role
            ),
        )
    })?;
    if let Some(qs) = &req.queues {
        if role != Role::Worker {
            return Err(ApiError::bad(
                "invalid_token",
                "queues limit worker tokens only",
            ));
        }
        if qs.is_empty() {
            return Err(ApiError::bad(
                "invalid_token",
                "queues must name at least one queue",
            ));
        }
        for q in qs {
            check_name("queue", q)?;
        }
    }
    let expires_ms = match req.ttl_s {
        None => 0,
        Some(0) => return Err(ApiError::bad("invalid_token", "ttl must be positive")),
        Some(t) if t > MAX_TTL_S => {
            return Err(ApiError::bad(
                "invalid_token",
                "ttl must be at most 10 years",
            ))
        }
        Some(t) => now_ms + t * 1000,
    };
    let id = random_hex(8);
    mint(node, id, req.name, role, req.queues, expires_ms, now_ms).await
}

/// Writes a new record and returns it with its token.
async fn mint(
    node: &Node,
    id: String,
    name: String,
    role: Role,
    queues: Option<Vec<String>>,
    expires_ms: u64,
    now_ms: u64,
) -> Result<(TokenRecord, String), ApiError> {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let rec = TokenRecord {
        id: id.clone(),
        name,
        role,
        queues,
        hash: hash_hex(&secret),
        created_ms: now_ms,
        expires_ms,
        revoked_ms: 0,
    };
    let value = serde_json::to_vec(&rec).map_err(|e| ApiError::Internal(e.to_string()))?;
    // Only if absent: a second `cluster init` racing the first must not
    // replace the root token the first one printed.
    let cmd = KvCommand::Cas {
        key: key(&id),
        expected: None,
        value,
    };
    match node.write(PLACEMENT_GROUP, cmd).await? {
        KvResponse::Cas {
            succeeded: true, ..
        } => Ok((rec, format!("{PREFIX}{id}_{secret}"))),
        _ => Err(ApiError::Conflict(format!("token {id} exists already"))),
    }
}

/// The root token, created once by `cluster init`.
pub async fn create_root(node: &Node, now_ms: u64) -> Result<String, ApiError> {
    mint(
        node,
        ROOT_ID.into(),
        "root".into(),
        Role::Admin,
        None,
        0,
        now_ms,
    )
    .await
    .map(|(_, t)| t)
}

/// Every token's record (linearizable).
pub async fn list(node: &Node) -> Result<Vec<TokenRecord>, ApiError> {
    let items = node
        .read(
            PLACEMENT_GROUP,
            KvList {
                prefix: KEY_PREFIX.as_bytes().to_vec(),
                limit: usize::MAX,
            },
            true,
        )
        .await?;
    Ok(items
        .iter()
        .filter_map(|i| serde_json::from_slice(&i.value).ok())
        .collect())
}

/// Revokes a token: its record stays, marked, so that lists show it.
pub async fn revoke(node: &Node, id: &str, now_ms: u64) -> Result<TokenRecord, ApiError> {
    let mut rec = list(node)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no token with id {id:?}")))?;
    if rec.revoked_ms == 0 {
        rec.revoked_ms = now_ms.max(1);
        let value = serde_json::to_vec(&rec).map_err(|e| ApiError::Internal(e.to_string()))?;
        node.write(
            PLACEMENT_GROUP,
            KvCommand::Put {
                key: key(id),
                value,
            },
        )
        .await?;
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_compare_in_full() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd") && !same(b"abc", b"ab"));
        assert_eq!(hash_hex("x").len(), 64);
        assert_ne!(hash_hex("x"), hash_hex("y"));
    }
}
