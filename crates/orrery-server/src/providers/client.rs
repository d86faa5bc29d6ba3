//! Requests to model providers, under the rules of every outbound request
//! of a node (docs/security.md): the destination checked by the SSRF guard
//! (`crate::netguard`, allowlist `--http-sources-allow`), no redirects, no
//! proxy from the environment, the answer capped at [`MAX_ANSWER_BYTES`],
//! the provider's `timeout_ms` as the deadline, https through rustls; and
//! each provider's client-side rate limits ([`Limiter`]).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use orrery_exec::{Caption, CaptionError, CaptionRequest, Captioner};
use serde_json::{json, Value};

use super::config::{Provider, ProviderKind, ProvidersConfig};
use super::limiter::{retry_after, Limiter};
use crate::netguard::{check_url_for, error_chain, GuardedResolver, HttpAllowlist, PROVIDERS};

/// The largest answer read from a provider.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The longest caption kept (the dataset's limit is 16 KiB).
const MAX_CAPTION_BYTES: usize = 16 * 1024;

/// The node's provider clients: one HTTP client, one limiter per provider.
pub struct ProviderClients {
    cfg: Arc<ProvidersConfig>,
    allow: Arc<HttpAllowlist>,
    http: reqwest::Client,
    limits: HashMap<String, Limiter>,
}

fn retry(message: String) -> CaptionError {
    CaptionError {
        message,
        retry: true,
    }
}

fn permanent(message: String) -> CaptionError {
    CaptionError {
        message,
        retry: false,
    }
}

