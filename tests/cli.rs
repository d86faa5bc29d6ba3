//! `orreryctl` and `orrery serve` configuration, end to end.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orreryctl_commands() {
    let c = Cluster::formed(2, 3, &[]).await;
    // init is refused on an initialised node.
    let out = c.ctl(0, &["cluster", "init"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already initialised"));

    let members = c.ctl_json(1, &["members", "list"]);
    let ids: Vec<u64> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2]);
    assert!(members["placement_leader"].as_u64().is_some());

    let shards = c.ctl_json(0, &["shards", "list"]);
    assert_eq!(shards["shards"].as_array().unwrap().len(), 3);
    let text = c.ctl_ok(0, &["shards", "list"]);
    assert!(text.contains("SHARD") && text.contains("REPLICAS"));

    let status = c.wait_caught_up(1, Duration::from_secs(20)).await;
    assert_eq!(
        status["groups"].as_array().unwrap().len(),
        4,
        "placement + 3 shards"
    );
    let text = c.ctl_ok(0, &["status"]);
    assert!(
        text.contains("placement") && text.contains("shard-2"),
        "{text}"
    );

    assert!(c
        .ctl_ok(0, &["kv", "put", "app/a", "1"])
        .contains("revision"));
    c.ctl_ok(1, &["kv", "put", "app/b", "2"]);
    c.ctl_ok(1, &["kv", "put", "other", "3"]);
    assert_eq!(c.ctl_ok(1, &["kv", "get", "app/a"]).trim(), "1");
    assert_eq!(
        c.ctl_ok(0, &["kv", "get", "app/b", "--consistency", "stale"])
            .trim(),
        "2"
    );
    let list = c.ctl_json(0, &["kv", "list", "--prefix", "app/"]);
    let keys: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["app/a", "app/b"]);
    assert!(c.ctl_ok(0, &["kv", "del", "app/a"]).contains("deleted"));
    let out = c.ctl(0, &["kv", "get", "app/a"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // A dead endpoint gives a clear error, not a hang.
    let out = Command::new(orreryctl_bin())
        .args([
            "--endpoint",
            &format!("127.0.0.1:{}", free_port()),
            "status",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_config_file_and_env_with_flags_winning() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "id = 1\nlisten = \"127.0.0.1:{p1}\"\npeer_listen = \"127.0.0.1:{p2}\"\ndata_dir = \"{}\"\nmax_key_bytes = 10\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // The flag overrides the file's listen address; the env var sets the key limit.
    let mut child = Command::new(orrery_bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        // The one integration test of a plain node: no TLS, no tokens.
        .args(["--insecure", "--listen", &format!("127.0.0.1:{p3}")])
        .env("ORRERY_MAX_KEY_BYTES", "20")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{p3}");
    let up = wait_until(Duration::from_secs(20), || async {
        http.get(format!("{url}/healthz"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    })
    .await;
    let ok = up.is_ok();
    let init = Command::new(orreryctl_bin())
        .args(["--endpoint", &format!("127.0.0.1:{p3}"), "cluster", "init"])
        .output()
        .unwrap();
    let r15 = http
        .put(format!("{url}/v1/kv/{}", "k".repeat(15)))
        .body("v")
        .send()
        .await
        .map(|r| r.status().as_u16());
    let r25 = http
        .put(format!("{url}/v1/kv/{}", "k".repeat(25)))
        .body("v")
        .send()
        .await
        .map(|r| r.status().as_u16());
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "node did not listen on the --listen flag's port");
    assert!(init.status.success());
    assert_eq!(
        r15.unwrap(),
        200,
        "env var should raise the file's key limit"
    );
    assert_eq!(r25.unwrap(), 413);

    // Unknown config keys and missing ids are clear errors.
    std::fs::write(&cfg, "id = 1\nlisten_adress = \"x\"\n").unwrap();
    let out = Command::new(orrery_bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
    let out = Command::new(orrery_bin()).args(["serve"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--id is required"));
    // Secure by default: no certificates and no --insecure, no node.
    let out = Command::new(orrery_bin())
        .args(["serve", "--id", "1"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--certs-dir") && err.contains("--insecure"),
        "{err}"
    );
    // A --gpus value that names no GPU is refused before the node starts.
    let out = Command::new(orrery_bin())
        .args(["serve", "--id", "1", "--gpus", "0,gpu0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'gpu0' is neither a GPU index") && err.contains("nvidia-smi -L"),
        "{err}"
    );
    let _: Option<Value> = None;
}
