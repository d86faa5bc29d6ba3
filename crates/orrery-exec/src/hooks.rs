//! What the engine needs from outside itself for the pipeline kinds
//! (`image.caption`, and `image.thumbnail` attaching its outputs): a model
//! provider to caption with and a way to write an item's outputs into a
//! dataset. Both are traits, implemented by the server (over its provider
//! clients and its datasets service) and injected when the engine starts,
//! so this crate stays free of HTTP and of the cluster.

use std::sync::Arc;

/// The outputs an engine job sets on one dataset item (`None` keeps it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ItemOutputs {
    pub thumbnail: Option<String>,
    pub caption: Option<String>,
}

/// Writes outputs onto dataset items (the replicated write
/// `PATCH /v1/datasets/{name}/items` does).
#[async_trait::async_trait]
pub trait DatasetOutputs: Send + Sync + 'static {
    /// Sets `outputs` on the items at these root-relative paths; returns the
    /// paths that are no item of the dataset (nothing is set for them).
    async fn attach(
        &self,
        dataset: &str,
        items: Vec<(String, ItemOutputs)>,
    ) -> Result<Vec<String>, String>;
    /// The thumbnail output of the item at `path`, if it has one.
    async fn thumbnail(&self, dataset: &str, path: &str) -> Result<Option<String>, String>;
}

/// One image to caption.
#[derive(Clone, Debug)]
pub struct CaptionRequest {
    /// The provider named by the job; `None`: the default one.
    pub provider: Option<String>,
    pub image: Vec<u8>,
    /// `image/png` or `image/jpeg`.
    pub mime: &'static str,
    pub prompt: String,
    pub max_tokens: Option<u32>,
}

/// A provider's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caption {
    pub caption: String,
    pub provider: String,
    pub model: String,
}

/// Why captioning failed, and whether another attempt may succeed (a
/// timeout, a 429 or a 5xx may; an unknown provider, a refused destination
/// or a 4xx will not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptionError {
    pub message: String,
    pub retry: bool,
}

/// Sends images to model providers.
#[async_trait::async_trait]
pub trait Captioner: Send + Sync + 'static {
    async fn caption(&self, req: CaptionRequest) -> Result<Caption, CaptionError>;
}

/// What the server hands the engine; both optional (a node without
/// `--providers` has no captioner and does not claim `image.caption`).
#[derive(Clone, Default)]
pub struct Hooks {
    pub outputs: Option<Arc<dyn DatasetOutputs>>,
    pub captioner: Option<Arc<dyn Captioner>>,
}
