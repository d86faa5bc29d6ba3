//! The engine's way into datasets (`orrery_exec::DatasetOutputs`): the
//! pipeline kinds (`image.caption`, `image.thumbnail` with a `dataset`)
//! store their outputs on items with the same replicated write as
//! `PATCH /v1/datasets/{name}/items`, and read an item's thumbnail.
//! Holds the service weakly: the engine lives inside the jobs service,
//! which the datasets service holds.

use super::DatasetsService;
use orrery_dataset::{Attach, ItemFilter, Outputs, MAX_PAGE};
use orrery_exec::{DatasetOutputs, ItemOutputs};
use std::sync::{Arc, Weak};

pub struct EngineOutputs(pub Weak<DatasetsService>);

impl EngineOutputs {
    fn svc(&self) -> Result<Arc<DatasetsService>, String> {
        self.0
            .upgrade()
            .ok_or_else(|| "the node is shutting down".to_string())
    }
}

#[async_trait::async_trait]
impl DatasetOutputs for EngineOutputs {
    async fn attach(
        &self,
        dataset: &str,
        items: Vec<(String, ItemOutputs)>,
    ) -> Result<Vec<String>, String> {
        let items = items
            .into_iter()
            .map(|(path, o)| Attach {
                path,
                outputs: Outputs {
                    thumbnail: o.thumbnail,
                    caption: o.caption,
                    embedding_id: None,
                },
            })
            .collect();
        let svc = self.svc()?;
        // Below the datasets version older nodes could not apply the write.
        svc.node
            .require_version(super::DATASETS_VERSION)
            .await
            .map_err(|e| e.to_string())?;
        let (_, missing) = svc
            .attach(dataset, items)
            .await
            .map_err(|e| e.to_string())?;
        Ok(missing)
    }

    async fn thumbnail(&self, dataset: &str, path: &str) -> Result<Option<String>, String> {
        // Items are read in path order: the page of paths after `path`
        // less its last character, up to `path`, ends with `path` if it is
        // an item.
        let mut after = path.to_string();
        after.pop();
        let page = self
            .svc()?
            .items_range(
                dataset,
                Some(after),
                Some(path.to_string()),
                MAX_PAGE,
                ItemFilter::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(page
            .items
            .iter()
            .rev()
            .find(|i| i.meta.path == path)
            .and_then(|i| i.outputs.thumbnail.clone()))
    }
}