impl ProviderClients {
    pub fn new(cfg: Arc<ProvidersConfig>, allow: HttpAllowlist) -> Result<Self, String> {
        let allow = Arc::new(allow);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow: allow.clone(),
                who: PROVIDERS,
            }))
            .build()
            .map_err(|e| format!("the providers' http client could not be built: {e}"))?;
        for p in cfg.providers.values() {
            // Not fatal: the allowlist may be meant to change; each request
            // is refused with this message until it does.
            if let Err(e) = check_url_for(&p.base_url, &allow, PROVIDERS) {
                tracing::warn!(provider = %p.name, "requests to this provider will be refused: {e}");
            }
        }
        let limits = cfg
            .providers
            .values()
            .map(|p| {
                (
                    p.name.clone(),
                    Limiter::new(p.max_requests_per_minute, p.max_concurrent),
                )
            })
            .collect();
        Ok(Self {
            cfg,
            allow,
            http,
            limits,
        })
    }

    fn provider(&self, name: Option<&str>) -> Result<(&Provider, &Limiter), CaptionError> {
        let name = name.unwrap_or(&self.cfg.default);
        match (self.cfg.providers.get(name), self.limits.get(name)) {
            (Some(p), Some(l)) => Ok((p, l)),
            _ => Err(permanent(format!(
                "unknown provider {name:?} (configured: {})",
                self.cfg
                    .providers
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The request for `p`'s API: URL and JSON body.
    fn request(p: &Provider, req: &CaptionRequest) -> (String, Value) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&req.image);
        match p.kind {
            ProviderKind::OpenAi => {
                let mut body = json!({
                    "model": p.model,
                    "messages": [{"role": "user", "content": [
                        {"type": "text", "text": req.prompt},
                        {"type": "image_url", "image_url": {"url": format!("data:{};base64,{b64}", req.mime)}}
                    ]}]
                });
                if let Some(n) = req.max_tokens {
                    body["max_tokens"] = json!(n);
                }
                (format!("{}/chat/completions", p.base_url), body)
            }
            ProviderKind::Ollama => {
                let mut body = json!({
                    "model": p.model,
                    "stream": false,
                    "messages": [{"role": "user", "content": req.prompt, "images": [b64]}]
                });
                if let Some(n) = req.max_tokens {
                    body["options"] = json!({"num_predict": n});
                }
                (format!("{}/api/chat", p.base_url), body)
            }
        }
    }

    /// The caption in a provider's answer.
    fn caption_of(p: &Provider, v: &Value) -> Option<String> {
        let text = match p.kind {
            ProviderKind::OpenAi => &v["choices"][0]["message"]["content"],
            ProviderKind::Ollama => &v["message"]["content"],
        };
        let s = text.as_str()?.trim();
        if s.is_empty() {
            return None;
        }
        let mut end = s.len().min(MAX_CAPTION_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Some(s[..end].to_string())
    }

    async fn send(&self, p: &Provider, req: &CaptionRequest) -> Result<Value, CaptionError> {
        let (url, body) = Self::request(p, req);
        let url = check_url_for(&url, &self.allow, PROVIDERS)
            .map_err(|e| permanent(format!("provider {:?}: {e}", p.name)))?;
        let mut rb = self.http.post(url).timeout(p.timeout).json(&body);
        if let Some(k) = &p.api_key {
            rb = rb.bearer_auth(&k.0);
        }
        let name = &p.name;
        let timeout_ms = p.timeout.as_millis();
        let timed_out = || {
            retry(format!(
                "provider {name:?}: no answer within {timeout_ms} ms (timeout_ms)"
            ))
        };
        let mut resp = match rb.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(timed_out()),
            Err(e) => {
                let why = error_chain(&e);
                // The guard's refusal is the operator's to lift: no retry.
                let guard = why.contains("may not reach it");
                return Err(CaptionError {
                    message: format!("provider {name:?}: {why}"),
                    retry: !guard,
                });
            }
        };
        let status = resp.status();
        let retry_hdr = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut buf = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if buf.len() + c.len() > MAX_ANSWER_BYTES {
                        return Err(retry(format!(
                            "provider {name:?}: the answer is over {MAX_ANSWER_BYTES} bytes"
                        )));
                    }
                    buf.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(timed_out()),
                Err(e) => return Err(retry(format!("provider {name:?}: {}", error_chain(&e)))),
            }
        }
        let excerpt = || {
            let t = String::from_utf8_lossy(&buf);
            t.chars().take(300).collect::<String>()
        };
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after(retry_hdr.as_deref());
            if let Some(l) = self.limits.get(name) {
                l.back_off(wait);
            }
            return Err(retry(format!(
                "provider {name:?} answered 429 Too Many Requests (Retry-After {} s); the job is retried",
                wait.as_secs_f64()
            )));
        }
        if status.is_redirection() {
            return Err(permanent(format!(
                "provider {name:?} answered {status}; redirects are not followed"
            )));
        }
        if !status.is_success() {
            let msg = format!("provider {name:?} answered {status}: {}", excerpt());
            // A 5xx or a timeout may pass; another 4xx (a bad key, a bad
            // model) will not.
            return Err(if status.is_server_error() || status.as_u16() == 408 {
                retry(msg)
            } else {
                permanent(msg)
            });
        }
        serde_json::from_slice(&buf).map_err(|e| {
            retry(format!(
                "provider {name:?}: the answer is not JSON ({e}): {}",
                excerpt()
            ))
        })
    }
}

#[async_trait::async_trait]
impl Captioner for ProviderClients {
    async fn caption(&self, req: CaptionRequest) -> Result<Caption, CaptionError> {
        let (p, limiter) = self.provider(req.provider.as_deref())?;
        if req.image.len() as u64 > p.max_image_bytes {
            return Err(permanent(format!(
                "the image is {} bytes; provider {:?} takes at most {} (max_image_bytes)",
                req.image.len(),
                p.name,
                p.max_image_bytes
            )));
        }
        let _place = limiter.acquire().await;
        let v = self.send(p, &req).await?;
        let caption = Self::caption_of(p, &v).ok_or_else(|| {
            retry(format!(
                "provider {:?}: the answer holds no caption ({})",
                p.name,
                match p.kind {
                    ProviderKind::OpenAi => "choices[0].message.content",
                    ProviderKind::Ollama => "message.content",
                }
            ))
        })?;
        Ok(Caption {
            caption,
            provider: p.name.clone(),
            model: p.model.clone(),
        })
    }
}
