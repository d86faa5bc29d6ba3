"""The asyncio client: every call group, the worker loop and log streams."""

import asyncio

import numpy as np
import pytest

import orrery


def run(coro):
    return asyncio.run(coro)


def test_async_calls(cluster, name):
    async def main():
        async with orrery.AsyncClient(cluster.endpoints, token=cluster.token, ca_cert=cluster.ca) as c:
            assert await c.kv.put(f"{name}/k", b"v") > 0
            assert await c.kv.get(f"{name}/k") == b"v"
            assert await c.kv.get(f"{name}/absent") is None
            with pytest.raises(orrery.InvalidArgument):
                await c.kv.put(b"", b"x")

            assert len((await c.cluster.members()).members) == 3
            assert (await c.cluster.status()).cluster_id
            assert isinstance(await c.auth.list_tokens(), list)

            await c.collections.create(name, dim=3, metric="l2")
            await c.collections.upsert(name, [{"id": i, "vector": np.array([i, 0, 0], dtype=np.float64),
                                               "payload": {"i": i}} for i in range(5)])
            hits = await c.collections.search(name, np.array([3.2, 0, 0]), k=2)
            assert [h.id for h in hits] == [3, 4] and hits[0].payload == {"i": 3}

            await c.policies.create(name)
            await c.policies.create_version(name, {
                "nodes": [{"id": "in", "type": "input", "config": {"fields": {"amount": "number"}}},
                          {"id": "out", "type": "output", "config": {"fields": {"big": "input.amount > 100.0"}}}],
                "edges": [{"from": "in", "to": "out"}]})
            r = await c.policies.run(name, {"amount": 120})
            assert r.output == {"big": True} and r.trace

            await c.queues.create(name, backoff_initial_ms=10, backoff_max_ms=10)
            cursor = ""
            while True:  # to the newest event
                page = await c.jobs.events(since=cursor, limit=1000)
                cursor = page.cursor
                if not page.events:
                    break
            jid = await c.jobs.submit(queue=name, kind="my.kind", params={"n": 1})
            assert (await c.jobs.get(jid)).state == "queued"
            stop = asyncio.Event()
            async for job in c.jobs.work(queue=name, kinds=["my.kind"], wait_s=1, lease_s=2, stop=stop):
                assert job.id == jid and job.params == {"n": 1}
                await asyncio.sleep(4.5)  # over two leases: the heartbeat task keeps it
                assert not job.lease_lost
                await job.complete({"n": 2})
                stop.set()
            assert (await c.jobs.get(jid)).result == {"n": 2}
            assert "gpus" in await c.jobs.gpus()
            seen = []
            async for ev in c.jobs.watch_events(since=cursor, poll_s=0.2):
                seen.append((ev["job_id"], ev["type"]))
                if ev["type"] == "succeeded":
                    break
            assert seen == [(jid, "enqueued"), (jid, "claimed"), (jid, "succeeded")]
            with pytest.raises(orrery.NotFound):
                async for _ in c.jobs.logs("00000000000000000000000000"):
                    pass

    run(main())


def test_async_retry_on_unreachable_node(cluster):
    async def main():
        async with orrery.AsyncClient(["127.0.0.1:1", cluster.endpoint(2)], token=cluster.token,
                                      ca_cert=cluster.ca) as c:
            await c.kv.put("async-failover", b"1")
            assert await c.kv.get("async-failover") == b"1"
    run(main())
