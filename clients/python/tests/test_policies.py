"""Policies, versions, runs and data sources."""

import pytest

import orrery

GRAPH = {
    "nodes": [
        {"id": "in", "type": "input", "config": {"fields": {"amount": "number", "customer": "string"}}},
        {"id": "limit", "type": "lookup", "config": {"source": "SOURCE", "key": "input.customer", "as": "limit",
                                                      "on_error": "default", "default": 100}},
        {"id": "check", "type": "branch"},
        {"id": "deny", "type": "output", "config": {"fields": {"decision": "'deny'", "limit": "limit"}}},
        {"id": "approve", "type": "output", "config": {"fields": {"decision": "'approve'", "limit": "limit"}}},
    ],
    "edges": [
        {"from": "in", "to": "limit"}, {"from": "limit", "to": "check"},
        {"from": "check", "to": "deny", "when": "input.amount > double(limit)"},
        {"from": "check", "to": "approve"},
    ],
}


def graph(source):
    import copy
    g = copy.deepcopy(GRAPH)
    g["nodes"][1]["config"]["source"] = source
    return g


def test_policies_versions_runs_sources(client, name):
    src = client.policies.create_data_source({"name": f"{name}-limits", "kind": "kv",
                                              "key_template": f"{name}/limits/{{key}}"})
    assert src["name"] == f"{name}-limits"
    assert f"{name}-limits" in [d["name"] for d in client.policies.data_sources()]
    client.kv.put(f"{name}/limits/alice", b"500")

    p = client.policies.create(name, description="credit")
    assert p.name == name and p.latest_version == 0
    with pytest.raises(orrery.Conflict):
        client.policies.create(name)
    v1 = client.policies.create_version(name, graph(f"{name}-limits"), created_by="pytest")
    assert v1.version == 1 and v1.graph == graph(f"{name}-limits")
    assert client.policies.get(p.id).latest_version == 1

    run = client.policies.run(p.id, {"amount": 120, "customer": "alice"})
    assert run.status == "succeeded" and run.output == {"decision": "approve", "limit": 500}
    assert [t["id"] for t in run.trace] == ["in", "limit", "check", "approve"]
    denied = client.policies.run(name, {"amount": 120, "customer": "bob"}, run_key="bob-1")
    assert denied.output == {"decision": "deny", "limit": 100} and denied.run_key == "bob-1"
    assert client.policies.get_run(run.id).output == run.output

    with pytest.raises(orrery.InvalidArgument) as e:
        client.policies.run(name, {"amount": "lots"})
    assert e.value.code == "invalid_input"

    batch = client.policies.run_batch(name, [{"amount": 1, "customer": "alice"}, {"amount": 900, "customer": "alice"}])
    assert batch.version == 1
    assert [r.output["decision"] for r in batch.results] == ["approve", "deny"]

    page = client.policies.runs(policy=name, limit=1)
    assert len(page.runs) == 1 and page.runs[0].id == denied.id and page.next_cursor
    rest = client.policies.runs(policy=name, cursor=page.next_cursor)
    assert [r.id for r in rest.runs] == [run.id]

    v2 = client.policies.create_version(name, graph(f"{name}-limits"), inactive=True)
    assert [v.version for v in client.policies.versions(name)] == [1, 2]
    assert client.policies.get_version(name, 2).version == v2.version
    p = client.policies.update(name, description="credit v2", allocation=[(1, 1), (2, 3)])
    assert p.description == "credit v2" and sorted(p.allocation) == [(1, 1), (2, 3)]
    assert client.policies.run(name, {"amount": 1, "customer": "x"}, version=2).version == 2
    with pytest.raises(orrery.Conflict):
        client.policies.archive_version(name, 1)  # it still has weight
    client.policies.update(name, allocation=[(1, 0), (2, 1)])
    assert client.policies.archive_version(name, 1).archived
    assert client.policies.get_version(name, 1).archived

    with pytest.raises(orrery.InvalidArgument) as e:
        client.policies.create_version(name, {"nodes": [], "edges": []})
    assert e.value.code == "invalid_graph"

    assert client.policies.delete(name) is True
    with pytest.raises(orrery.NotFound):
        client.policies.get(name)
    assert client.policies.delete_data_source(f"{name}-limits") is True
