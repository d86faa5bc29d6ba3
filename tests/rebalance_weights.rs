//! Rebalancing by declared capacity (`--capacity`, cluster version 9) and
//! under throttles set cluster-wide (`PUT /v1/cluster/rebalance`,
//! `orreryctl cluster rebalance --max-moves --max-per-node`).

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts a node with `extra` flags and adds it as a voter.
async fn add_member(c: &mut Cluster, extra: &[&str]) -> u64 {
    let i = c.add_node(extra).await;
    let id = c.nodes[i].id;
    let (addr, peer) = (c.nodes[i].addr.clone(), c.nodes[i].peer_addr.clone());
    let id_s = id.to_string();
    let args = [
        "members",
        "add",
        &id_s,
        "--addr",
        &addr,
        "--peer-addr",
        &peer,
        "--wait",
        "60",
    ];
    c.ctl_ok(0, &args);
    id
}

async fn put_rebalance(c: &Cluster, body: serde_json::Value) -> (u16, serde_json::Value) {
    c.json_req(0, "PUT", "/v1/cluster/rebalance", Some(body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_weights_shares_and_set_limits_bound_moves() {
    // Out-of-range node flags are refused at start.
    for bad in [["--capacity", "0"], ["--drop-grace-s", "1"]] {
        // (`timeout`: a node that accepted the flag would keep running.)
        let out = Command::new("timeout")
            .arg("20")
            .arg(orrery_bin())
            .args(["serve", "--id", "1", "--insecure"])
            .args(bad)
            .output()
            .expect("run orrery");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(err.contains(bad[0]), "{bad:?}: {err}");
    }

    let mut c = Cluster::formed(3, 8, &["--drop-grace-s", "5"]).await;
    c.wait_version(9).await;
    for i in 0..40 {
        c.put_ok(i % 3, &format!("w/{i}"), &format!("v{i}")).await;
    }

    // Limits: validated with clear 400s, then set and shown.
    for (body, code) in [
        (json!({"max_moves": 0}), "invalid_setting"),
        (json!({"max_per_node": 65}), "invalid_setting"),
        (json!({"max_moves": -1}), "invalid_field"),
        (json!({}), "invalid_body"),
    ] {
        let (status, err) = put_rebalance(&c, body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["code"], code, "{body}: {err}");
    }
    let before = c
        .json_ok(0, "GET", "/v1/cluster/rebalance", None, 200)
        .await;
    assert_eq!(before["limits_set"], false, "{before}");
    assert_eq!(before["max_moves"], 2, "the flags' default: {before}");
    let set = c.ctl_json(
        1,
        &[
            "cluster",
            "rebalance",
            "--max-moves",
            "1",
            "--max-per-node",
            "1",
        ],
    );
    assert_eq!(set["max_moves"], 1, "{set}");
    assert_eq!(set["max_per_node"], 1, "{set}");
    assert_eq!(set["limits_set"], true, "{set}");
    assert_eq!(set["paused"], false, "limits alone leave the switch: {set}");

    // Nodes 4 (capacity 1) and 5 (capacity 2) join: total capacity 6, so
    // node 5's share of the 24 replicas is 8 and everyone else's 4.
    let id4 = add_member(&mut c, &[]).await;
    let id5 = add_member(&mut c, &["--capacity", "2"]).await;
    let members = c.ctl_json(2, &["members", "list"]);
    let caps: BTreeMap<u64, u64> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap_or(0),
                m["capacity"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let declared = wait_until(Duration::from_secs(20), || async {
        let v = c.json_ok(2, "GET", "/v1/cluster", None, 200).await;
        v["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"] == id5 && m["capacity"] == 2))
    })
    .await;
    assert!(
        declared.is_ok(),
        "node 5's capacity never recorded: {caps:?}"
    );

    // Until balanced, never more than one shard moving at once.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut most = 0;
    let mut looks = 0;
    loop {
        let r = c
            .json_ok(0, "GET", "/v1/cluster/rebalance", None, 200)
            .await;
        let moving = r["moving"].as_array().map_or(0, |m| m.len());
        assert!(moving <= 1, "limit 1, yet moving {r}");
        most = most.max(moving);
        looks += 1;
        if r["balanced"] == true && moving == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not balanced after 240 s: {r}, {:?}\n{}",
            shares(&c),
            c.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(most, 1, "no move seen in {looks} looks");

    let (replicas, preferred) = shares(&c);
    assert_eq!(replicas.get(&id5), Some(&8), "{replicas:?}");
    for id in [1, 2, 3, id4] {
        assert_eq!(replicas.get(&id), Some(&4), "node {id}: {replicas:?}");
    }
    // Leaders: shares 8 x 2 / 6 = 2.67 for node 5, 1.33 for the others.
    let led5 = preferred.get(&id5).copied().unwrap_or(0);
    assert!((2..=3).contains(&led5), "{preferred:?}");

    // The limits were replicated: another node shows them, and so does
    // orreryctl's summary.
    let r = c
        .json_ok(4, "GET", "/v1/cluster/rebalance", None, 200)
        .await;
    assert_eq!(
        (r["max_moves"].clone(), r["limits_set"].clone()),
        (json!(1), json!(true)),
        "{r}"
    );
    for i in 0..40 {
        let got = c.get(i % 5, &format!("w/{i}"), "linearizable").await;
        assert_eq!(got, (200, format!("v{i}")), "w/{i}");
    }
}
