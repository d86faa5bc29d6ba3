//! The restore drill on containers: a backup of the running Compose
//! cluster (`orreryctl backup create`, as an operator runs it on the host)
//! restored into a second Compose project with its own volumes,
//! certificates and ports (`scripts/compose-restore.sh`, which runs
//! `orrery restore` in the image), and `cluster/compose-env.sh` pointing a
//! client at it.

use crate::docker::Project;
use orrery_client::{split_endpoints, Options};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `orreryctl backup create --out DIR/cluster.orb` against the cluster the
/// environment names (ORRERY_ENDPOINTS, ORRERY_CA_CERT, ORRERY_TOKEN).
pub fn backup(dir: &Path) -> PathBuf {
    let file = dir.join("cluster.orb");
    let out = Command::new(env!("CARGO_BIN_EXE_orreryctl"))
        .args(["backup", "create", "--out"])
        .arg(&file)
        .output()
        .expect("run orreryctl");
    assert!(
        out.status.success(),
        "orreryctl backup create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    file
}

/// A restored Compose project; removed with its volumes when dropped.
pub struct Restored {
    pub project: Project,
    pub endpoints: Vec<String>,
    pub opts: Options,
}

impl Restored {
    /// Restores `file` into project `name` with client ports
    /// `port_base + 1..=3`; `token` is a token of the backed-up cluster.
    pub fn start(project: Project, file: &Path, port_base: u16, token: &str) -> Restored {
        let name = project.name.clone();
        let name = name.as_str();
        let mut r = Restored {
            project,
            endpoints: Vec::new(),
            opts: Options::default(),
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut cmd = Command::new(root.join("scripts/compose-restore.sh"));
        cmd.arg("--from").arg(file).args(["-p", name]);
        for i in 1..=3u16 {
            cmd.env(format!("ORRERY_N{i}_PORT"), (port_base + i).to_string());
        }
        let out = cmd.output().expect("run compose-restore.sh");
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            out.status.success(),
            "compose-restore.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // What a user does next: eval "$(cluster/compose-env.sh -p NAME)".
        let env = Command::new(root.join("cluster/compose-env.sh"))
            .args(["-p", name])
            .output()
            .expect("run compose-env.sh");
        let text = String::from_utf8_lossy(&env.stdout);
        assert!(
            env.status.success(),
            "compose-env.sh -p {name}: {text}{}",
            String::from_utf8_lossy(&env.stderr)
        );
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("export ORRERY_ENDPOINTS=") {
                r.endpoints = split_endpoints(v);
            } else if let Some(v) = line.strip_prefix("export ORRERY_CA_CERT=") {
                r.opts.ca_cert = Some(PathBuf::from(v));
            }
            assert!(
                !line.starts_with("export ORRERY_TOKEN="),
                "a restored cluster writes no root token of its own"
            );
        }
        assert_eq!(r.endpoints.len(), 3, "{text}");
        assert!(r.opts.ca_cert.is_some(), "{text}");
        r.opts.token = Some(token.to_string());
        r
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        // Never panics here (a drop during a failed test's unwinding).
        let compose = self.project.command();
        let name = &self.project.name;
        let out = Command::new(&compose[0])
            .args(&compose[1..])
            .args(["-p", name, "down", "-v", "--remove-orphans"])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "removing project {name}: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("removing project {name}: {e}"),
        }
        let cache = std::env::var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache")));
        if let Ok(c) = cache {
            let _ = std::fs::remove_dir_all(c.join("orrery-compose").join(name));
        }
    }
}
