//! Scale-out: nodes added to a loaded cluster take their share of replicas
//! and of leaders, while clients keep being served (retryable 503s only),
//! and nothing acknowledged is lost.

mod common;

use common::load::Load;
use common::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

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

/// The shard groups node `i` runs, from its own `/metrics` (one
/// `orrery_raft_term` line per group it hosts).
async fn hosted(c: &Cluster, i: usize) -> BTreeSet<u64> {
    let text = c
        .http
        .get(c.nodes[i].url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter_map(|l| l.strip_prefix("orrery_raft_term{group=\"shard-"))
        .filter_map(|l| l.split('"').next()?.parse().ok())
        .collect()
}

/// The shards the shard map gives node `id`.
fn shards_of(c: &Cluster, id: u64) -> BTreeSet<u64> {
    let shards = c.ctl_json(0, &["shards", "list"]);
    shards["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .filter(|s| {
            s["replicas"]
                .as_array()
                .is_some_and(|r| r.contains(&id.into()))
        })
        .filter_map(|s| s["id"].as_u64())
        .collect()
}

/// A node's counter, from its `/metrics`.
async fn counter(c: &Cluster, i: usize, name: &str) -> f64 {
    let text = c
        .http
        .get(c.nodes[i].url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("node {} has no {name}", i + 1))
}

/// Waits until every running node among `nodes` hosts exactly the shard
/// groups the map gives it.
async fn wait_hosting_follows_map(c: &Cluster, nodes: &[usize], within: Duration) {
    let ok = wait_until(within, || async {
        for &i in nodes {
            if hosted(c, i).await != shards_of(c, c.nodes[i].id) {
                return false;
            }
        }
        true
    })
    .await;
    if ok.is_err() {
        let mut why = String::new();
        for &i in nodes {
            why += &format!(
                "node {}: hosts {:?}, listed for {:?}\n",
                c.nodes[i].id,
                hosted(c, i).await,
                shards_of(c, c.nodes[i].id)
            );
        }
        panic!(
            "groups left behind after {within:?}:\n{why}{}",
            c.log_tails(20)
        );
    }
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
    // Small snapshots, no log kept below them: a replica that comes back
    // to a node is sent a snapshot.
    let mut c = Cluster::formed(3, 8, &["--snapshot-logs", "40", "--keep-logs", "0"]).await;
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
    // The same over REST.
    let state = c
        .json_ok(1, "GET", "/v1/cluster/rebalance", None, 200)
        .await;
    assert_eq!(state["paused"], true, "{state}");
    assert_eq!(state["balanced"], false, "{state}");
    let (status, err) = c
        .json_req(
            0,
            "PUT",
            "/v1/cluster/rebalance",
            Some(json!({"paused": "no"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "invalid_field", "{err}");
    let (status, err) = c
        .json_req(
            0,
            "PUT",
            "/v1/cluster/rebalance",
            Some(json!({"pause": false})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "unknown_field", "{err}");

    // Resumed (over REST), with a fifth node: within a few minutes every
    // node holds 4 or 5 of the 24 replicas, and no move is left under way.
    let id5 = add_member(&mut c).await;
    let state = c
        .json_ok(
            2,
            "PUT",
            "/v1/cluster/rebalance",
            Some(json!({"paused": false})),
            200,
        )
        .await;
    assert_eq!(state["paused"], false, "{state}");
    let state = c.ctl_json(0, &["cluster", "rebalance"]);
    assert_eq!(state["paused"], false, "{state}");
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

    // The nodes that gave up replicas drop those groups (Raft stopped,
    // data deleted); each node hosts exactly what the map gives it.
    let all: Vec<usize> = (0..c.nodes.len()).collect();
    wait_hosting_follows_map(&c, &all, Duration::from_secs(90)).await;
    let dropped = c.counter_sum("orrery_groups_dropped_total").await;
    assert!(dropped >= 9.0, "groups dropped: {dropped}");
    // On disk too: node 3's storage holds the placement group and its
    // listed shards only. A stopped node's directory is opened here, then
    // the node is started again (and must not bring a dropped group back
    // from a stale copy of the map).
    let kept = shards_of(&c, 3);
    assert_eq!(c.terminate(2).code(), Some(0));
    let dir = c.nodes[2].data_dir.clone();
    let stored = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let s = orrery_storage::NodeStorage::open(&dir).expect("open node 3's storage");
            s.stored_groups()
        })
    })
    .join()
    .expect("storage thread");
    let want: Vec<u64> = std::iter::once(0)
        .chain(kept.iter().map(|s| s + 1))
        .collect();
    assert_eq!(stored, want, "node 3's stored groups (shards {kept:?})");
    // sled's flusher lets go of the directory's lock within a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.restart(2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_hosting_follows_map(&c, &all, Duration::from_secs(60)).await;

    // Nodes 4 and 5 leave again: every shard comes back to nodes 1-3,
    // which dropped some of them, as learners caught up by snapshot.
    let snapshots_before: f64 = {
        let mut n = 0.0;
        for i in 0..3 {
            n += counter(&c, i, "orrery_peer_install_snapshot_rpcs_total").await;
        }
        n
    };
    let mut bytes_before = 0.0;
    for i in 0..3 {
        bytes_before += counter(&c, i, "orrery_peer_install_snapshot_bytes_total").await;
    }
    for id in [id4, id5] {
        // Under load on a small machine a drain can outlast the command's
        // 60 s; it goes on in the background, and running it again
        // finishes it.
        let mut tries = 0;
        loop {
            let out = c.ctl(0, &["members", "remove", &id.to_string()]);
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                assert!(text.contains("removed"), "{text}");
                break;
            }
            tries += 1;
            assert!(
                tries < 4 && text.contains("run the removal again"),
                "removing node {id}: {text}"
            );
        }
    }
    let back = wait_until(Duration::from_secs(120), || async {
        (1..=3).all(|id| shards_of(&c, id).len() == 8)
    })
    .await;
    assert!(back.is_ok(), "shards not back on nodes 1-3");
    wait_hosting_follows_map(&c, &[0, 1, 2], Duration::from_secs(120)).await;
    for i in 0..3 {
        c.wait_caught_up(i, Duration::from_secs(120)).await;
    }
    let mut snapshots_after = 0.0;
    for i in 0..3 {
        snapshots_after += counter(&c, i, "orrery_peer_install_snapshot_rpcs_total").await;
    }
    assert!(
        snapshots_after > snapshots_before,
        "no snapshot sent to the nodes that got their replicas back"
    );
    let mut bytes_after = 0.0;
    for i in 0..3 {
        bytes_after += counter(&c, i, "orrery_peer_install_snapshot_bytes_total").await;
    }
    assert!(
        bytes_after > bytes_before,
        "snapshot bytes received not counted ({bytes_before} -> {bytes_after})"
    );

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
        let node = k.len() % 3;
        let got = c.get(node, k, "linearizable").await;
        assert_eq!(got, (200, v.clone()), "{k} via node {}", node + 1);
        // Each of nodes 1-3 holds every shard again: a local read there
        // sees the write too, once caught up.
        for i in 0..3 {
            let seen = wait_until(Duration::from_secs(20), || async {
                c.get(i, k, "stale").await == (200, v.clone())
            })
            .await;
            assert!(seen.is_ok(), "{k} not on node {}", i + 1);
        }
    }
}

