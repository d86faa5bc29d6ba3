//! Workflows over gRPC (orrery.v1.Jobs StartWorkflow / GetWorkflow /
//! CancelWorkflow) on a real node (TLS, tokens): the definition checks and
//! their status codes, the permissions, a diamond a -> {b, c} -> d run by
//! a worker claiming over gRPC (no step claimable before its dependencies
//! succeeded, d receives both results), the view equal to REST's, cancel.

mod common;

use common::*;
use orrery_client::{pb, Client};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use tonic::Code;

const Q: &str = "wfg";

fn code(e: orrery_client::Error) -> (Code, String) {
    match e {
        orrery_client::Error::Status(s) => (s.code(), s.message().to_string()),
        other => panic!("not a status: {other}"),
    }
}

fn step(name: &str, kind: &str, deps: &[&str]) -> pb::WorkflowStep {
    pb::WorkflowStep {
        name: name.into(),
        kind: kind.into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    }
}

fn start(steps: Vec<pb::WorkflowStep>, input: &str) -> pb::StartWorkflowRequest {
    pb::StartWorkflowRequest {
        queue: Q.into(),
        steps,
        input_json: input.into(),
    }
}

fn view(w: &pb::Workflow) -> Value {
    serde_json::from_str(&w.json).expect("workflow json")
}

fn step_state(w: &Value, name: &str) -> String {
    w["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {w}"))["state"]
        .as_str()
        .expect("state")
        .to_string()
}

/// Claims what is claimable now: `(step name, job)` each.
async fn claim(g: &Client) -> Vec<(String, pb::Job, Value)> {
    let jobs = g.claim_jobs(Q, "wfg-worker", 10, 0.5).await.expect("claim");
    jobs.into_iter()
        .map(|j| {
            let v: Value = serde_json::from_str(&j.json).expect("job json");
            let name = v["params"]["workflow"]["step"]
                .as_str()
                .expect("step")
                .to_string();
            (name, j, v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_over_grpc() {
    let c = Cluster::formed(1, 1, &["--workers", "0"]).await;
    c.wait_version(7).await;
    let g = c.grpc(0).await.expect("connect");
    g.create_queue(pb::CreateQueueRequest {
        name: Q.into(),
        ..Default::default()
    })
    .await
    .expect("queue");

    // Refused definitions: the same checks and messages as REST.
    let cycle = vec![step("a", "k", &["b"]), step("b", "k", &["a"])];
    let (c0, m) = code(g.start_workflow(start(cycle, "")).await.unwrap_err());
    assert_eq!(c0, Code::InvalidArgument, "{m}");
    assert!(m.contains("cycle"), "{m}");
    let mut bad = step("a", "k", &[]);
    bad.params_json = "{nope".into();
    let (c0, m) = code(g.start_workflow(start(vec![bad], "")).await.unwrap_err());
    assert_eq!(c0, Code::InvalidArgument, "{m}");
    assert!(m.contains("steps[0].params_json"), "{m}");
    let (c0, m) = code(
        g.start_workflow(start(vec![step("a", "k", &[])], "[1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(c0, Code::InvalidArgument, "{m}");
    let mut other = start(vec![step("a", "k", &[])], "");
    other.queue = "no-such-q".into();
    assert_eq!(
        code(g.start_workflow(other).await.unwrap_err()).0,
        Code::NotFound
    );
    for id in ["0000000000000000000000000a", "zz"] {
        assert_eq!(
            code(g.get_workflow(id).await.unwrap_err()).0,
            Code::NotFound
        );
        assert_eq!(
            code(g.cancel_workflow(id).await.unwrap_err()).0,
            Code::NotFound
        );
    }
    assert!(
        claim(&g).await.is_empty(),
        "a refused workflow enqueued jobs"
    );

    // Permissions: a reader reads workflows but may not start or cancel.
    let t = c
        .json_ok(
            0,
            "POST",
            "/v1/auth/tokens",
            Some(json!({"name": "wf-reader", "role": "reader"})),
            201,
        )
        .await;
    let opts = orrery_client::Options {
        ca_cert: Some(c.ca_cert()),
        token: t["token"].as_str().map(String::from),
    };
    let reader = Client::connect_with(&c.nodes[0].addr, &opts)
        .await
        .expect("connect");
    let denied = reader
        .start_workflow(start(vec![step("a", "k", &[])], ""))
        .await
        .unwrap_err();
    assert_eq!(code(denied).0, Code::PermissionDenied);

    // The diamond, run by a worker over gRPC.
    let steps = vec![
        step("a", "wf.a", &[]),
        step("b", "wf.b", &["a"]),
        step("c", "wf.c", &["a"]),
        step("d", "wf.d", &["b", "c"]),
    ];
    let w = g
        .start_workflow(start(steps, r#"{"n": 1}"#))
        .await
        .expect("start");
    assert_eq!(w.state, "running");
    assert_eq!(w.queue, Q);
    let id = w.id.clone();
    let v = view(&w);
    assert_eq!(step_state(&v, "a"), "claimable", "{v}");
    assert_eq!(step_state(&v, "d"), "pending", "{v}");
    let r = reader.get_workflow(&id).await.expect("reader get");
    assert_eq!(r.id, id);
    assert_eq!(
        code(reader.cancel_workflow(&id).await.unwrap_err()).0,
        Code::PermissionDenied
    );

    let mut done = BTreeSet::new();
    for (round, want) in [(0, vec!["a"]), (1, vec!["b", "c"]), (2, vec!["d"])] {
        let got = claim(&g).await;
        let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, want, "round {round}: claimed {names:?}");
        for (name, job, v) in &got {
            assert_eq!(v["params"]["input"], json!({"n": 1}), "{v}");
            let deps = &v["params"]["deps"];
            for d in deps.as_object().expect("deps").keys() {
                assert!(done.contains(d), "{name} claimed before {d} succeeded");
            }
            if name == "d" {
                assert_eq!(
                    deps,
                    &json!({"b": {"step": "b"}, "c": {"step": "c"}}),
                    "{v}"
                );
            }
            let result = json!({"step": name}).to_string();
            g.complete_job(&job.id, job.attempts, &result)
                .await
                .expect("complete");
        }
        done.extend(got.into_iter().map(|(n, _, _)| n));
    }
    let w = g.get_workflow(&id).await.expect("get");
    assert_eq!(w.state, "succeeded", "{}", w.json);
    // One view for both fronts.
    let rest = c
        .json_ok(0, "GET", &format!("/v1/workflows/{id}"), None, 200)
        .await;
    assert_eq!(view(&w), rest);
    // A finished workflow cannot be cancelled (REST's 409).
    assert_eq!(
        code(g.cancel_workflow(&id).await.unwrap_err()).0,
        Code::FailedPrecondition
    );

    // Cancel: the root's queued job is cancelled, the rest never created.
    let w = g
        .start_workflow(start(
            vec![step("a", "wf.a", &[]), step("b", "wf.b", &["a"])],
            "",
        ))
        .await
        .expect("start");
    let w = g.cancel_workflow(&w.id).await.expect("cancel");
    assert_eq!(w.state, "cancelled");
    let v = view(&w);
    assert_eq!(step_state(&v, "a"), "cancelled", "{v}");
    assert_eq!(step_state(&v, "b"), "skipped", "{v}");
    assert_eq!(
        g.cancel_workflow(&w.id).await.expect("again").state,
        "cancelled"
    );
    assert!(claim(&g).await.is_empty(), "claimable after a cancel");
}
