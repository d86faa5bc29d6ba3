//! `--initial-members`: nodes started together form one cluster with no
//! manual step, in any start order, and a node restarted on an empty data
//! directory never creates a second cluster.

mod common;

use common::{wait_until, Cluster};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Three planned (not started) nodes, each told the whole list.
async fn planned() -> Cluster {
    let mut c = Cluster::start(0, &[]).await;
    for _ in 0..3 {
        c.plan_node(&["--initial-shards", "4"], None, &[]);
    }
    let spec: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("{}@{}/{}", n.id, n.addr, n.peer_addr))
        .collect();
    c.env
        .push(("ORRERY_INITIAL_MEMBERS".into(), spec.join(",")));
    c
}

fn token_file(c: &Cluster) -> PathBuf {
    c.nodes[0].data_dir.join("root.token")
}

/// Waits for the root token file, and uses the token from then on.
async fn take_token(c: &Cluster) {
    let f = token_file(c);
    wait_until(Duration::from_secs(60), || async { f.exists() })
        .await
        .unwrap_or_else(|_| panic!("no root token file; logs:\n{}", c.log_tails(30)));
    let t = std::fs::read_to_string(&f).expect("read the token");
    c.set_root_token(t.trim());
}

/// Node `i`'s view of the cluster, once it has one.
async fn view(c: &Cluster, i: usize) -> Option<Value> {
    let r = c
        .http
        .get(c.nodes[i].url("/v1/cluster"))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// Every node sees three voters and a leader for every shard.
async fn wait_formed(c: &Cluster) -> String {
    let mut id = String::new();
    for i in 0..3 {
        wait_until(Duration::from_secs(90), || async {
            let Some(v) = view(c, i).await else {
                return false;
            };
            let voters = v["members"]
                .as_array()
                .map(|m| m.iter().filter(|m| m["state"] == "voter").count())
                .unwrap_or(0);
            let led = v["shards"]
                .as_array()
                .is_some_and(|s| s.len() == 4 && s.iter().all(|s| !s["leader"].is_null()));
            voters == 3 && led
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "node {} never saw the formed cluster; logs:\n{}",
                i + 1,
                c.log_tails(40)
            )
        });
        let v = view(c, i).await.expect("the cluster view");
        let this = v["cluster_id"].as_str().unwrap_or_default().to_string();
        assert!(
            id.is_empty() || id == this,
            "nodes disagree on the cluster id"
        );
        id = this;
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_form_a_cluster_by_themselves_in_any_order() {
    let mut c = planned().await;
    // The bootstrapper first, alone: it must wait for the others.
    c.spawn(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !token_file(&c).exists(),
        "node 1 created a cluster while its peers were down"
    );
    c.spawn(2);
    c.spawn(1);
    take_token(&c).await;
    let id = wait_formed(&c).await;
    assert!(!id.is_empty());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(token_file(&c))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the root token file is readable by others"
    );
    // The token works on any node, and a write through node 3 reads back
    // from node 2.
    c.put_ok(2, "formed", "yes").await;
    assert_eq!(
        c.get(1, "formed", "linearizable").await,
        (200, "yes".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_bootstrapper_never_makes_a_second_cluster() {
    let mut c = planned().await;
    for i in [0, 1, 2] {
        c.spawn(i);
    }
    take_token(&c).await;
    let id = wait_formed(&c).await;
    c.put_ok(0, "before", "wipe").await;
    for i in 0..3 {
        c.terminate(i);
    }
    // Node 1 loses its volume and comes back alone: its peers are down,
    // so it must not create a cluster (it would, without the check).
    std::fs::remove_dir_all(&c.nodes[0].data_dir).expect("wipe n1");
    c.spawn(0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !token_file(&c).exists(),
        "node 1 created a second cluster; log:\n{}",
        c.log(0)
    );
    // The others come back; node 1 is still a member at the same
    // addresses, so the leader brings it back into the same cluster.
    c.spawn(1);
    c.spawn(2);
    assert_eq!(wait_formed(&c).await, id, "a second cluster was created");
    assert!(!token_file(&c).exists(), "node 1 bootstrapped again");
    wait_until(Duration::from_secs(60), || async {
        c.get(0, "before", "linearizable").await == (200, "wipe".into())
    })
    .await
    .expect("node 1 serves the cluster's data again");
}

#[test]
fn a_list_that_does_not_match_this_node_stops_it_at_start() {
    let d = tempfile::tempdir().expect("tempdir");
    for (list, why) in [
        ("2@127.0.0.1", "does not list this node"),
        ("1@otherhost", "but it advertises"),
        ("1@127.0.0.1:1", "give both addresses"),
    ] {
        let out = std::process::Command::new(common::orrery_bin())
            .args([
                "serve",
                "--id",
                "1",
                "--insecure",
                "--initial-members",
                list,
            ])
            .arg("--data-dir")
            .arg(d.path())
            .output()
            .expect("run orrery");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{list}: started");
        assert!(err.contains(why), "{list}: {err}");
    }
}
