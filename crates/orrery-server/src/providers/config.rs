//! The providers file (`--providers FILE`, TOML): parsing and validation,
//! no I/O beyond reading the API keys named by `api_key_env` /
//! `api_key_file` (read once, at start). Every error names the provider
//! and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

/// Deadline of one provider request when `timeout_ms` is not given.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The longest `timeout_ms` allowed (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// `max_requests_per_minute` when not given.
pub const DEFAULT_RPM: u32 = 60;
/// `max_concurrent` when not given.
pub const DEFAULT_CONCURRENT: u32 = 4;
/// `max_image_bytes` when not given (4 MiB), and the most it may be.
pub const DEFAULT_IMAGE_BYTES: u64 = 4 << 20;
pub const MAX_IMAGE_BYTES: u64 = 20 << 20;

/// The API a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    /// `POST {base_url}/chat/completions` with an `image_url` content part
    /// (OpenAI, vLLM, LM Studio, ...).
    OpenAi,
    /// `POST {base_url}/api/chat` with `images: [base64]` (Ollama).
    Ollama,
}

/// An API key: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One configured provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing `/`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    pub timeout: Duration,
    pub max_requests_per_minute: u32,
    pub max_concurrent: u32,
    pub max_image_bytes: u64,
}

/// The whole file: providers by name, and the default one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvidersConfig {
    pub providers: BTreeMap<String, Provider>,
    pub default: String,
}

const KEYS: &[&str] = &[
    "name",
    "kind",
    "base_url",
    "model",
    "api_key_env",
    "api_key_file",
    "timeout_ms",
    "max_requests_per_minute",
    "max_concurrent",
    "max_image_bytes",
];

/// Where keys come from: the process environment and files (tests give their own).
pub trait KeySource {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &Path) -> Result<String, String>;
}

/// The real environment and file system.
pub struct ProcessKeys;

impl KeySource for ProcessKeys {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file(&self, path: &Path) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Reads and validates the providers file.
pub fn load(path: &Path) -> Result<ProvidersConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text, &ProcessKeys).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses and validates the text of a providers file.
pub fn parse(text: &str, keys: &dyn KeySource) -> Result<ProvidersConfig, String> {
    let doc: Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut default = None;
    let mut list = Vec::new();
    for (k, v) in &doc {
        match (k.as_str(), v) {
            ("default_provider", Value::String(s)) => default = Some(s.clone()),
            ("default_provider", _) => return Err("default_provider must be a string".into()),
            ("provider", Value::Array(a)) => list = a.clone(),
            ("provider", _) => {
                return Err("provider must be an array of tables ([[provider]])".into())
            }
            (other, _) => {
                return Err(format!(
                    "unknown key {other:?} (allowed at the top: default_provider, [[provider]])"
                ))
            }
        }
    }
    if list.is_empty() {
        return Err("no [[provider]] is configured".into());
    }
    let mut providers = BTreeMap::new();
    for (i, v) in list.iter().enumerate() {
        let Value::Table(t) = v else {
            return Err(format!("provider #{} must be a table", i + 1));
        };
        let p = provider(i, t, keys)?;
        if providers.contains_key(&p.name) {
            return Err(format!("provider {:?}: the name is used twice", p.name));
        }
        providers.insert(p.name.clone(), p);
    }
    let default = match default {
        Some(d) if providers.contains_key(&d) => d,
        Some(d) => return Err(format!("default_provider {d:?} is no configured provider")),
        None if providers.len() == 1 => providers.keys().next().cloned().unwrap_or_default(),
        None => {
            return Err(format!(
                "{} providers and no default_provider: name the default one",
                providers.len()
            ))
        }
    };
    Ok(ProvidersConfig { providers, default })
}

fn provider(i: usize, t: &Table, keys: &dyn KeySource) -> Result<Provider, String> {
    let name = match t.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(format!("provider #{}: name must be a string", i + 1)),
        None => return Err(format!("provider #{}: name is required", i + 1)),
    };
    let at = |m: String| format!("provider {name:?}: {m}");
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(at("name must be 1..=64 of A-Za-z0-9_.-".into()));
    }
    for k in t.keys() {
        if k == "api_key" {
            return Err(at(
                "api_key: a key is never given inline; use api_key_env or api_key_file".into(),
            ));
        }
        if !KEYS.contains(&k.as_str()) {
            return Err(at(format!(
                "unknown field {k:?} (allowed: {})",
                KEYS.join(", ")
            )));
        }
    }
    let string = |f: &str| -> Result<Option<String>, String> {
        match t.get(f) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(at(format!("{f} must be a non-empty string"))),
        }
    };
    let int = |f: &str, min: u64, max: u64, default: u64| -> Result<u64, String> {
        match t.get(f) {
            None => Ok(default),
            Some(Value::Integer(n)) if (min as i64..=max as i64).contains(n) => Ok(*n as u64),
            Some(_) => Err(at(format!("{f} must be an integer in {min}..={max}"))),
        }
    };
    let kind = match string("kind")?.as_deref() {
        Some("openai") => ProviderKind::OpenAi,
        Some("ollama") => ProviderKind::Ollama,
        Some(k) => return Err(at(format!("kind {k:?} is not one of openai, ollama"))),
        None => return Err(at("kind is required (openai or ollama)".into())),
    };
    let base_url = string("base_url")?.ok_or_else(|| at("base_url is required".into()))?;
    let u = reqwest::Url::parse(&base_url)
        .map_err(|e| at(format!("base_url {base_url:?} is not a URL: {e}")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(at(format!(
            "base_url must be http or https, not {:?}",
            u.scheme()
        )));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(at(
            "base_url may not carry credentials (user:password@)".into()
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(at("base_url may not have a query or fragment".into()));
    }
    let model = string("model")?.ok_or_else(|| at("model is required".into()))?;
    let api_key = match (string("api_key_env")?, t.get("api_key_file")) {
        (Some(_), Some(_)) => {
            return Err(at("give api_key_env or api_key_file, not both".into()));
        }
        (Some(var), None) => match keys.env(&var) {
            Some(k) if !k.trim().is_empty() => Some(Secret(k.trim().to_string())),
            _ => {
                return Err(at(format!(
                    "api_key_env: the environment variable {var:?} is not set or empty"
                )))
            }
        },
        (None, Some(Value::String(f))) if !f.is_empty() => {
            let path = PathBuf::from(f);
            let k = keys
                .file(&path)
                .map_err(|e| at(format!("api_key_file: {e}")))?;
            if k.trim().is_empty() {
                return Err(at(format!("api_key_file: {f} is empty")));
            }
            Some(Secret(k.trim().to_string()))
        }
        (None, Some(_)) => return Err(at("api_key_file must be a non-empty string".into())),
        (None, None) => None,
    };
    Ok(Provider {
        kind,
        base_url: base_url.trim_end_matches('/').to_string(),
        model,
        api_key,
        timeout: Duration::from_millis(int("timeout_ms", 1, MAX_TIMEOUT_MS, DEFAULT_TIMEOUT_MS)?),
        max_requests_per_minute: int("max_requests_per_minute", 1, 60_000, DEFAULT_RPM.into())?
            as u32,
        max_concurrent: int("max_concurrent", 1, 1024, DEFAULT_CONCURRENT.into())? as u32,
        max_image_bytes: int("max_image_bytes", 1, MAX_IMAGE_BYTES, DEFAULT_IMAGE_BYTES)?,
        name,
    })
}
