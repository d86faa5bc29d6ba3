//! `command` jobs: a cleared environment with the documented allowlist, a
//! per-run scratch directory removed afterwards, and no root children.
//! Real child processes; the identity tests check the branch that applies
//! (root or not) and say which.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use serde_json::json;

use crate::kinds::command_env::{lookup_user, safe_name, RunAs};
use crate::tests::{config, engine, is_root, log_text, shared_tempdir, WAIT};
use crate::{validate_params, ExecConfig};

const CANARY: &str = "ORRERY_EXEC_TEST_CANARY";

/// Puts a variable into this (the node's) process environment: a child must
/// not see it.
fn plant_canary() {
    static ONCE: Once = Once::new();
    // Rust's env functions take a lock; children read the environment at
    // spawn, under the same lock.
    ONCE.call_once(|| std::env::set_var(CANARY, "leaked"));
}

/// The `KEY=value` lines a run printed (not the engine's own lines).
fn env_lines(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .filter(|l| !l.starts_with("[orrery]"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Output lines of a run, without the engine's own.
fn out_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| !l.starts_with("[orrery]"))
        .map(str::to_string)
        .collect()
}

fn with_scratch(dir: &Path) -> ExecConfig {
    ExecConfig {
        scratch_root: Some(dir.to_path_buf()),
        ..config(None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_sees_only_the_allowlisted_environment() {
    plant_canary();
    assert_eq!(std::env::var(CANARY).as_deref(), Ok("leaked"));
    let scratch = shared_tempdir();
    let (src, e) = engine(with_scratch(scratch.path()));
    let id = src.submit(
        "command",
        json!({"argv": ["env"], "env": {"SEED": "1", "LANG": "en_US.UTF-8"}}),
    );
    src.outcome(&id, WAIT).await.ok();
    let env = env_lines(&log_text(&e, &id));
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "CUDA_VISIBLE_DEVICES",
            "HOME",
            "LANG",
            "ORRERY_ATTEMPT",
            "ORRERY_JOB_ID",
            "PATH",
            "SEED",
            "TMPDIR"
        ],
        "{env:?}"
    );
    assert!(!env.contains_key(CANARY));
    let dir = scratch.path().join(format!("{}-1", safe_name(&id)));
    assert_eq!(env["HOME"], dir.to_string_lossy());
    assert_eq!(env["TMPDIR"], env["HOME"]);
    assert_eq!(env["ORRERY_JOB_ID"], id);
    assert_eq!(env["ORRERY_ATTEMPT"], "1");
    assert_eq!(env["CUDA_VISIBLE_DEVICES"], "");
    assert_eq!(env["SEED"], "1");
    // The job's env overrides the node's defaults it may override.
    assert_eq!(env["LANG"], "en_US.UTF-8");
    let path = std::env::var("PATH")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    assert_eq!(env["PATH"], path);
    e.shutdown().await;
}

#[test]
fn the_job_cannot_set_the_node_variables() {
    for key in [
        "CUDA_VISIBLE_DEVICES",
        "ORRERY_JOB_ID",
        "ORRERY_ATTEMPT",
        "ORRERY_X",
    ] {
        let e =
            validate_params("command", &json!({"argv": ["true"], "env": {key: "1"}})).unwrap_err();
        assert!(
            e.starts_with(&format!("params.env.{key}: a job cannot set it")),
            "{e}"
        );
    }
    for key in ["PATH", "HOME", "orrery_lower", "MY_ORRERY_X"] {
        validate_params("command", &json!({"argv": ["true"], "env": {key: "1"}})).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cwd_is_a_scratch_dir_removed_after_the_run() {
    let scratch = shared_tempdir();
    let (src, e) = engine(with_scratch(scratch.path()));
    // Success, failure, timeout: the directory goes whatever the outcome.
    let script = "pwd; echo data > f; mkdir -p d/e && echo more > d/e/g; ls";
    let ok = src.submit("command", json!({"argv": ["sh", "-c", script]}));
    let fail = src.submit(
        "command",
        json!({"argv": ["sh", "-c", format!("{script}; exit 3")]}),
    );
    let slow = src.submit(
        "command",
        json!({"argv": ["sh", "-c", format!("{script}; sleep 100")], "timeout_s": 0.5}),
    );
    src.outcome(&ok, WAIT).await.ok();
    src.outcome(&fail, WAIT).await.err();
    src.outcome(&slow, WAIT).await.err();
    for id in [&ok, &fail, &slow] {
        let lines = out_lines(&log_text(&e, id));
        let dir = scratch.path().join(format!("{}-1", safe_name(id)));
        assert_eq!(lines[0], dir.to_string_lossy(), "{lines:?}");
        assert!(
            lines.contains(&"f".to_string()),
            "wrote its scratch dir: {lines:?}"
        );
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
    // A job's own cwd wins; the scratch dir is still HOME, and still removed.
    let id = src.submit(
        "command",
        json!({"argv": ["sh", "-c", "pwd; echo $HOME"], "cwd": "/"}),
    );
    src.outcome(&id, WAIT).await.ok();
    let lines = out_lines(&log_text(&e, &id));
    let dir = scratch.path().join(format!("{}-1", safe_name(&id)));
    assert_eq!(lines, ["/".to_string(), dir.to_string_lossy().into_owned()]);
    assert!(!dir.exists());
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_nodes_run_commands_as_the_command_user() {
    let scratch = shared_tempdir();
    let (src, e) = engine(with_scratch(scratch.path()));
    let id = src.submit(
        "command",
        json!({"argv": ["sh", "-c", "id -u; id -g; grep '^Groups:' /proc/self/status; stat -c %u .; touch $TMPDIR/t && echo wrote"]}),
    );
    src.outcome(&id, WAIT).await.ok();
    let lines = out_lines(&log_text(&e, &id));
    // SAFETY: getegid/geteuid cannot fail and touch no memory.
    let (me, my_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (uid, gid) = if is_root() {
        eprintln!("root: checking that the child runs as nobody");
        lookup_user("nobody").unwrap()
    } else {
        eprintln!("not root: checking that the child runs as this user");
        (me, my_gid)
    };
    assert_ne!(uid, 0);
    assert_eq!(lines[0], uid.to_string(), "{lines:?}");
    assert_eq!(lines[1], gid.to_string(), "{lines:?}");
    if is_root() {
        // None of root's supplementary groups survive.
        assert_eq!(lines[2].trim_end(), "Groups:", "{lines:?}");
    }
    // Its scratch dir is its own, and writable by it.
    assert_eq!(lines[3], uid.to_string(), "{lines:?}");
    assert_eq!(lines[4], "wrote", "{lines:?}");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_without_a_command_user_refuses_command_jobs() {
    let scratch = shared_tempdir();
    let (src, e) = engine(ExecConfig {
        command_user: None,
        ..with_scratch(scratch.path())
    });
    let marker = scratch.path().join("ran");
    let id = src.submit(
        "command",
        json!({"argv": ["sh", "-c", format!("touch {}", marker.display())]}),
    );
    let o = src.outcome(&id, WAIT).await;
    if is_root() {
        let (err, run) = o.err();
        assert!(
            err.contains("runs as root") && err.contains("--command-user"),
            "{err}"
        );
        assert_eq!(run.exit_code, None);
        assert!(src.permanent.lock().unwrap().contains(&id), "not retried");
        assert!(!marker.exists(), "the command must not run");
    } else {
        eprintln!("not root: the command runs as this user");
        o.ok();
        assert!(marker.exists());
    }
    e.shutdown().await;
}

#[test]
fn command_user_resolution() {
    let r = RunAs::resolve(Some("no-such-user-orrery"));
    let root_user = RunAs::resolve(Some("root"));
    if is_root() {
        assert_eq!(
            r,
            RunAs::Refused(
                "--command-user 'no-such-user-orrery': no such user on this node".into()
            )
        );
        assert!(
            matches!(&root_user, RunAs::Refused(m) if m.contains("uid 0")),
            "{root_user:?}"
        );
        let (uid, gid) = lookup_user("nobody").unwrap();
        assert_eq!(
            RunAs::resolve(Some("nobody")),
            RunAs::User {
                name: "nobody".into(),
                uid,
                gid
            }
        );
        assert!(matches!(RunAs::resolve(None), RunAs::Refused(_)));
    } else {
        assert_eq!(r, RunAs::Myself);
        assert_eq!(root_user, RunAs::Myself);
        assert_eq!(RunAs::resolve(None), RunAs::Myself);
    }
    assert_eq!(lookup_user("root").unwrap(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_scratch_root_is_a_clear_error() {
    if !is_root() {
        eprintln!("not root: children run as this user, who can reach its own dirs");
        return;
    }
    // 0700 and owned by root: nobody cannot pass through it.
    let private = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let root: PathBuf = private.path().join("scratch");
    let (src, e) = engine(with_scratch(&root));
    let id = src.submit("command", json!({"argv": ["true"]}));
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(
        err.contains("cannot reach the scratch dir") && err.contains("not searchable"),
        "{err}"
    );
    e.shutdown().await;
}

#[test]
fn job_ids_become_safe_names() {
    assert_eq!(safe_name("q/123 x"), "q_123_x");
    assert_eq!(safe_name("../../etc"), ".._.._etc");
    assert_eq!(safe_name(""), "job");
    assert_eq!(safe_name(&"a".repeat(300)).len(), 100);
}
