//! The Compose project under test, driven through the docker and Compose
//! command lines as an operator would. `scripts/test-containers.sh` brings
//! the project up and passes it in the environment: COMPOSE_PROJECT_NAME and
//! COMPOSE_FILE (read by both Compose versions), ORRERY_COMPOSE (the
//! command: `docker compose` or `docker-compose`).

use std::process::Command;

pub struct Project {
    compose: Vec<String>,
    pub name: String,
}

impl Project {
    pub fn from_env() -> Project {
        let compose = std::env::var("ORRERY_COMPOSE").unwrap_or_else(|_| "docker-compose".into());
        Project {
            compose: compose.split_whitespace().map(String::from).collect(),
            name: std::env::var("COMPOSE_PROJECT_NAME").expect("COMPOSE_PROJECT_NAME"),
        }
    }

    /// Another project of the same Compose file.
    pub fn sibling(&self, name: &str) -> Project {
        Project {
            compose: self.compose.clone(),
            name: name.to_string(),
        }
    }

    /// The Compose command line, e.g. `["docker-compose"]`.
    pub fn command(&self) -> &[String] {
        &self.compose
    }

    /// `compose -p NAME ARGS`; its stdout.
    pub fn compose(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..])
            .args(["-p", &self.name])
            .args(args);
        run(cmd)
    }

    /// The container id of service `svc` (n1, n2, n3).
    pub fn container(&self, svc: &str) -> String {
        let id = self.compose(&["ps", "-q", svc]).trim().to_string();
        assert!(!id.is_empty(), "no container for {svc}");
        id
    }

    /// The project's private network (`<project>_orrery`).
    pub fn network(&self) -> String {
        format!("{}_orrery", self.name)
    }

    /// `docker ARGS` on `svc`'s container, e.g. `docker(&["kill"], "n3")`.
    pub fn docker_on(&self, args: &[&str], svc: &str) -> String {
        let id = self.container(svc);
        docker(&[args, &[id.as_str()]].concat())
    }

    /// The container's health (`healthy`, `starting`, `unhealthy`).
    pub fn health(&self, svc: &str) -> String {
        let id = self.container(svc);
        docker(&["inspect", "-f", "{{.State.Health.Status}}", &id])
            .trim()
            .to_string()
    }

    /// The image id `svc`'s container runs.
    pub fn image_of(&self, svc: &str) -> String {
        let id = self.container(svc);
        docker(&["inspect", "-f", "{{.Image}}", &id])
            .trim()
            .to_string()
    }
}

/// `docker ARGS`; its stdout. Panics when it fails.
pub fn docker(args: &[&str]) -> String {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run(cmd)
}

/// `docker ARGS`, its exit status and stdout + stderr, for commands that are
/// expected to fail.
pub fn docker_status(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn run(mut cmd: Command) -> String {
    let out = cmd.output().expect("run docker");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
