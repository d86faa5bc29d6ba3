//! A write to a group commits and applies while a vector search of the
//! same group is in progress: a real single-node Raft group (the
//! registry's own storage, log and state machine), the node's own read
//! path (`route::run_query_paused`), and a search held in progress by its
//! hook until the writes are applied. Deterministic: channels, not timing
//! (the timeouts only turn a deadlock into a failure).

use crate::node::ops::{Query, QueryResult};
use crate::node::route::run_query_paused;
use orrery_kv::KvCommand;
use orrery_raft::{Command, Group, PeerClients, RaftSettings, Registry, Response};
use orrery_storage::NodeStorage;
use orrery_types::{shard_group, NodeAddr};
use orrery_vector::{
    Metric, Point, PointId, SearchRequest, Vector, VectorCommand, VectorResponse, EXACT_BELOW,
};
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

async fn write(g: &Group, cmd: Command) -> Response {
    timeout(WAIT, g.raft.client_write(cmd))
        .await
        .expect("the write was not applied while the search was in progress")
        .expect("write")
        .data
}

fn upsert(points: Vec<Point>) -> Command {
    Command::Vector(VectorCommand::Upsert {
        collection: "c".into(),
        uid: 1,
        metric: Metric::L2,
        m: 16,
        ef_construction: 64,
        points,
    })
}

fn point(id: u64, v: Vec<f32>) -> Point {
    Point {
        id: PointId::Num(id),
        vector: Vector(v),
        payload: Default::default(),
    }
}

fn ids(r: QueryResult) -> Vec<PointId> {
    match r {
        QueryResult::VectorSearch(Ok(hits)) => hits.into_iter().map(|h| h.id).collect(),
        other => panic!("not a search answer: {other:?}"),
    }
}

// Four workers: should the search hold the lock (the old design), one is
// blocked in the search and one in apply, and the others must still drive
// the timer for the write's timeout to fail the test rather than hang it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_goes_on_while_a_search_runs_and_the_search_keeps_its_moment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = NodeStorage::open(dir.path()).expect("storage");
    let registry = Registry::new(1, storage, PeerClients::new(None), &RaftSettings::default())
        .expect("registry");
    let g = registry.ensure(shard_group(0)).await.expect("group");
    let addr = NodeAddr {
        addr: "127.0.0.1:1".into(),
        peer_addr: "127.0.0.1:1".into(),
    };
    g.raft
        .initialize(BTreeMap::from([(1, addr)]))
        .await
        .expect("initialize");
    g.raft
        .wait(Some(WAIT))
        .current_leader(1, "leader")
        .await
        .expect("leader");

    // Enough points that an exact search counts as a scan (a blocking
    // thread), on a line: the nearest to the query 0 is point 0.
    let n = EXACT_BELOW as u64 + 100;
    let pts = (0..n)
        .map(|i| point(i, vec![1.0 + i as f32, 0.0]))
        .collect();
    let r = write(&g, upsert(pts)).await;
    assert_eq!(
        r,
        Response::Vector(VectorResponse::Upserted { count: n as usize })
    );

    let q = Query::VectorSearch(Box::new(SearchRequest {
        collection: "c".into(),
        uid: 1,
        metric: Metric::L2,
        vector: vec![0.0, 0.0],
        k: 3,
        ef: 16,
        exact: true,
        filter: None,
        with_payload: false,
        with_vector: false,
    }));
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let pause = move || {
        let _ = entered_tx.send(());
        // Until released, or until the test gave up (the sender dropped).
        let _ = release_rx.recv();
    };
    let search = {
        let (g, q) = (Arc::clone(&g), q.clone());
        tokio::spawn(async move { run_query_paused(&g, &q, pause).await })
    };
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(WAIT))
        .await
        .expect("join")
        .expect("the search never started");

    // The search is in progress. Writes to its group, of two domains,
    // apply meanwhile; one puts a point nearer the query than any other.
    let r = write(&g, upsert(vec![point(9_999, vec![0.0, 0.0])])).await;
    assert_eq!(r, Response::Vector(VectorResponse::Upserted { count: 1 }));
    let put = Command::Kv(KvCommand::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    });
    assert!(matches!(write(&g, put).await, Response::Kv(_)));
    assert!(g.sm.read(|s| s.kv.get(b"k").is_some()));

    // Released, the search answers as of its view: without the new point.
    release_tx.send(()).expect("the search is waiting");
    let hits = ids(timeout(WAIT, search)
        .await
        .expect("search")
        .expect("join")
        .expect("search"));
    assert_eq!(hits, [0, 1, 2].map(PointId::Num));
    // A search taken now sees it.
    let now = ids(run_query_paused(&g, &q, || {}).await.expect("search"));
    assert_eq!(now, [9_999, 0, 1].map(PointId::Num));
    registry.shutdown().await;
}
