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

    // Several endpoints (ORRERY_ENDPOINTS, or a list in --endpoint): the
    // first that answers serves; ORRERY_ENDPOINT, when set, wins.
    let dead = format!("127.0.0.1:{}", free_port());
    let live = c.nodes[1].addr.clone();
    let ctl_env = |vars: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(orreryctl_bin());
        cmd.env_remove("ORRERY_ENDPOINT")
            .env_remove("ORRERY_ENDPOINTS")
            .env("ORRERY_CA_CERT", c.ca_cert())
            .env("ORRERY_TOKEN", c.token());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.args(args).output().unwrap()
    };
    let list = format!("{dead},{live}");
    let out = ctl_env(&[("ORRERY_ENDPOINTS", &list)], &["kv", "get", "app/b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let out = ctl_env(&[], &["--endpoint", &list, "kv", "get", "app/b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl_env(
        &[("ORRERY_ENDPOINTS", &list), ("ORRERY_ENDPOINT", &dead)],
        &["kv", "get", "app/b"],
    );
    assert!(!out.status.success(), "ORRERY_ENDPOINT did not win");
    // Every endpoint dead: the error names them all.
    let dead2 = format!("127.0.0.1:{}", free_port());
    let out = ctl_env(
        &[("ORRERY_ENDPOINTS", &format!("{dead},{dead2}"))],
        &["status"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&dead) && err.contains(&dead2),
        "{err}"
    );

    // The Rust client: the same with Client::connect_any.
    let opts = orrery_client::Options {
        ca_cert: Some(c.ca_cert()),
        token: Some(c.token().to_string()),
    };
    let mut client = orrery_client::Client::connect_any(&[dead.clone(), live], &opts)
        .await
        .expect("connect_any skips the dead endpoint");
    assert_eq!(
        client.get("app/b").await.unwrap().map(|v| v.value),
        Some(b"2".to_vec())
    );
    assert!(orrery_client::Client::connect_any(&[dead, dead2], &opts)
        .await
        .is_err());
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
    // An outer request deadline shorter than the services' own wait would
    // cut their clearer answer short: refused (`timeout` ends the node if
    // it started anyway, so the test fails rather than hangs).
    let out = Command::new("timeout")
        .arg("20")
        .arg(orrery_bin())
        .args([
            "serve",
            "--id",
            "1",
            "--insecure",
            "--request-deadline-ms",
            "1000",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--request-deadline-ms (1000 ms) must be at least --request-timeout-ms"),
        "{err}"
    );
    let _: Option<Value> = None;
}

/// `orrery healthcheck` (the image's HEALTHCHECK): 1 while the node has no
/// cluster, 0 once it is ready, 1 with the wrong CA or a dead port; it
/// finds the port and the CA in ORRERY_LISTEN and ORRERY_CERTS_DIR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_reports_readiness_over_tls() {
    let c = Cluster::start(1, &[]).await;
    let check = |listen: &str, certs: &std::path::Path| {
        Command::new(orrery_bin())
            .arg("healthcheck")
            .env("ORRERY_LISTEN", listen)
            .env("ORRERY_CERTS_DIR", certs)
            .env_remove("ORRERY_INSECURE")
            .output()
            .unwrap()
    };
    let addr = c.nodes[0].addr.clone();
    let out = check(&addr, &c.certs_dir(1));
    assert!(!out.status.success(), "ready before init");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.form(1);
    let ready = wait_until(Duration::from_secs(20), || async {
        check(&addr, &c.certs_dir(1)).status.success()
    })
    .await;
    assert!(ready.is_ok(), "never healthy");
    let out = check(&addr, &c.certs_dir(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ready\""));
    // Another CA: the node's certificate is not trusted.
    let other = tempfile::tempdir().unwrap();
    orrery_tls::create_ca(other.path(), false).unwrap();
    let out = check(&addr, other.path());
    assert!(!out.status.success(), "trusted a node of another CA");
    let out = check(&format!("127.0.0.1:{}", free_port()), &c.certs_dir(1));
    assert!(!out.status.success(), "healthy on a dead port");
}
