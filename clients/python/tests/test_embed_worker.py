"""The MiniLM embed worker: the numpy model against sentence-transformers'
own vectors (recorded once, data/minilm_reference.json), and the worker on
the test cluster: `text.embed` jobs, then dataset text search and pipeline
workflows over REST (docs/api.md, "Text search and pipelines")."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from orrery.embed_worker import BadParams, EmbedWorker, Rest, _caption_from_deps, merged_params, point_id
from orrery.minilm import DIM, MODEL_NAME, MiniLM
from dataset_rest import make_dataset, rest, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def model():
    return MiniLM()


def test_vectors_match_sentence_transformers(model):
    with open(os.path.join(HERE, "data", "minilm_reference.json")) as f:
        ref = json.load(f)
    got = model.embed(ref["sentences"])
    assert got.shape == (3, DIM)
    for g, r in zip(got, ref["vectors"]):
        r = np.asarray(r, dtype=np.float64)
        cos = float(np.dot(g, r) / (np.linalg.norm(g) * np.linalg.norm(r)))
        assert cos >= 0.999, cos
        assert abs(float(np.linalg.norm(g)) - 1.0) < 1e-5


def test_related_texts_score_above_unrelated_ones(model):
    v = model.embed(["a red bicycle parked by a wall", "a bike leaning against a brick wall",
                     "a bowl of hot soup on a table", "a cat sleeping on a sofa", "a kitten napping on a couch"])
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    assert sim[3, 4] > sim[3, 1] + 0.2
    # Batching (padding to the longest text) changes nothing.
    one = model.embed(["a cat sleeping on a sofa"])[0]
    assert float(np.dot(one, v[3])) > 0.99999


def test_params_shapes():
    assert merged_params({"texts": ["a"]}) == ({"texts": ["a"]}, {})
    step = {"workflow": {"id": "w", "step": "embed"}, "input": {"dataset": "d", "path": "p"},
            "params": {"collection": "c"}, "deps": {"caption": {"caption": "x"}}}
    assert merged_params(step) == ({"dataset": "d", "path": "p", "collection": "c"}, {"caption": {"caption": "x"}})
    with pytest.raises(BadParams):
        merged_params([1])
    assert _caption_from_deps({"caption": {"caption": "a cat"}}) == "a cat"
    assert _caption_from_deps({"caption": "a dog"}) == "a dog"
    assert _caption_from_deps({"thumbnail": "thumbs/a.png"}) is None
    assert _caption_from_deps({"thumbnail": {"path": "t.png"}, "caption": None}) is None
    w = EmbedWorker(None, None, model=_NoModel())
    for bad in ({"texts": []}, {"texts": [1]}, {"texts": "a"}, {"dataset": "d", "path": "p"}, {}):
        with pytest.raises(BadParams):
            w.handle(bad)
    assert point_id("d", "a.png") == point_id("d", "a.png") != point_id("d", "b.png")
    assert str(uuid.UUID(point_id("d", "a.png"))) == point_id("d", "a.png")


def orreryctl(cluster, *args):
    r = subprocess.run([os.path.join(cluster.bin, "orreryctl"), "--endpoint", cluster.endpoint(2),
                        "--token", cluster.token, "--ca-cert", cluster.ca, *args],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode == 0, r.stdout
    return r.stdout


class _NoModel:
    def embed(self, texts):
        raise AssertionError("not reached")


@pytest.fixture
def worker(client, cluster, model, name):
    """A real embed worker (a thread) on queue `name`."""
    stop = threading.Event()
    client.queues.create(name)
    # A first endpoint that refuses connections: the REST calls fail over.
    rest_api = Rest(["127.0.0.1:1", *cluster.endpoints], cluster.token, cluster.ca)
    w = EmbedWorker(client, rest_api, model)
    t = threading.Thread(target=w.run, kwargs={"queue": name, "stop": stop, "wait_s": 0.5}, daemon=True)
    t.start()
    yield name
    stop.set()
    t.join(10)


def test_worker_runs_text_embed_jobs(client, worker, model):
    jid = client.jobs.submit(worker, "text.embed", {"texts": ["a red bicycle", "a green field"]})
    done = wait_for(lambda: (j := client.jobs.get(jid)).state in ("succeeded", "failed", "dead") and j)
    assert done.state == "succeeded", done.raw
    assert done.result["model"] == MODEL_NAME and done.result["dim"] == DIM
    want = model.embed(["a red bicycle", "a green field"])
    for got, w in zip(done.result["vectors"], want):
        assert len(got) == DIM
        assert float(np.dot(got, w)) > 0.9999
    bad = client.jobs.submit(worker, "text.embed", {"texts": "not a list"})
    failed = wait_for(lambda: (j := client.jobs.get(bad)).state in ("failed", "dead") and j)
    assert failed.state == "failed" and "texts" in failed.raw["last_error"]


def test_the_console_script_serves_a_queue(cluster, client, name):
    """`orrery-embed-worker` as installed (the package's entry point), a
    process of its own."""
    exe = os.path.join(os.path.dirname(sys.executable), "orrery-embed-worker")
    env = dict(os.environ, ORRERY_TOKEN=cluster.token, ORRERY_CA_CERT=cluster.ca)
    p = subprocess.Popen([exe, "--endpoint", ",".join(cluster.endpoints), "--queue", name], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: name in [q.name for q in client.queues.list()], timeout=30)
        jid = client.jobs.submit(name, "text.embed", {"texts": ["hello world"]})
        done = wait_for(lambda: (j := client.jobs.get(jid)).state != "queued" and j.state != "running" and j,
                        timeout=30)
        assert done.state == "succeeded" and len(done.result["vectors"][0]) == DIM, done.raw
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=10)
    assert "claiming text.embed jobs from queue " + name in out, out


CAPTIONS = [
    "a red bicycle leaning against a brick wall",
    "a bowl of noodle soup with chopsticks",
    "a snowy mountain peak under a blue sky",
    "a black cat sleeping on a wooden chair",
    "a sailing boat on a calm lake at sunset",
    "a plate of chocolate chip cookies",
]


def test_search_finds_the_captioned_image(cluster, client, worker, name):
    ds, paths = make_dataset(cluster, name, len(CAPTIONS))
    caps = dict(zip(paths, CAPTIONS))
    st, r, _ = rest(cluster, "PATCH", f"/v1/datasets/{ds}/items",
                    {"items": [{"path": p, "caption": c} for p, c in caps.items()]})
    assert st == 200 and r["updated"] == len(CAPTIONS), r
    # The embed step alone: the worker reads each item's caption itself.
    st, r, _ = rest(cluster, "POST", f"/v1/datasets/{ds}/pipeline",
                    {"steps": ["embed"], "queue": worker, "collection": name})
    assert st == 202 and r["started"] == len(CAPTIONS) and r["collection"] == name, r
    for w in r["workflows"]:
        wf = wait_for(lambda: (x := client.workflows.get(w["id"])).state != "running" and x, timeout=60)
        assert wf.state == "succeeded", wf.raw
    st, items, _ = rest(cluster, "GET", f"/v1/datasets/{ds}/items")
    for it in items["items"]:
        assert it["embedding_id"] == point_id(ds, it["path"])
    # Nothing left to do: a second run skips every item.
    st, again, _ = rest(cluster, "POST", f"/v1/datasets/{ds}/pipeline",
                        {"steps": ["embed"], "queue": worker, "collection": name})
    assert st == 202 and again["started"] == 0 and again["skipped"] == len(CAPTIONS), again
    for query, want in [("bicycle by a wall", paths[0]), ("soup with noodles", paths[1]),
                        ("cat asleep on a chair", paths[3]), ("boat on a lake", paths[4])]:
        st, r, _ = rest(cluster, "POST", f"/v1/datasets/{ds}/search",
                        {"text": query, "k": 3, "queue": worker, "collection": name})
        assert st == 200, r
        top = [h["path"] for h in r["results"]]
        assert want in top, (query, r)
        assert top[0] == want, (query, r)
        assert r["results"][0]["caption"] == caps[want]
        scores = [h["score"] for h in r["results"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3
    # orreryctl speaks the same REST call.
    out = orreryctl(cluster, "datasets", "search", ds, "boat on a lake", "--k", "1", "--queue", worker,
                    "--collection", name)
    assert out.split()[1] == paths[4] and CAPTIONS[4] in out, out
    # The caller's filter narrows the dataset's own.
    st, r, _ = rest(cluster, "POST", f"/v1/datasets/{ds}/search",
                    {"text": "bicycle", "k": 10, "queue": worker, "collection": name,
                     "filter": {"must_not": [{"key": "path", "match": paths[0]}]}})
    assert st == 200 and paths[0] not in [h["path"] for h in r["results"]] and len(r["results"]) == 5, r


def test_search_without_a_worker_is_a_quick_503(cluster, client, name):
    ds, _ = make_dataset(cluster, name, 1)
    client.queues.create(name)
    client.collections.create(name, DIM)
    t = time.monotonic()
    st, r, headers = rest(cluster, "POST", f"/v1/datasets/{ds}/search",
                          {"text": "anything", "queue": name, "collection": name, "timeout_ms": 800})
    assert st == 503, r
    assert time.monotonic() - t < 5
    assert r["error"]["code"] == "unavailable" and "orrery-embed-worker" in r["error"]["message"]
    assert int(headers["retry-after"]) >= 1
    # The query's job was cancelled: a worker starting later does not run it.
    jobs = client.jobs.list(queue=name).jobs
    assert jobs and all(j.state == "cancelled" for j in jobs)
    # No such queue at all: the same 503, at once.
    st, r, _ = rest(cluster, "POST", f"/v1/datasets/{ds}/search",
                    {"text": "anything", "queue": name + "x", "collection": name})
    assert st == 503 and "no embed queue" in r["error"]["message"], r


def test_search_refuses_bad_input(cluster, name):
    ds, _ = make_dataset(cluster, name, 1)
    path = f"/v1/datasets/{ds}/search"
    for body, code in [({"text": ""}, "invalid_text"), ({"text": "  "}, "invalid_text"),
                       ({"text": "x" * 20000}, "invalid_text"), ({"text": "a", "k": 0}, "invalid_k"),
                       ({"text": "a", "k": 101}, "invalid_k"), ({"text": "a", "timeout_ms": 0}, "invalid_timeout"),
                       ({"text": "a", "filter": [1]}, "invalid_filter"),
                       ({"text": "a", "filter": {"must": [{"key": "x", "range": {"gt": "a"}}]}}, "invalid_filter"),
                       ({"text": "a", "nope": 1}, None), ({"k": 3}, None)]:
        st, r, _ = rest(cluster, "POST", path, body)
        assert st == 400, (body, r)
        if code:
            assert r["error"]["code"] == code, (body, r)
    st, r, _ = rest(cluster, "POST", "/v1/datasets/nope-" + name + "/search", {"text": "a"})
    assert st == 404
    st, r, _ = rest(cluster, "POST", path, {"text": "a", "collection": "none" + name})
    assert st == 404 and "no embeddings" in r["error"]["message"], r


def test_pipeline_workflows_caption_then_embed(cluster, client, worker, name):
    ds, paths = make_dataset(cluster, name, 3)
    st, r, _ = rest(cluster, "POST", f"/v1/datasets/{ds}/pipeline",
                    {"steps": ["caption", "embed"], "provider": "local", "prompt": "Describe it.",
                     "queue": worker, "collection": name, "limit": 2})
    assert st == 202 and r["started"] == 2 and r["next"] == paths[1], r
    assert [w["path"] for w in r["workflows"]] == paths[:2]
    rest_r = json.loads(orreryctl(cluster, "--json", "datasets", "pipeline", ds, "--steps", "caption,embed",
                                  "--queue", worker, "--collection", name, "--after", r["next"]))
    assert [w["path"] for w in rest_r["workflows"]] == paths[2:], rest_r
    ids = [w["id"] for w in r["workflows"] + rest_r["workflows"]]
    wf = client.workflows.get(ids[0])
    assert wf.raw["input"] == {"dataset": ds, "path": paths[0]}
    steps = {s["name"]: s for s in wf.raw["steps"]}
    assert steps["caption"]["kind"] == "image.caption" and steps["caption"]["depends_on"] == []
    assert steps["embed"]["kind"] == "text.embed" and steps["embed"]["depends_on"] == ["caption"]
    assert steps["embed"]["state"] == "pending"
    # This test is the captioner (a worker claiming image.caption); the
    # real embed worker then embeds the caption it finds in deps.
    captions = {paths[0]: "a yellow submarine under the sea", paths[1]: "a field of sunflowers",
                paths[2]: "an old steam locomotive"}
    # No node of this cluster has --providers: the job says who can run it.
    queued = wait_for(lambda: [j for j in client.jobs.list(queue=worker).jobs if j.kind == "image.caption"])
    st, j, _ = rest(cluster, "GET", f"/v1/jobs/{queued[0].id}")
    assert st == 200 and "--providers" in (j.get("waiting") or ""), j
    seen = 0
    deadline = time.monotonic() + 30
    while seen < 3 and time.monotonic() < deadline:
        for job in client.jobs.claim(worker, "test-captioner", ["image.caption"], wait_s=1, max=3):
            p = job.params
            assert p["params"] == ({"provider": "local", "prompt": "Describe it."} if p["input"]["path"] in paths[:2]
                                   else {})
            client.jobs.complete(job.id, job.token, {"caption": captions[p["input"]["path"]]})
            seen += 1
    assert seen == 3
    for i in ids:
        w = wait_for(lambda: (x := client.workflows.get(i)).state != "running" and x, timeout=60)
        assert w.state == "succeeded", w.raw
    pt = client.collections.get_point(name, point_id(ds, paths[2]))
    assert pt.payload == {"dataset": ds, "path": paths[2], "caption": captions[paths[2]]}
    st, r, _ = rest(cluster, "POST", f"/v1/datasets/{ds}/search",
                    {"text": "train", "k": 1, "queue": worker, "collection": name})
    assert st == 200 and r["results"][0]["path"] == paths[2], r


def test_pipeline_refuses_bad_requests(cluster, name):
    ds, _ = make_dataset(cluster, name, 1)
    path = f"/v1/datasets/{ds}/pipeline"
    for body in [{"steps": []}, {"steps": ["resize"]}, {"steps": ["embed", "caption"]},
                 {"steps": ["caption", "caption"]}, {"steps": ["embed"], "prompt": "x"},
                 {"steps": ["caption"], "collection": "c"}, {"steps": ["caption"], "limit": 0},
                 {"steps": ["caption"], "limit": 1001}, {"steps": ["caption"], "provider": "a/b"},
                 {"steps": ["caption"], "prompt": "x" * 5000}]:
        st, r, _ = rest(cluster, "POST", path, body)
        assert st == 400 and r["error"]["code"] == "invalid_pipeline", (body, r)
    st, r, _ = rest(cluster, "POST", path, {"steps": ["caption"], "nope": 1})
    assert st == 400
    st, r, _ = rest(cluster, "POST", path, {"steps": ["caption"], "queue": "missing-" + name})
    assert st == 404, r
    st, r, _ = rest(cluster, "POST", f"/v1/datasets/no-{name}/pipeline", {"steps": ["caption"]})
    assert st == 404, r
    # A collection of another dimension is not the embed worker's.
    rest(cluster, "POST", "/v1/collections", {"name": "d3" + name, "dim": 3})
    st, r, _ = rest(cluster, "POST", path, {"steps": ["embed"], "collection": "d3" + name})
    assert st == 409, r


def test_items_by_path(cluster, name):
    ds, paths = make_dataset(cluster, name, 3)
    st, r, _ = rest(cluster, "GET", f"/v1/datasets/{ds}/items?path={paths[1]}")
    assert st == 200 and [i["path"] for i in r["items"]] == [paths[1]] and r["next"] is None
    st, r, _ = rest(cluster, "GET", f"/v1/datasets/{ds}/items?path={paths[1]}x")
    assert st == 200 and r["items"] == []
    st, r, _ = rest(cluster, "GET", f"/v1/datasets/{ds}/items?path={paths[1]}&limit=3")
    assert st == 400
