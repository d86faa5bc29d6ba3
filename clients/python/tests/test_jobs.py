"""Queues, jobs, external workers (the worker loop with a real lease
expiry), events, logs and GPUs."""

import threading
import time

import pytest

import orrery
from dataset_rest import wait_for


def test_queues(client, name):
    q = client.queues.create(name, partitions=2, lease_s=10, max_attempts=2)
    assert (q.name, q.partitions, q.lease_s, q.max_attempts) == (name, 2, 10, 2)
    assert name in [x.name for x in client.queues.list()]
    with pytest.raises(orrery.Conflict):
        client.queues.create(name)
    client.jobs.submit(name, "my.kind")
    got = client.queues.get(name)
    assert got.counts["queued"] == 1
    with pytest.raises(orrery.Conflict):
        client.queues.delete(name)  # it has a queued job
    with pytest.raises(orrery.InvalidArgument):
        client.queues.create("bad name!")
    with pytest.raises(orrery.NotFound):
        client.queues.get(name + "-absent")


def test_jobs_submit_get_list_cancel(client, name):
    client.queues.create(name)
    ids = [client.jobs.submit(name, "my.kind", {"n": i}, priority=i) for i in range(3)]
    job = client.jobs.get(ids[0])
    assert (job.queue, job.kind, job.state, job.params) == (name, "my.kind", "queued", {"n": 0})
    page = client.jobs.list(queue=name, limit=2)
    assert [j.id for j in page.jobs] == ids[:2] and page.next_cursor
    assert [j.id for j in client.jobs.list(queue=name, cursor=page.next_cursor).jobs] == ids[2:]

    again = client.jobs.submit(name, "my.kind", dedupe_key="once")
    assert client.jobs.submit(name, "my.kind", dedupe_key="once") == again

    assert client.jobs.cancel(ids[1]).state == "cancelled"
    with pytest.raises(orrery.NotFound):
        client.jobs.submit(name + "-absent", "my.kind")

    results = client.jobs.submit_batch([{"queue": name, "kind": "my.batch", "params": {"i": i}} for i in range(3)])
    assert all(r.created and r.job.kind == "my.batch" and r.error is None for r in results)
    assert client.queues.get(name).counts["queued"] == 6


def test_claim_heartbeat_complete_fail(client, name):
    # One partition: a batch claim takes from one partition.
    client.queues.create(name, partitions=1, max_attempts=2, backoff_initial_ms=10, backoff_max_ms=10)
    a = client.jobs.submit(name, "my.kind", {"x": 1})
    assert client.jobs.claim(name, "w1", kinds=["other.kind"]) == []
    (job,) = client.jobs.claim(name, "w1", kinds=["my.kind"], wait_s=1)
    assert job.id == a and job.state == "running" and job.token == 1
    hb = client.jobs.heartbeat(job.id, job.token)
    assert not hb.cancelled and hb.lease_expires_ms > time.time() * 1000
    done = client.jobs.complete(job.id, job.token, {"ok": True})
    assert done.state == "succeeded" and done.result == {"ok": True}
    with pytest.raises(orrery.Conflict):
        client.jobs.complete(job.id, job.token)
    with pytest.raises(orrery.Conflict):
        client.jobs.cancel(job.id)  # it ended otherwise
    runs = client.jobs.runs(job.id)
    assert [(r["attempt"], r["worker_id"], r["outcome"]) for r in runs] == [(1, "w1", "succeeded")]

    b = client.jobs.submit(name, "my.kind")
    (job,) = client.jobs.claim(name, "w1", wait_s=1)
    assert client.jobs.fail(job.id, job.token, "boom").state == "queued"
    (job,) = client.jobs.claim(name, "w1", wait_s=5)
    assert job.id == b and job.token == 2
    dead = client.jobs.fail(job.id, job.token, "boom again")
    assert dead.state == "dead" and dead.last_error == "boom again"

    for _ in range(3):
        client.jobs.submit(name, "my.kind")
    claimed = client.jobs.claim(name, "w2", max=3, wait_s=1)
    assert len(claimed) == 3
    items = client.jobs.complete_batch([{"id": j.id, "token": j.token, "result": j.id} for j in claimed]
                                       + [{"id": claimed[0].id, "token": claimed[0].token}])
    assert [i.state for i in items[:3]] == ["succeeded"] * 3
    assert items[3].error["code"] == "conflict"


def test_cancel_reaches_the_worker_heartbeat(client, name):
    client.queues.create(name)
    jid = client.jobs.submit(name, "my.kind")
    (job,) = client.jobs.claim(name, "w", wait_s=1)
    assert client.jobs.cancel(jid).raw["cancel_requested"] is True
    assert client.jobs.heartbeat(job.id, job.token).cancelled
    assert client.jobs.fail(job.id, job.token, "stopped").state == "cancelled"


