"""REST helpers for the dataset tests (the Python client speaks gRPC, and
datasets are REST-only): calls with the cluster's CA and root token, and
datasets of generated PNG images under the cluster's --fs-root."""

import json
import os
import ssl
import struct
import time
import urllib.error
import urllib.request
import zlib


def rest(cluster, method, path, body=None, timeout=30):
    """(status, JSON body, headers with lower-case names) of one request to node 1."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"https://{cluster.endpoint(1)}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {cluster.token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    ctx = ssl.create_default_context(cafile=cluster.ca)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, json.loads(r.read() or b"null"), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), {k.lower(): v for k, v in e.headers.items()}


def wait_for(pred, timeout=20.0, every=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("timed out waiting")


def png(width, height, rgb):
    """A solid-colour RGB PNG."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# Datasets need cluster version 8; a fresh cluster advances to its newest
# version by itself, a moment after it formed.
DATASETS_VERSION = 8


def make_dataset(cluster, name, n):
    """Dataset `name` of `n` generated images, scanned; returns (name, the
    items' paths in path order)."""
    wait_for(lambda: rest(cluster, "GET", "/v1/cluster/version")[1]["active"] >= DATASETS_VERSION, timeout=60)
    d = os.path.join(cluster.fs_root, name)
    os.makedirs(d)
    for i in range(n):
        with open(os.path.join(d, f"img{i:02d}.png"), "wb") as f:
            f.write(png(4 + i, 3, (i * 40 % 256, 200 - i * 30 % 200, 7 * i % 256)))
    st, r, _ = rest(cluster, "POST", "/v1/datasets", {"name": name, "path": name, "glob": "*.png"})
    assert st == 201, r
    done = wait_for(lambda: (x := rest(cluster, "GET", f"/v1/datasets/{name}")[1])["scan"]["state"] != "running"
                    and x, timeout=60)
    assert done["scan"]["state"] == "succeeded" and done["items"] == n, done
    return name, [f"{name}/img{i:02d}.png" for i in range(n)]
