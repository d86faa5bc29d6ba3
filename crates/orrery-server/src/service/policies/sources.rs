//! Data sources: the named KV, HTTP and vector lookups graphs use. A
//! source's definition is JSON on both fronts (the REST body, the gRPC
//! message's `json` field), read by [`parse_source`] and shown by
//! [`source_json`].

use super::effects::{HTTP_DEFAULT_DEADLINE_MS, HTTP_MAX_DEADLINE_MS};
use super::{check_name, PoliciesService};
use crate::api::{now_ms, ApiError};
use crate::netguard::{check_url, HttpAllowlist};
use orrery_policy::store::{
    DataSource, DataSourceKind, PolicyCommand, PolicyQuery, PolicyQueryResult, PolicyResponse,
};
use orrery_types::PLACEMENT_GROUP;
use serde_json::{json, Value as Json};

use super::store::unexpected;

/// A data source's definition, as both fronts show it.
pub fn source_json(s: &DataSource) -> Json {
    let mut j = match &s.kind {
        DataSourceKind::Kv { key_template } => json!({"key_template": key_template}),
        DataSourceKind::Http {
            url_template,
            method,
            timeout_ms,
            retries,
            cache_ttl_ms,
        } => {
            json!({"url_template": url_template, "method": method, "timeout_ms": timeout_ms, "retries": retries, "cache_ttl_ms": cache_ttl_ms})
        }
        DataSourceKind::Vector {
            collection,
            k,
            field,
            filter,
            with_payload,
        } => {
            let filter = filter
                .as_deref()
                .map(|f| serde_json::from_str::<Json>(f).unwrap_or(Json::String(f.into())));
            json!({"collection": collection, "k": k, "vector_field": field, "filter": filter, "with_payload": with_payload})
        }
    };
    j["name"] = json!(s.name);
    j["kind"] = json!(s.kind.name());
    j["created"] = json!(s.created_ms);
    j
}

