//! The cluster endpoints the web console uses (docs/console.md): who the
//! caller is, every group's replication status, and membership changes
//! over REST, sent to any node (forwarded to the placement leader).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_tells_each_caller_its_identity_role_and_queues() {
    let c = Cluster::formed(1, 2, &[]).await;
    let v = c.json_ok(0, "GET", "/v1/auth/whoami", None, 200).await;
    assert_eq!(
        (&v["identity"], &v["role"], &v["queues"], &v["insecure"]),
        (&json!("root"), &json!("admin"), &Value::Null, &json!(false)),
        "{v}"
    );
    for (name, role, queues) in [
        ("w-1", "worker", json!(["q1", "q2"])),
        ("r-1", "reader", Value::Null),
    ] {
        let mut body = json!({"name": name, "role": role});
        if !queues.is_null() {
            body["queues"] = queues.clone();
        }
        let t = c
            .json_ok(0, "POST", "/v1/auth/tokens", Some(body), 201)
            .await;
        let http = http_client(&c.ca_cert(), t["token"].as_str());
        let resp = http
            .get(c.nodes[0].url("/v1/auth/whoami"))
            .send()
            .await
            .expect("whoami");
        assert_eq!(resp.status(), 200, "{role}");
        let v: Value = resp.json().await.expect("JSON");
        assert_eq!(v["identity"], name);
        assert_eq!(v["role"], role);
        assert_eq!(v["queues"], queues);
    }
    let anonymous = http_client(&c.ca_cert(), None);
    let resp = anonymous
        .get(c.nodes[0].url("/v1/auth/whoami"))
        .send()
        .await
        .expect("whoami");
    assert_eq!(resp.status(), 401);
}

/// The placement group's replicas as `GET /v1/cluster/status` on node `i`
/// reports them: (node id, voter).
async fn placement_replicas(c: &Cluster, i: usize) -> Vec<(u64, bool)> {
    let v = c.json_ok(i, "GET", "/v1/cluster/status", None, 200).await;
    let groups = v["groups"].as_array().expect("groups");
    let p = groups
        .iter()
        .find(|g| g["name"] == "placement")
        .expect("placement group");
    p["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| (r["node_id"].as_u64().expect("id"), r["voter"] == true))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_membership_changes_over_rest_on_any_node() {
    let mut c = Cluster::formed(3, 2, &[]).await;
    // Every group with its leader, term, indexes and each replica's lag.
    let v = c.json_ok(1, "GET", "/v1/cluster/status", None, 200).await;
    let groups = v["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 3, "placement and 2 shards: {v}");
    for g in groups {
        assert!(g["leader"].as_u64().is_some(), "{g}");
        assert!(g["term"].as_u64() >= Some(1), "{g}");
        assert!(g["commit_index"].as_u64() >= Some(1), "{g}");
        assert_eq!(g["replicas"].as_array().map(Vec::len), Some(3), "{g}");
    }
    assert_eq!(v["unreachable"], json!([]));

    // Refused before anything changes.
    for (body, code) in [
        (
            json!({"id": 0, "addr": "127.0.0.1:1", "peer_addr": "127.0.0.1:2"}),
            "invalid_id",
        ),
        (
            json!({"id": 9, "addr": "nowhere", "peer_addr": "127.0.0.1:2"}),
            "invalid_addr",
        ),
        (
            json!({"id": 9, "addr": "127.0.0.1:1", "peer_addr": ":x"}),
            "invalid_peer_addr",
        ),
        (json!({"id": 9, "addr": "127.0.0.1:1"}), "missing_field"),
    ] {
        let (s, v) = c
            .json_req(0, "POST", "/v1/cluster/members", Some(body))
            .await;
        assert_eq!((s, v["error"]["code"].as_str()), (400, Some(code)), "{v}");
    }
    let (s, v) = c.json_req(0, "DELETE", "/v1/cluster/members/x", None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_id")));
    let (s, v) = c
        .json_req(0, "DELETE", "/v1/cluster/members/99", None)
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );

    // A fourth node, added as a learner through node 2.
    let i = c.add_node(&[]).await;
    let (id, addr, peer) = (
        c.nodes[i].id,
        c.nodes[i].addr.clone(),
        c.nodes[i].peer_addr.clone(),
    );
    let body = json!({"id": id, "addr": addr, "peer_addr": peer, "learner_only": true});
    let v = c
        .json_ok(1, "POST", "/v1/cluster/members", Some(body), 201)
        .await;
    assert_eq!(v["member"]["state"], "learner", "{v}");
    assert_eq!(v["member"]["addr"], json!(addr));
    assert!(!v["progress"].as_array().expect("progress").is_empty());
    let seen = wait_until(Duration::from_secs(20), || async {
        placement_replicas(&c, 0).await.contains(&(id, false))
    })
    .await;
    assert!(seen.is_ok(), "node {id} not a placement learner");

    // Promoted through node 3.
    let v = c
        .json_ok(
            2,
            "POST",
            &format!("/v1/cluster/members/{id}/promote"),
            None,
            200,
        )
        .await;
    assert_eq!(v["member"]["state"], "voter", "{v}");

    // Removed through node 1 (its replicas move away first: a longer wait).
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(c.ca_cert()).expect("ca")).expect("ca"),
        )
        .build()
        .expect("client");
    let resp = http
        .delete(c.nodes[0].url(&format!("/v1/cluster/members/{id}")))
        .bearer_auth(c.token())
        .send()
        .await
        .expect("remove");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("JSON");
    assert_eq!(v["member"], Value::Null, "{v}");
    let v = c.json_ok(0, "GET", "/v1/cluster", None, 200).await;
    let ids: Vec<u64> = v["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![1, 2, 3], "{v}");
}