def test_worker_loop(client, name):
    client.queues.create(name)
    ids = [client.jobs.submit(name, "my.kind", {"n": i}) for i in range(3)]
    client.jobs.submit(name, "other.kind")
    stop = threading.Event()
    seen = []
    for job in client.jobs.work(queue=name, kinds=["my.kind"], wait_s=1, stop=stop):
        seen.append(job.id)
        if job.params["n"] == 0:
            job.complete({"double": 0})
        elif job.params["n"] == 1:
            job.fail("no", retry=False)
        # n == 2: left alone, completed by the loop when it moves on.
        if len(seen) == 3:
            stop.set()
    assert sorted(seen) == sorted(ids)
    assert [client.jobs.get(i).state for i in ids] == ["succeeded", "failed", "succeeded"]
    assert client.jobs.get(ids[0]).result == {"double": 0}
    assert client.queues.get(name).counts["queued"] == 1  # other.kind untouched


def test_worker_loop_lease_expiry(cluster, client, name):
    """A worker that does not heartbeat loses its job when the lease
    expires: another worker claims it, and the first one's completion is
    refused."""
    client.queues.create(name, backoff_initial_ms=10, backoff_max_ms=10)
    jid = client.jobs.submit(name, "my.kind")
    slow = client.jobs.work(queue=name, lease_s=1, heartbeat=False, wait_s=1, worker_id="slow")
    job = next(slow)
    assert job.id == jid and job.token == 1
    with orrery.Client(cluster.endpoint(2), token=cluster.token, ca_cert=cluster.ca) as other:
        fast = other.jobs.work(queue=name, wait_s=10, worker_id="fast")
        job2 = next(fast)  # claimable once the first lease expired
        assert job2.id == jid and job2.token == 2
        with pytest.raises(orrery.Conflict):
            job.complete("late")
        job2.complete("on time")
        fast.close()
    slow.close()
    j = client.jobs.get(jid)
    assert j.state == "succeeded" and j.result == "on time"
    assert [(r["worker_id"], r["outcome"]) for r in client.jobs.runs(jid)] == [("slow", "expired"), ("fast", "succeeded")]


def test_worker_loop_heartbeats_keep_the_lease(client, name):
    client.queues.create(name, backoff_initial_ms=10, backoff_max_ms=10)
    jid = client.jobs.submit(name, "my.kind")
    loop = client.jobs.work(queue=name, lease_s=2, wait_s=1)
    job = next(loop)
    time.sleep(5)  # over two lease lengths: only heartbeats keep it
    assert client.jobs.claim(name, "thief", wait_s=0) == []
    assert not job.lease_lost
    assert job.complete("kept").state == "succeeded"
    loop.close()
    assert client.jobs.get(jid).state == "succeeded"


def test_stopping_the_loop_fails_an_unfinished_job_for_a_retry(client, name):
    client.queues.create(name, backoff_initial_ms=10, backoff_max_ms=10)
    jid = client.jobs.submit(name, "my.kind")
    with pytest.raises(RuntimeError):
        for job in client.jobs.work(queue=name, wait_s=1):
            raise RuntimeError("worker crashed")
    j = wait_for(lambda: (lambda j: j if j.state == "queued" else None)(client.jobs.get(jid)))
    assert j.attempts == 1 and "stopped" in j.last_error


def test_events(client, name):
    start = client.jobs.events(limit=1)
    cursor = start.cursor
    # The oldest kept events first; skip to now.
    while True:
        page = client.jobs.events(since=cursor, limit=1000)
        cursor = page.cursor
        if not page.events:
            break
    client.queues.create(name)
    jid = client.jobs.submit(name, "my.kind")
    (job,) = client.jobs.claim(name, "w", wait_s=1)
    client.jobs.complete(job.id, job.token)
    types = []
    for ev in client.jobs.watch_events(since=cursor, poll_s=0.2):
        if ev["job_id"] == jid:
            types.append(ev["type"])
        if ev["type"] == "succeeded" and ev["job_id"] == jid:
            break
    assert types == ["enqueued", "claimed", "succeeded"]


def test_logs_of_a_run_on_a_node(client, name):
    """Runs of external workers have no logs; an async policy run is a
    `policy.run` job on a node's own engine, which logs its outcome."""
    client.policies.create(name)
    client.policies.create_version(name, {
        "nodes": [{"id": "in", "type": "input", "config": {"fields": {}}},
                  {"id": "out", "type": "output", "config": {"fields": {"ok": "true"}}}],
        "edges": [{"from": "in", "to": "out"}]})
    run = client.policies.run(name, {}, mode="async")
    assert run.status == "running"
    done = wait_for(lambda: (lambda r: r if r.status != "running" else None)(client.policies.get_run(run.id)))
    assert done.output == {"ok": True}
    jobs = client.jobs.list(queue="_policies", limit=1000).jobs
    job = next(j for j in jobs if j.kind == "policy.run" and j.params.get("run_id") == run.id)
    wait_for(lambda: client.jobs.get(job.id).state == "succeeded")
    text = b"".join(client.jobs.logs(job.id)).decode()
    assert f"run {run.id}: succeeded" in text
    followed = b"".join(client.jobs.logs(job.id, follow=True, timeout=10)).decode()
    assert f"run {run.id}: succeeded" in followed
    with pytest.raises(orrery.NotFound):
        list(client.jobs.logs("00000000000000000000000000"))


def test_gpus(client):
    g = client.jobs.gpus()
    assert set(g) >= {"gpus", "nodes"}
    assert isinstance(g["gpus"], list)
