"""What the sync and asyncio clients share: call descriptions (`Op`),
endpoints, channel settings and the retry rules."""

import functools
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Union

import grpc

from . import errors
from ._proto.orrery.v1 import (
    auth_pb2_grpc,
    cluster_pb2_grpc,
    jobs_pb2_grpc,
    kv_pb2_grpc,
    policies_pb2_grpc,
    vectors_pb2_grpc,
)

STUBS = {
    "Kv": kv_pb2_grpc.KvStub,
    "Cluster": cluster_pb2_grpc.ClusterStub,
    "Auth": auth_pb2_grpc.AuthStub,
    "Jobs": jobs_pb2_grpc.JobsStub,
    "Vectors": vectors_pb2_grpc.VectorsStub,
    "Policies": policies_pb2_grpc.PoliciesStub,
}

# The server takes and returns large messages (values up to 16 MiB, vector
# batches, search results); gRPC's default 4 MiB would refuse them here.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.max_send_message_length", 256 << 20),
    # Reconnect soon after a node comes back (gRPC's default backoff grows
    # to 120 s), since the client fails over between nodes itself.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


@dataclass
class Retry:
    """How UNAVAILABLE (503) answers and unreachable nodes are retried:
    at most `max_attempts` tries within `max_total_s` seconds, waiting what
    the server's `retry-after` says, else an exponential backoff from
    `backoff_initial_s` up to `backoff_max_s`. Each retry goes to the next
    endpoint. `Retry(max_attempts=1)` turns retries off."""

    max_attempts: int = 10
    max_total_s: float = 30.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 2.0

    def delay(self, attempt: int, e: errors.OrreryError, endpoints: int) -> float:
        if e.retry_after is not None:
            return e.retry_after
        if e.transport and attempt < endpoints:
            return 0.0  # first round: just try the next node
        d = min(self.backoff_max_s, self.backoff_initial_s * (2 ** (attempt - 1)))
        return d * (0.5 + random.random() / 2)


@dataclass
class Op:
    """One unary call: the service and method, the request, how to turn
    the response into the result, and whether it may be repeated after an
    `outcome_unknown` (a write that may or may not have been applied)."""

    service: str
    method: str
    request: Any
    convert: Callable[[Any], Any] = lambda r: r
    idempotent: bool = True
    #: Seconds added to the client's timeout (long polls).
    extra_timeout: float = 0.0


def retryable(e: errors.OrreryError, op: Op) -> bool:
    if isinstance(e, errors.OutcomeUnknown):
        return op.idempotent
    return isinstance(e, errors.Unavailable)


def op(fn):
    """Marks a group method that returns an `Op`: the sync client runs it,
    the asyncio client awaits it (see `bind_sync` / `bind_async`)."""
    fn._orrery_op = True
    return fn


def _ops_of(ops_cls):
    seen = {}
    for klass in reversed(ops_cls.__mro__):
        for name, fn in vars(klass).items():
            if getattr(fn, "_orrery_op", False):
                seen[name] = fn
    return seen


def bind_sync(cls):
    """Class decorator: each op method of the class (inherited from its
    `*Ops` base) runs its call and returns the result."""
    for name, fn in _ops_of(cls).items():
        def make(fn):
            @functools.wraps(fn)
            def method(self, *a, **kw):
                return self._t.call(fn(self, *a, **kw))
            return method
        setattr(cls, name, make(fn))
    return cls


def bind_async(cls):
    """As `bind_sync`, with coroutine methods (for the asyncio client)."""
    for name, fn in _ops_of(cls).items():
        def make(fn):
            @functools.wraps(fn)
            async def method(self, *a, **kw):
                return await self._t.call(fn(self, *a, **kw))
            return method
        setattr(cls, name, make(fn))
    return cls


class Group:
    """A call group (`client.kv`, `client.jobs`, ...) over a transport."""

    def __init__(self, transport):
        self._t = transport


def parse_endpoints(endpoints: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    out = []
    for e in endpoints:
        e = e.strip()
        for scheme in ("https://", "http://"):
            if e.startswith(scheme):
                e = e[len(scheme):]
        if e:
            out.append(e.rstrip("/"))
    if not out:
        raise ValueError("no endpoint given")
    return out


def read_ca(ca_cert: Union[None, str, bytes, os.PathLike]) -> Optional[bytes]:
    """PEM bytes from a path, or PEM given as bytes / text."""
    if ca_cert is None:
        return None
    if isinstance(ca_cert, bytes):
        return ca_cert
    if isinstance(ca_cert, str) and "-----BEGIN" in ca_cert:
        return ca_cert.encode()
    with open(ca_cert, "rb") as f:
        return f.read()


class Settings:
    """Connection settings, shared by the sync and asyncio transports."""

    def __init__(self, endpoints, token=None, ca_cert=None, tls=None, timeout=30.0, retry=None):
        self.endpoints = parse_endpoints(endpoints)
        self.ca = read_ca(ca_cert)
        self.tls = self.ca is not None if tls is None else tls
        self.timeout = timeout
        self.retry = retry or Retry()
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def credentials(self):
        return grpc.ssl_channel_credentials(root_certificates=self.ca) if self.tls else None


def env_settings(endpoints=None, **kw):
    """Keyword arguments from ORRERY_ENDPOINT, ORRERY_TOKEN and ORRERY_CA_CERT."""
    endpoints = endpoints or os.environ.get("ORRERY_ENDPOINT") or "127.0.0.1:17001"
    kw.setdefault("token", os.environ.get("ORRERY_TOKEN") or None)
    kw.setdefault("ca_cert", os.environ.get("ORRERY_CA_CERT") or None)
    return endpoints, kw
