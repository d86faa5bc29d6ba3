//! Apply: the vector state machine's one write path, a pure function of
//! the command, its log index and the prior state (the derived indexes are
//! only handed the changes).

use crate::filter::Filter;
use crate::{
    PointId, ShardCollection, StoredPoint, VectorCommand, VectorError, VectorResponse, VectorState,
};
use serde_json::Value;
use std::sync::Arc;

impl VectorState {
    pub fn apply(&mut self, index: u64, cmd: VectorCommand) -> VectorResponse {
        match cmd {
            VectorCommand::CreateCollection(mut c) => {
                if let Some(existing) = self.catalog.get(&c.name) {
                    c.uid = existing.uid;
                    return if *existing == c {
                        // Idempotent retry of the same create.
                        VectorResponse::Created(existing.clone())
                    } else {
                        VectorResponse::Rejected(VectorError::AlreadyExists(c.name))
                    };
                }
                c.uid = index;
                self.catalog.insert(c.name.clone(), c.clone());
                VectorResponse::Created(c)
            }
            VectorCommand::DropCollection { name } => VectorResponse::Dropped {
                existed: self.catalog.remove(&name).is_some(),
            },
            VectorCommand::DropData { collection } => VectorResponse::Dropped {
                existed: self.data.remove(&collection).is_some(),
            },
            VectorCommand::Upsert {
                collection,
                uid,
                metric,
                m,
                ef_construction,
                points,
            } => {
                let no_index = self.no_index;
                let c = match self.collection_for_write(&collection, uid) {
                    Ok(c) => c,
                    Err(e) => return VectorResponse::Rejected(e),
                };
                c.metric = Some(metric);
                c.m = m;
                c.ef_construction = ef_construction;
                let count = points.len();
                let mut fresh = Vec::with_capacity(if no_index { 0 } else { count });
                for p in points {
                    if !no_index {
                        fresh.push((p.id.clone(), p.vector.0.clone()));
                    }
                    if let Some(old) = c.points.get(&p.id) {
                        c.payload_index.remove(&p.id, &old.payload);
                    }
                    c.payload_index.insert(&p.id, &p.payload);
                    c.points.insert(
                        p.id,
                        Arc::new(StoredPoint {
                            vector: p.vector,
                            payload: p.payload,
                            rev: index,
                        }),
                    );
                }
                c.last_rev = index;
                if !no_index {
                    let h = c.index_handle();
                    h.insert(index, fresh);
                    c.maybe_rebuild(index);
                }
                VectorResponse::Upserted { count }
            }
            VectorCommand::DeleteIds {
                collection,
                uid,
                ids,
            } => {
                let no_index = self.no_index;
                let c = match self.collection_for_write(&collection, uid) {
                    Ok(c) => c,
                    Err(e) => return VectorResponse::Rejected(e),
                };
                let (points, pi) = (&mut c.points, &mut c.payload_index);
                let removed: Vec<PointId> = ids
                    .into_iter()
                    .filter(|id| {
                        points
                            .remove(id)
                            .map(|old| pi.remove(id, &old.payload))
                            .is_some()
                    })
                    .collect();
                let count = removed.len();
                c.after_delete(index, no_index, removed);
                VectorResponse::Deleted { count }
            }
            VectorCommand::DeleteFilter {
                collection,
                uid,
                filter,
            } => {
                let parsed = match serde_json::from_str::<Value>(&filter)
                    .map_err(|e| e.to_string())
                    .and_then(|v| Filter::parse(&v))
                {
                    Ok(f) => f,
                    Err(e) => return VectorResponse::Rejected(VectorError::Invalid(e)),
                };
                let no_index = self.no_index;
                let c = match self.collection_for_write(&collection, uid) {
                    Ok(c) => c,
                    Err(e) => return VectorResponse::Rejected(e),
                };
                // (The persistent map has no `retain`.)
                let doomed: Vec<PointId> = c
                    .points
                    .iter()
                    .filter(|(_, p)| parsed.matches(&p.payload))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &doomed {
                    if let Some(old) = c.points.remove(id) {
                        c.payload_index.remove(id, &old.payload);
                    }
                }
                let count = doomed.len();
                c.after_delete(index, no_index, doomed);
                VectorResponse::Deleted { count }
            }
        }
    }

    fn collection_for_write(
        &mut self,
        name: &str,
        uid: u64,
    ) -> Result<&mut ShardCollection, VectorError> {
        let c = self.data.entry(name.to_string()).or_default();
        if c.uid > uid {
            return Err(VectorError::Stale(name.to_string()));
        }
        if c.uid < uid {
            // A newer incarnation of the name: the old points are gone.
            *c = ShardCollection {
                uid,
                ..Default::default()
            };
        }
        Ok(c)
    }
}
