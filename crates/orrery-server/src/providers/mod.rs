//! Model providers (`--providers FILE`): the file's parsing and validation
//! (`config.rs`), per-provider client-side rate limits (`limiter.rs`) and
//! the client that sends images to them (`client.rs`), which the execution
//! engine's `image.caption` jobs use through `orrery_exec::Captioner`.

pub mod client;
pub mod config;
pub mod limiter;
#[cfg(test)]
mod tests;

pub use client::ProviderClients;
pub use config::{load, parse, Provider, ProviderKind, ProvidersConfig};
