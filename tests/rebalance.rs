//! Scale-out: nodes added to a loaded cluster take their share of replicas
//! and of leaders, while clients keep being served (retryable 503s only),
//! and nothing acknowledged is lost.

mod common;

use common::load::Load;
use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Replicas and preferred leaderships per node id, from `shards list`.
fn shares(c: &Cluster) -> (BTreeMap<u64, usize>, BTreeMap<u64, usize>) {
    let shards = c.ctl_json(0, &["shards", "list"]);
    let mut replicas = BTreeMap::new();
    let mut preferred = BTreeMap::new();
    for s in shards["shards"].as_array().expect("shards") {
        let r = s["replicas"].as_array().expect("replicas");
        for (k, n) in r.iter().enumerate() {
            let id = n.as_u64().expect("node id");
            *replicas.entry(id).or_default() += 1;
            if k == 0 {
                *preferred.entry(id).or_default() += 1;
            }
        }
    }
    (replicas, preferred)
}

/// Actual shard leaders per node, from `status` (every group's leader view).
fn leaders(c: &Cluster) -> BTreeMap<u64, usize> {
    let status = c.ctl_json(0, &["status"]);
    let mut out = BTreeMap::new();
    for g in status["groups"].as_array().into_iter().flatten() {
        if g["group"].as_u64() == Some(0) {
            continue;
        }
        if let Some(l) = g["leader"].as_u64() {
            *out.entry(l).or_default() += 1;
        }
    }
    out
}

async fn add_member(c: &mut Cluster) -> u64 {
    let i = c.add_node(&[]).await;
    let id = c.nodes[i].id;
    let (addr, peer) = (c.nodes[i].addr.clone(), c.nodes[i].peer_addr.clone());
    let id_s = id.to_string();
    c.ctl_ok(
        0,
        &[
            "members",
            "add",
            &id_s,
            "--addr",
            &addr,
            "--peer-addr",
            &peer,
            "--wait",
            "60",
        ],
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_nodes_take_their_share_under_load() {
    let mut c = Cluster::formed(3, 8, &[]).await;
    for i in 0..60 {
        c.put_ok(i % 3, &format!("before/{i}"), &format!("b{i}"))
            .await;
    }
    // Two writers through nodes 1-3, retrying 503s and connection errors
    // on the next node as the clients do; any other answer is a failure.
    let bases = c.nodes.iter().map(|n| n.url("")).collect();
    let load = Load::start(c.http.clone(), bases, 2);

    // Paused, a new node receives nothing.
    let paused = c.ctl_json(1, &["cluster", "rebalance", "--pause"]);
    assert_eq!(paused["paused"], true, "{paused}");
    let id4 = add_member(&mut c).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (replicas, _) = shares(&c);
    assert_eq!(
        replicas.get(&id4),
        None,
        "paused, yet node 4 holds {replicas:?}"
    );
    let state = c.ctl_json(2, &["cluster", "rebalance"]);
    assert_eq!(state["paused"], true, "{state}");
    assert_eq!(state["balanced"], false, "{state}");

    // Resumed, with a fifth node: within a few minutes every node holds
    // 4 or 5 of the 24 replicas, and no move is left under way.
    let id5 = add_member(&mut c).await;
    c.ctl_ok(2, &["cluster", "rebalance", "--resume"]);
    let start = Instant::now();
    let settled = wait_until(Duration::from_secs(240), || async {
        let (replicas, _) = shares(&c);
        let state = c.ctl_json(0, &["cluster", "rebalance"]);
        replicas.len() == 5
            && replicas.values().all(|n| (4..=5).contains(n))
            && state["moving"].as_array().is_some_and(|m| m.is_empty())
    })
    .await;
    let (replicas, preferred) = shares(&c);
    assert!(
        settled.is_ok(),
        "not balanced after 240 s: {replicas:?}\n{}",
        c.log_tails(20)
    );
    eprintln!(
        "balanced in {:.1} s: {replicas:?}",
        start.elapsed().as_secs_f64()
    );
    assert!(replicas[&id4] >= 4 && replicas[&id5] >= 4, "{replicas:?}");
    // `shards list` marks no shard as moving any more.
    let listed = c.ctl_json(1, &["shards", "list"]);
    assert!(
        listed["shards"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["moving"] == false)),
        "{listed}"
    );
    // Leaders spread too: no node is the preferred leader of more than
    // ceil(8 / 5) = 2 shards, and the actual leaders follow.
    assert!(
        preferred.values().all(|n| *n <= 2),
        "preferred leaders {preferred:?}"
    );
    let led = wait_until(Duration::from_secs(60), || async {
        let l = leaders(&c);
        l.values().sum::<usize>() == 8 && l.values().all(|n| *n <= 3) && l.len() >= 4
    })
    .await;
    assert!(led.is_ok(), "leaders never spread: {:?}", leaders(&c));

    // The placement leader counted its moves: at least the 9 replicas
    // nodes 4 and 5 received.
    let moves = c.counter_sum("orrery_rebalance_moves_total").await;
    assert!(moves >= 9.0, "moves counted: {moves}");

    // Under load the whole time: only retryable answers, nothing lost.
    let before = load.acked();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(load.acked() > before, "the load stalled");
    let (acked, failed, retries) = load.finish().await;
    assert!(failed.is_empty(), "failed writes: {failed:?}");
    eprintln!("{} writes acknowledged, {retries} retries", acked.len());
    assert!(acked.len() > 50, "too little load: {}", acked.len());
    for (k, v) in acked.iter().chain(
        (0..60)
            .map(|i| (format!("before/{i}"), format!("b{i}")))
            .collect::<Vec<_>>()
            .iter(),
    ) {
        let node = k.len() % c.nodes.len();
        let got = c.get(node, k, "linearizable").await;
        assert_eq!(got, (200, v.clone()), "{k} via node {}", node + 1);
    }
    // Every node serves reads of every shard it now holds, locally too.
    for i in 0..c.nodes.len() {
        c.wait_caught_up(i, Duration::from_secs(60)).await;
    }
}
