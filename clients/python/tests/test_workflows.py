"""Workflows over gRPC: start a diamond a -> {b, c} -> d, run it with
claim/complete (no step claimable before its dependencies succeeded, d gets
both results), read it, cancel; the errors; the asyncio client."""

import asyncio
import time

import pytest

import orrery

WORKFLOWS_VERSION = 7


@pytest.fixture(scope="module", autouse=True)
def workflows_active(cluster):
    """Workflows need cluster version 7: wait until every node's copy of
    the cluster version says so (a new cluster finalizes it shortly)."""
    end = time.monotonic() + 60
    for ep in cluster.endpoints:
        with orrery.Client(ep, token=cluster.token, ca_cert=cluster.ca) as c:
            while True:
                v = c.cluster.status().cluster_version
                if v is not None and v.active >= WORKFLOWS_VERSION:
                    break
                assert time.monotonic() < end, f"{ep} never reached cluster version {WORKFLOWS_VERSION}"
                time.sleep(0.2)

DIAMOND = [
    {"name": "a", "kind": "wf.a", "params": {"x": 1}},
    {"name": "b", "kind": "wf.b", "depends_on": ["a"]},
    {"name": "c", "kind": "wf.c", "depends_on": ["a"]},
    {"name": "d", "kind": "wf.d", "depends_on": ["b", "c"]},
]


def claim_steps(client, queue):
    jobs = client.jobs.claim(queue, "py-wf", max=10, wait_s=0.5)
    return {j.params["workflow"]["step"]: j for j in jobs}


def test_workflow_diamond(client, name):
    client.queues.create(name)
    w = client.workflows.start(name, DIAMOND, input={"dataset": "cats"})
    assert isinstance(w, orrery.Workflow)
    assert (w.queue, w.state) == (name, "running")
    assert w.step("a")["state"] == "claimable" and w.step("d")["state"] == "pending"
    done = set()
    for want in (["a"], ["b", "c"], ["d"]):
        got = claim_steps(client, name)
        assert sorted(got) == want
        for step, job in got.items():
            assert job.params["input"] == {"dataset": "cats"}
            assert set(job.params["deps"]) <= done, f"{step} claimed before its dependencies succeeded"
            if step == "a":
                assert job.params["params"] == {"x": 1}
            if step == "d":
                assert job.params["deps"] == {"b": "result b", "c": "result c"}
            client.jobs.complete(job.id, job.token, f"result {step}")
        done.update(got)
    w = client.workflows.get(w.id)
    assert w.state == "succeeded" and w.error is None
    assert [s["state"] for s in w.steps] == ["succeeded"] * 4
    assert w.step("d")["result"] == "result d"
    with pytest.raises(orrery.Conflict):
        client.workflows.cancel(w.id)


def test_workflow_cancel_and_errors(client, cluster, name):
    client.queues.create(name)
    w = client.workflows.start(name, DIAMOND)
    w = client.workflows.cancel(w.id)
    assert w.state == "cancelled"
    assert w.step("a")["state"] == "cancelled" and w.step("d")["state"] == "skipped"
    assert client.workflows.cancel(w.id).state == "cancelled"
    assert claim_steps(client, name) == {}

    with pytest.raises(orrery.InvalidArgument, match="cycle"):
        client.workflows.start(name, [{"name": "a", "kind": "k", "depends_on": ["b"]},
                                      {"name": "b", "kind": "k", "depends_on": ["a"]}])
    with pytest.raises(orrery.InvalidArgument, match='step "a": depends on unknown step "x"'):
        client.workflows.start(name, [{"name": "a", "kind": "k", "depends_on": ["x"]}])
    with pytest.raises(ValueError):
        client.workflows.start(name, [{"name": "a", "kind": "k", "after": ["x"]}])
    with pytest.raises(orrery.NotFound):
        client.workflows.start(name + "-absent", [{"name": "a", "kind": "k"}])
    with pytest.raises(orrery.NotFound):
        client.workflows.get("0000000000000000000000000a")

    reader = client.auth.create_token(f"{name}-reader", "reader")
    with orrery.Client(cluster.endpoints, token=reader.token, ca_cert=cluster.ca) as r:
        assert r.workflows.get(w.id).state == "cancelled"
        with pytest.raises(orrery.PermissionDenied):
            r.workflows.start(name, [{"name": "a", "kind": "k"}])
    client.auth.revoke_token(reader.info.id)


def test_workflow_async(cluster, name):
    async def main():
        async with orrery.AsyncClient(cluster.endpoints, token=cluster.token, ca_cert=cluster.ca) as c:
            await c.queues.create(name)
            w = await c.workflows.start(name, [{"name": "only", "kind": "wf.only"}], input=[1, 2])
            (job,) = await c.jobs.claim(name, "py-wf", max=10, wait_s=0.5)
            assert job.params["input"] == [1, 2] and job.params["deps"] == {}
            await c.jobs.complete(job.id, job.token, {"ok": True})
            w = await c.workflows.get(w.id)
            assert w.state == "succeeded" and w.step("only")["result"] == {"ok": True}
    asyncio.run(main())