/// Sends `sig` (`STOP`, `CONT`) to node `i`'s process.
fn signal(c: &Cluster, i: usize, sig: &str) {
    let pid = c.nodes[i].pid().expect("node running").to_string();
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A node the shard map has dropped from every shard (it is being
/// drained) while the membership changes cannot commit (node 2 is frozen,
/// and each shrunk group {1,2} needs it) is still a voter of every group:
/// it must keep them all however long the map leaves it out. Once the
/// drain completes, it drops them; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_still_votes_is_never_dropped() {
    // Why each group is kept or dropped, in the logs a failure prints.
    let log = "info,openraft=warn,orrery_server::node::group_gc=debug";
    let c = Cluster::start_with_env(3, &[], &[("RUST_LOG", log)]).await;
    c.form(8);
    for i in 0..40 {
        c.put_ok(i % 3, &format!("k{i}"), &format!("v{i}")).await;
    }
    c.wait_caught_up(0, Duration::from_secs(60)).await;
    signal(&c, 1, "STOP");
    // The drain cannot finish while node 2 is frozen: run it aside.
    let ctl = orreryctl_bin();
    let mut drain = std::process::Command::new(&ctl);
    drain
        .args(["--endpoint", &c.nodes[0].addr, "members", "remove", "3"])
        .env("ORRERY_CA_CERT", c.ca_cert())
        .env("ORRERY_TOKEN", c.token())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut drain = drain.spawn().expect("orreryctl members remove 3");
    let left = wait_until(Duration::from_secs(30), || async {
        let v = c.json_ok(0, "GET", "/v1/cluster", None, 200).await;
        v["shards"].as_array().is_some_and(|s| {
            s.iter().all(|s| {
                s["replicas"]
                    .as_array()
                    .is_some_and(|r| !r.contains(&3.into()))
            })
        })
    })
    .await;
    assert!(
        left.is_ok(),
        "the map still lists node 3\n{}",
        c.log_tails(20)
    );
    // Well past the grace period (10 s), node 3 still hosts every shard
    // group and dropped none. (It may stop and reopen a group to check the
    // membership; a dropped one would not come back.)
    tokio::time::sleep(Duration::from_secs(25)).await;
    let kept = wait_until(Duration::from_secs(5), || async {
        hosted(&c, 2).await.len() == 8
    })
    .await;
    assert!(
        kept.is_ok(),
        "node 3 dropped groups it still votes in: hosts {:?}\n{}",
        hosted(&c, 2).await,
        c.log_tails(30)
    );
    assert_eq!(counter(&c, 2, "orrery_groups_dropped_total").await, 0.0);
    // Thawed, the drain finishes and node 3 drops every shard group.
    signal(&c, 1, "CONT");
    let start = Instant::now();
    while !matches!(drain.try_wait(), Ok(Some(_))) {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = drain.kill();
            panic!("the drain never finished\n{}", c.log_tails(20));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dropped = wait_until(Duration::from_secs(60), || async {
        hosted(&c, 2).await.is_empty() && counter(&c, 2, "orrery_groups_dropped_total").await == 8.0
    })
    .await;
    assert!(
        dropped.is_ok(),
        "node 3 still hosts {:?} after the drain\n{}",
        hosted(&c, 2).await,
        c.log_tails(20)
    );
    for i in 0..40 {
        assert_eq!(
            c.get(i % 2, &format!("k{i}"), "linearizable").await,
            (200, format!("v{i}")),
            "k{i}"
        );
    }
}
