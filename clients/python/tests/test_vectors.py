"""Collections, points and search, with lists and numpy arrays."""

import time
import uuid

import numpy as np
import pytest

import orrery


def points_settle(client, name, want, within_s=10.0):
    """The collection's point count as the answering node's replicas
    see it (docs/api.md): it may lag a write acknowledged a moment ago."""
    deadline = time.monotonic() + within_s
    while True:
        got = client.collections.get(name).points
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_collections_points_search(client, name):
    col = client.collections.create(name, dim=4, metric="cosine")
    assert (col.name, col.dim, col.metric) == (name, 4, "cosine")
    assert name in [c.name for c in client.collections.list()]
    # The same definition again returns the collection; another one conflicts.
    assert client.collections.create(name, dim=4).name == name
    with pytest.raises(orrery.Conflict):
        client.collections.create(name, dim=8)

    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(20, 4)).astype(np.float32)
    pid = str(uuid.uuid4())
    points = [{"id": i, "vector": vecs[i], "payload": {"lang": "en" if i % 2 == 0 else "fr", "i": i}}
              for i in range(19)]
    # A plain list and a Point with a UUID id too.
    points.append(orrery.Point(id=pid, vector=vecs[19].tolist(), payload={"lang": "de"}))
    assert client.collections.upsert(name, points) == 20
    assert points_settle(client, name, 20) == 20

    hits = client.collections.search(name, vecs[4], k=3)
    assert hits[0].id == 4 and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].payload == {"lang": "en", "i": 4}
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score

    en = client.collections.search(name, vecs[3].tolist(), k=10, filter={"must": [{"key": "lang", "match": "en"}]})
    assert en and all(h.payload["lang"] == "en" for h in en) and len(en) == 10
    exact = client.collections.search(name, vecs[19], k=1, exact=True, with_vector=True)
    assert exact[0].id == pid and exact[0].vector == pytest.approx(vecs[19].tolist(), abs=1e-6)

    batch = client.collections.search_batch(name, vecs[:3], k=1)
    assert [b[0].id for b in batch] == [0, 1, 2]

    p = client.collections.get_point(name, 5)
    assert p.id == 5 and p.payload["lang"] == "fr"
    assert p.vector == pytest.approx(vecs[5].tolist(), abs=1e-6)
    assert client.collections.get_point(name, uuid.UUID(pid)).payload == {"lang": "de"}

    assert client.collections.delete(name, ids=[5, np.int64(6)]) == 2
    with pytest.raises(orrery.NotFound):
        client.collections.get_point(name, 5)
    assert client.collections.delete(name, filter={"must": [{"key": "lang", "match": "de"}]}) == 1
    assert points_settle(client, name, 17) == 17

    with pytest.raises(orrery.InvalidArgument):
        client.collections.search(name, [1.0, 2.0], k=1)  # wrong dimension
    client.collections.drop(name)
    with pytest.raises(orrery.NotFound):
        client.collections.get(name)


def test_bad_points_are_refused_locally(client):
    with pytest.raises(ValueError):
        client.collections.upsert("x", [{"id": 1}])
    with pytest.raises(ValueError):
        client.collections.search("x", np.zeros((2, 4)), k=1)
    with pytest.raises(ValueError):
        client.collections.delete("x")
