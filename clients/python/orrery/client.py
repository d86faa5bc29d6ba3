"""The synchronous client."""

import threading
import time
from typing import Iterator, Optional

import grpc

from . import errors
from ._core import STUBS, CHANNEL_OPTIONS, Op, Settings, bind_sync, env_settings, retryable
from ._proto.orrery.v1 import jobs_pb2
from .cluster import AuthOps, ClusterOps
from .jobs import JobsOps, QueuesOps
from .workflows import WorkflowsOps
from .kv import KvOps
from .policies import PoliciesOps
from .vectors import CollectionsOps
from .worker import SyncWorkerMixin


class _Transport:
    """Channels to every endpoint (opened on first use) and the retry loop.
    Thread-safe: the worker loop heartbeats from a thread."""

    def __init__(self, settings: Settings):
        self.s = settings
        self._channels = {}
        self._stubs = {}
        self._next = 0
        self._lock = threading.Lock()

    def _stub(self, i: int, service: str):
        with self._lock:
            key = (i, service)
            if key not in self._stubs:
                if i not in self._channels:
                    target, creds = self.s.endpoints[i], self.s.credentials()
                    self._channels[i] = (grpc.secure_channel(target, creds, options=CHANNEL_OPTIONS) if creds
                                         else grpc.insecure_channel(target, options=CHANNEL_OPTIONS))
                self._stubs[key] = STUBS[service](self._channels[i])
            return self._stubs[key]

    def _rotate(self, failed: int):
        with self._lock:
            if self._next == failed:
                self._next = (failed + 1) % len(self.s.endpoints)

    def call(self, op: Op):
        retry = self.s.retry
        deadline = time.monotonic() + retry.max_total_s
        attempt = 0
        while True:
            i = self._next
            method = getattr(self._stub(i, op.service), op.method)
            try:
                resp = method(op.request, timeout=self.s.timeout + op.extra_timeout, metadata=self.s.metadata)
            except grpc.RpcError as err:
                e = errors.from_grpc(err)
            else:
                return op.convert(resp)
            attempt += 1
            if not retryable(e, op) or attempt >= retry.max_attempts:
                raise e from None
            # Any node serves any request: the next attempt goes to the next
            # endpoint, which also gets around a node cut off from a quorum.
            self._rotate(i)
            delay = retry.delay(attempt, e, len(self.s.endpoints))
            if time.monotonic() + delay > deadline:
                raise e from None
            time.sleep(delay)

    def stream(self, service: str, method: str, request, timeout: Optional[float]) -> Iterator:
        """A server stream from the current endpoint (not retried: the
        caller sees where it stopped)."""
        call = getattr(self._stub(self._next, service), method)(request, timeout=timeout, metadata=self.s.metadata)
        try:
            yield from call
        except grpc.RpcError as err:
            raise errors.from_grpc(err) from None
        finally:
            call.cancel()

    def close(self):
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
            self._stubs.clear()


@bind_sync
class Kv(KvOps):
    pass


@bind_sync
class ClusterApi(ClusterOps):
    pass


@bind_sync
class AuthApi(AuthOps):
    pass


@bind_sync
class Queues(QueuesOps):
    pass


@bind_sync
class Workflows(WorkflowsOps):
    pass


@bind_sync
class Jobs(SyncWorkerMixin, JobsOps):
    def logs(self, id: str, attempt: Optional[int] = None, follow: bool = False,
             timeout: Optional[float] = None) -> Iterator[bytes]:
        """The output of a run (default: the last attempt) in chunks; with
        follow, until the run ends. Only runs on the nodes' own engines have
        logs (external workers' do not)."""
        req = jobs_pb2.LogsRequest(id=id, attempt=attempt, follow=follow)
        if timeout is None and not follow:
            timeout = self._t.s.timeout
        for chunk in self._t.stream("Jobs", "Logs", req, timeout):
            if chunk.data:
                yield chunk.data
            if chunk.end:
                return

    def watch_events(self, since: str = "", poll_s: float = 1.0, limit: int = 0,
                     stop: Optional[threading.Event] = None) -> Iterator[dict]:
        """Job events as they happen (polls `events` every `poll_s` when
        there are none). To resume exactly after a restart, page with `events`
        and keep its `cursor`."""
        while stop is None or not stop.is_set():
            page = self.events(since, limit)
            for ev in page.events:
                yield ev
            since = page.cursor
            if not page.events:
                if stop is not None:
                    stop.wait(poll_s)
                else:
                    time.sleep(poll_s)


@bind_sync
class Collections(CollectionsOps):
    pass


@bind_sync
class Policies(PoliciesOps):
    pass


class Client:
    """A client of an Orrery cluster over gRPC.

    `endpoints`: one "host:port", a list, or a comma-separated string; any
    node serves any call, and calls fail over between them. `token`: a
    bearer token (`orr_...`); `ca_cert`: the cluster CA (a path, or PEM),
    which turns on TLS. Both may be left out for `--insecure` clusters.
    `timeout`: seconds per call; `retry`: see `orrery.Retry`.
    """

    def __init__(self, endpoints="127.0.0.1:17001", token: Optional[str] = None, ca_cert=None,
                 tls: Optional[bool] = None, timeout: float = 30.0, retry=None):
        self._t = _Transport(Settings(endpoints, token, ca_cert, tls, timeout, retry))
        self.kv = Kv(self._t)
        self.cluster = ClusterApi(self._t)
        self.auth = AuthApi(self._t)
        self.queues = Queues(self._t)
        self.jobs = Jobs(self._t)
        self.workflows = Workflows(self._t)
        self.collections = Collections(self._t)
        self.policies = Policies(self._t)

    @classmethod
    def from_env(cls, endpoints=None, **kw) -> "Client":
        """From ORRERY_ENDPOINT (default 127.0.0.1:17001), ORRERY_TOKEN and ORRERY_CA_CERT."""
        endpoints, kw = env_settings(endpoints, **kw)
        return cls(endpoints, **kw)

    @property
    def endpoints(self):
        return list(self._t.s.endpoints)

    def close(self):
        self._t.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
