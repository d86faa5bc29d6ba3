//! Reads of a group's datasets: the list, one definition, pages of items.

use crate::{DatasetDef, DatasetState, Item, MAX_PAGE};
use serde::{Deserialize, Serialize};
use std::ops::Bound;

/// Which items a page holds (every set condition must hold).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemFilter {
    pub has_caption: Option<bool>,
    pub has_thumbnail: Option<bool>,
    pub has_embedding: Option<bool>,
    /// Lower-case file extension without the dot (`png`).
    pub ext: Option<String>,
}

impl ItemFilter {
    pub fn matches(&self, it: &Item) -> bool {
        let has = |want: Option<bool>, v: &Option<String>| want.is_none_or(|w| w == v.is_some());
        has(self.has_caption, &it.outputs.caption)
            && has(self.has_thumbnail, &it.outputs.thumbnail)
            && has(self.has_embedding, &it.outputs.embedding_id)
            && self.ext.as_ref().is_none_or(|e| {
                let name = it.meta.path.rsplit('/').next().unwrap_or("");
                name.rsplit_once('.')
                    .is_some_and(|(_, x)| x.eq_ignore_ascii_case(e))
            })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatasetQuery {
    List,
    Get(String),
    Items {
        name: String,
        /// Items with paths after this one (exclusive).
        after: Option<String>,
        /// Paths up to this one (inclusive), when set.
        until: Option<String>,
        limit: usize,
        filter: ItemFilter,
    },
}

/// A page of items in path order; `next` is the `after` of the next page
/// (`None`: this was the last).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemsPage {
    pub items: Vec<Item>,
    pub next: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatasetQueryResult {
    List(Vec<DatasetDef>),
    Get(Option<Box<DatasetDef>>),
    /// `None`: no such dataset.
    Items(Option<ItemsPage>),
}

impl DatasetState {
    pub fn query(&self, q: &DatasetQuery) -> DatasetQueryResult {
        match q {
            DatasetQuery::List => DatasetQueryResult::List(self.defs().cloned().collect()),
            DatasetQuery::Get(n) => DatasetQueryResult::Get(self.def(n).cloned().map(Box::new)),
            DatasetQuery::Items {
                name,
                after,
                until,
                limit,
                filter,
            } => {
                if self.def(name).is_none() {
                    return DatasetQueryResult::Items(None);
                }
                let limit = (*limit).clamp(1, MAX_PAGE);
                let lower = match after {
                    Some(a) => Bound::Excluded(a.clone()),
                    None => Bound::Unbounded,
                };
                let upper = match until {
                    Some(u) => Bound::Included(u.clone()),
                    None => Bound::Unbounded,
                };
                // An empty range (until before after) is no page, not a panic.
                if let (Some(a), Some(u)) = (after, until) {
                    if u <= a {
                        return DatasetQueryResult::Items(Some(ItemsPage {
                            items: Vec::new(),
                            next: None,
                        }));
                    }
                }
                let mut items = Vec::new();
                let mut next = None;
                if let Some(map) = self.items(name) {
                    for (_, it) in map.range::<String, _>((lower, upper)) {
                        if !filter.matches(it) {
                            continue;
                        }
                        if items.len() == limit {
                            next = items.last().map(|i: &Item| i.meta.path.clone());
                            break;
                        }
                        items.push(it.clone());
                    }
                }
                DatasetQueryResult::Items(Some(ItemsPage { items, next }))
            }
        }
    }
}