/// Reads a data source's definition (a JSON object).
pub fn parse_source(body: &Json) -> Result<DataSource, ApiError> {
    let s = |k: &str| body.get(k).and_then(Json::as_str);
    let name = s("name").ok_or_else(|| ApiError::bad("invalid_source", "name is required"))?;
    check_name("name", name)?;
    let u = |k: &str, d: u64| -> Result<u64, ApiError> {
        match body.get(k) {
            None => Ok(d),
            Some(v) => v.as_u64().ok_or_else(|| {
                ApiError::bad(
                    "invalid_source",
                    format!("{k} must be a non-negative integer"),
                )
            }),
        }
    };
    let kind = match s("kind") {
        Some("kv") => {
            let t = s("key_template").ok_or_else(|| {
                ApiError::bad(
                    "invalid_source",
                    "a kv source needs key_template (with {key})",
                )
            })?;
            if !t.contains("{key}") {
                return Err(ApiError::bad(
                    "invalid_source",
                    "key_template must contain {key}",
                ));
            }
            DataSourceKind::Kv {
                key_template: t.into(),
            }
        }
        Some("http") => {
            let t = s("url_template").ok_or_else(|| {
                ApiError::bad("invalid_source", "an http source needs url_template")
            })?;
            if !(t.starts_with("http://") || t.starts_with("https://")) {
                return Err(ApiError::bad(
                    "invalid_source",
                    "url_template must be an http:// or https:// URL",
                ));
            }
            let method = s("method").unwrap_or("GET").to_ascii_uppercase();
            if method != "GET" && method != "POST" {
                return Err(ApiError::bad(
                    "invalid_source",
                    "method must be GET or POST",
                ));
            }
            // The deadline of one lookup, all its attempts together.
            let timeout_ms = u("timeout_ms", HTTP_DEFAULT_DEADLINE_MS)?;
            if timeout_ms == 0 || timeout_ms > HTTP_MAX_DEADLINE_MS {
                return Err(ApiError::bad(
                    "invalid_source",
                    format!("timeout_ms must be 1..={HTTP_MAX_DEADLINE_MS}"),
                ));
            }
            let retries = u("retries", 0)?;
            if retries > 10 {
                return Err(ApiError::bad("invalid_source", "retries must be 0..=10"));
            }
            DataSourceKind::Http {
                url_template: t.into(),
                method,
                timeout_ms,
                retries: retries as u32,
                cache_ttl_ms: u("cache_ttl_ms", 0)?,
            }
        }
        Some("vector") => {
            let collection = s("collection").ok_or_else(|| {
                ApiError::bad("invalid_source", "a vector source needs collection")
            })?;
            if collection.is_empty() {
                return Err(ApiError::bad(
                    "invalid_source",
                    "collection must not be empty",
                ));
            }
            let k = u("k", 10)?;
            if k == 0 || k > orrery_vector::MAX_K as u64 {
                return Err(ApiError::bad(
                    "invalid_source",
                    format!("k must be 1..={}, got {k}", orrery_vector::MAX_K),
                ));
            }
            let field = s("vector_field").ok_or_else(|| {
                ApiError::bad(
                    "invalid_source",
                    "a vector source needs vector_field (a string)",
                )
            })?;
            if field.is_empty() || field.len() > 128 {
                return Err(ApiError::bad(
                    "invalid_source",
                    "vector_field must be 1-128 characters",
                ));
            }
            let filter = match body.get("filter") {
                None | Some(Json::Null) => None,
                Some(f) => {
                    orrery_vector::filter::Filter::parse(f)
                        .map_err(|m| ApiError::bad("invalid_source", format!("filter: {m}")))?;
                    Some(f.to_string())
                }
            };
            let with_payload = match body.get("with_payload") {
                None => true,
                Some(v) => v.as_bool().ok_or_else(|| {
                    ApiError::bad("invalid_source", "with_payload must be a bool")
                })?,
            };
            DataSourceKind::Vector {
                collection: collection.into(),
                k: k as u32,
                field: field.into(),
                filter,
                with_payload,
            }
        }
        other => {
            return Err(ApiError::bad(
                "invalid_source",
                format!("kind must be \"kv\", \"http\" or \"vector\", got {other:?}"),
            ))
        }
    };
    Ok(DataSource {
        name: name.into(),
        kind,
        created_ms: now_ms(),
    })
}

/// Checks an http source's URL as a lookup will see it: http(s), no
/// credentials, no forbidden address literal (see [`crate::netguard`]).
/// `{key}` stands for a key made of letters; a key that turns the host
/// into an address is checked again at lookup time.
fn check_template(url_template: &str, allow: &HttpAllowlist) -> Result<(), ApiError> {
    check_url(&url_template.replace("{key}", "key"), allow)
        .map(|_| ())
        .map_err(|m| ApiError::bad("invalid_source", format!("url_template: {m}")))
}

impl PoliciesService {
    pub async fn data_sources(&self) -> Result<Vec<DataSource>, ApiError> {
        match self.read(PLACEMENT_GROUP, PolicyQuery::DataSources).await? {
            PolicyQueryResult::DataSources(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Stores a source (see [`parse_source`]); a vector source's collection
    /// must exist.
    pub async fn data_source_create(&self, source: DataSource) -> Result<DataSource, ApiError> {
        if let DataSourceKind::Http { url_template, .. } = &source.kind {
            check_template(url_template, &self.node.cfg.policies.http_allow)?;
        }
        if let DataSourceKind::Vector { collection, .. } = &source.kind {
            if !self.deps.collection_exists(collection).await? {
                return Err(ApiError::bad(
                    "invalid_source",
                    format!("collection {collection:?} does not exist"),
                ));
            }
        }
        let cmd = PolicyCommand::CreateDataSource { source };
        match self.write(PLACEMENT_GROUP, cmd).await? {
            PolicyResponse::DataSource(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    pub async fn data_source_delete(&self, name: String) -> Result<(), ApiError> {
        self.write(PLACEMENT_GROUP, PolicyCommand::DeleteDataSource { name })
            .await
            .map(|_| ())
    }
}
