"""The captioning pipeline end to end (issue 27's acceptance): a dataset of
generated images, thumbnailed by the nodes' engine, captioned by the nodes'
`image.caption` through a stand-in model provider (an external HTTP server
speaking the OpenAI-compatible API, tests/provider_standin.py, which names
the colour of the image it received), embedded by the real MiniLM worker,
then found by a text search for a caption's words.

The cluster is this module's own (3 secure nodes): its nodes read a
providers file naming the stand-in, and allow 127.0.0.1 as an outbound
destination (the SSRF guard refuses loopback otherwise)."""

import os
import subprocess
import sys
import threading

import pytest

import orrery
from conftest import REPO, Cluster
from dataset_rest import png, rest, wait_for, DATASETS_VERSION
from orrery.embed_worker import EmbedWorker, Rest, point_id
from orrery.minilm import MiniLM

KEY = "standin-secret-key"
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
           "yellow": (255, 255, 0), "white": (255, 255, 255), "black": (0, 0, 0)}


@pytest.fixture(scope="module")
def standin():
    p = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "provider_standin.py")],
                         env=dict(os.environ, STANDIN_KEY=KEY), stdout=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline().strip())
        yield port
    finally:
        p.terminate()
        p.wait(10)


@pytest.fixture(scope="module")
def captioning(standin):
    c = Cluster()
    providers = os.path.join(c.dir, "providers.toml")
    with open(providers, "w") as f:
        f.write(f'''[[provider]]
name = "standin"
kind = "openai"
base_url = "http://127.0.0.1:{standin}/ok/v1"
model = "stand-in-vl"
api_key_env = "STANDIN_KEY"
''')
    c.env.update(ORRERY_PROVIDERS=providers, ORRERY_HTTP_SOURCES_ALLOW="127.0.0.1", STANDIN_KEY=KEY)
    try:
        c.up()
        yield c
    finally:
        c.down()


def test_images_captioned_by_a_provider_are_found_by_text(captioning, standin):
    cluster, name = captioning, "photos"
    wait_for(lambda: rest(cluster, "GET", "/v1/cluster/version")[1]["active"] >= DATASETS_VERSION, timeout=60)
    # Two directories holding files of the same names: their thumbnails
    # must not collide.
    paths = {}
    for i, (colour, rgb) in enumerate(COLOURS.items()):
        sub = "a" if i % 2 == 0 else "b"
        d = os.path.join(cluster.fs_root, name, sub)
        os.makedirs(d, exist_ok=True)
        fname = f"img{i // 2}.png"
        with open(os.path.join(d, fname), "wb") as f:
            f.write(png(64 + i, 48, rgb))
        paths[colour] = f"{name}/{sub}/{fname}"
    st, r, _ = rest(cluster, "POST", "/v1/datasets", {"name": name, "path": name, "glob": "**/*.png"})
    assert st == 201, r
    ds = wait_for(lambda: (x := rest(cluster, "GET", f"/v1/datasets/{name}")[1])["scan"]["state"] != "running"
                  and x, timeout=60)
    assert ds["scan"]["state"] == "succeeded" and ds["items"] == len(COLOURS), ds

    with orrery.Client(cluster.endpoints, token=cluster.token, ca_cert=cluster.ca) as client:
        stop = threading.Event()
        worker = EmbedWorker(client, Rest(cluster.endpoints, cluster.token, cluster.ca), MiniLM())
        t = threading.Thread(target=worker.run, kwargs={"queue": "pipeline", "stop": stop, "wait_s": 0.5},
                             daemon=True)
        try:
            st, r, _ = rest(cluster, "POST", f"/v1/datasets/{name}/pipeline",
                            {"steps": ["thumbnail", "caption", "embed"], "provider": "standin", "max_side": 16})
            assert st == 202 and r["started"] == len(COLOURS) and r["queue"] == "pipeline", r
            t.start()
            for w in r["workflows"]:
                wf = wait_for(lambda: (x := client.workflows.get(w["id"])).state != "running" and x, timeout=120)
                assert wf.state == "succeeded", wf.raw

            st, items, _ = rest(cluster, "GET", f"/v1/datasets/{name}/items")
            by_path = {it["path"]: it for it in items["items"]}
            thumbs = set()
            for colour, path in paths.items():
                it = by_path[path]
                # The caption is what the stand-in saw: the image (its
                # thumbnail) went over the wire to the provider.
                assert it["caption"] == f"a {colour} square", it
                assert it["thumbnail"] and it["thumbnail"].startswith(f"thumbnails/{name}/{path.rsplit('/', 1)[0]}/")
                assert os.path.getsize(os.path.join(cluster.fs_root, it["thumbnail"])) > 0
                thumbs.add(it["thumbnail"])
                assert it["embedding_id"] == point_id(name, path)
            assert len(thumbs) == len(COLOURS)

            for query, colour in [("blue", "blue"), ("something yellow", "yellow"), ("a green shape", "green")]:
                st, r, _ = rest(cluster, "POST", f"/v1/datasets/{name}/search", {"text": query, "k": 3})
                assert st == 200, r
                top = [h["path"] for h in r["results"]]
                assert paths[colour] in top, (query, r)
        finally:
            stop.set()
            t.join(10)
