//! Bulk writes: items grouped by shard group, proposed in chunks of a
//! bounded size, one result per item in the request's order.

use super::{unexpected, JobsService};
use crate::api::ApiError;
use orrery_queue::{QueueCommand, QueueResponse};
use orrery_types::GroupId;
use std::collections::BTreeMap;

/// Bytes of payload per bulk log entry: large entries replicate slowly
/// (one AppendEntries must carry them within the heartbeat-sized timeout),
/// so a bulk request is split into entries of about this size.
pub(super) const BULK_ENTRY_BYTES: usize = 128 * 1024;

/// One result slot per item of a bulk request.
pub(super) type Slots<T> = Vec<Option<Result<T, ApiError>>>;

pub(super) fn check_batch(field: &str, n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad(
            &format!("invalid_{field}"),
            format!("{field} must hold at least one item"),
        ));
    }
    if n > orrery_queue::MAX_BATCH {
        return Err(ApiError::TooLarge(format!(
            "{n} {field} in one request; the limit is {}",
            orrery_queue::MAX_BATCH
        )));
    }
    Ok(())
}

/// Splits `items` into runs of at most [`BULK_ENTRY_BYTES`] (by `size`;
/// an item larger than that goes alone) and [`orrery_queue::MAX_BATCH`].
fn chunks<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut cur: Vec<T> = Vec::new();
    let mut bytes = 0usize;
    for it in items {
        let b = size(&it);
        if !cur.is_empty() && (bytes + b > BULK_ENTRY_BYTES || cur.len() >= orrery_queue::MAX_BATCH)
        {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += b;
        cur.push(it);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The per-item responses of one bulk write (`n` items), or its error for
/// every item.
pub(super) fn spread(
    n: usize,
    r: Result<QueueResponse, ApiError>,
) -> Vec<Result<QueueResponse, ApiError>> {
    match r {
        Ok(QueueResponse::Many(rs)) if rs.len() == n => rs.into_iter().map(Ok).collect(),
        Ok(QueueResponse::Many(rs)) => vec![
            Err(ApiError::Internal(format!(
                "{} responses for {n} items",
                rs.len()
            )));
            n
        ],
        Ok(other) => vec![Err(unexpected(other)); n],
        Err(e) => vec![Err(e); n],
    }
}

/// The results of a bulk request, one per item (an item no response
/// reached is an internal error, never silently dropped).
pub(super) fn filled<T>(out: Slots<T>) -> Vec<Result<T, ApiError>> {
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Err(ApiError::Internal("no response for this item".into()))))
        .collect()
}

/// An item's result from its response (`item` maps it; a rejection is its
/// error, anything else `item` hands back is unexpected).
pub(super) fn item_result<T>(
    r: QueueResponse,
    item: impl Fn(QueueResponse) -> Result<T, QueueResponse>,
) -> Result<T, ApiError> {
    match item(r) {
        Ok(t) => Ok(t),
        Err(QueueResponse::Rejected(e)) => Err(e.into()),
        Err(other) => Err(unexpected(other)),
    }
}

impl JobsService {
    /// Proposes the items of a bulk request: per shard group, its items in
    /// chunks ([`chunks`]) one after the other, so that they keep their
    /// order; the groups concurrently. `out[i]` gets item `i`'s result.
    pub(super) async fn bulk_write<I, T>(
        &self,
        by_group: BTreeMap<GroupId, Vec<(usize, I)>>,
        size: impl Fn(&(usize, I)) -> usize + Copy,
        cmd: impl Fn(GroupId, Vec<I>) -> QueueCommand + Copy,
        item: impl Fn(QueueResponse) -> Result<T, QueueResponse> + Copy,
        out: &mut [Option<Result<T, ApiError>>],
    ) {
        let writes = by_group.into_iter().map(|(group, items)| async move {
            let mut done = Vec::new();
            for chunk in chunks(items, size) {
                let (idx, items): (Vec<usize>, Vec<I>) = chunk.into_iter().unzip();
                let r = self.queue_write(group, cmd(group, items)).await;
                done.push((idx, r));
            }
            done
        });
        for (idx, r) in futures::future::join_all(writes)
            .await
            .into_iter()
            .flatten()
        {
            for (i, r) in spread(idx.len(), r).into_iter().enumerate() {
                out[idx[i]] = Some(r.and_then(|r| item_result(r, item)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_bounded_by_bytes_and_count() {
        let c = chunks(vec![100_000usize, 100_000, 10, 200_000, 1], |b| *b);
        assert_eq!(
            c,
            vec![vec![100_000], vec![100_000, 10], vec![200_000], vec![1]]
        );
        let many = chunks(vec![1usize; orrery_queue::MAX_BATCH + 1], |b| *b);
        assert_eq!(many.len(), 2);
        assert!(check_batch("jobs", 0).is_err());
        assert!(matches!(
            check_batch("jobs", orrery_queue::MAX_BATCH + 1),
            Err(ApiError::TooLarge(_))
        ));
    }
}
