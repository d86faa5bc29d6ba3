"""The asyncio client: the same groups and calls as `Client`, as coroutines."""

import asyncio
import time
from typing import AsyncIterator, Optional

import grpc
import grpc.aio

from . import errors
from ._core import CHANNEL_OPTIONS, STUBS, Op, Settings, bind_async, env_settings, retryable
from ._proto.orrery.v1 import jobs_pb2
from .cluster import AuthOps, ClusterOps
from .jobs import JobsOps, QueuesOps
from .workflows import WorkflowsOps
from .kv import KvOps
from .policies import PoliciesOps
from .vectors import CollectionsOps
from .worker import AsyncWorkerMixin


def _error(err: grpc.RpcError) -> errors.OrreryError:
    if isinstance(err, grpc.aio.AioRpcError):
        md = {}
        for k, v in list(err.trailing_metadata() or ()) + list(err.initial_metadata() or ()):
            md.setdefault(k.lower(), v if isinstance(v, str) else v.decode("ascii", "replace"))
        return errors.from_grpc(err, md)
    return errors.from_grpc(err)


class _AsyncTransport:
    """As the sync transport, on grpc.aio channels (opened on first use,
    in the event loop that uses the client)."""

    def __init__(self, settings: Settings):
        self.s = settings
        self._channels = {}
        self._stubs = {}
        self._next = 0

    def _stub(self, i: int, service: str):
        key = (i, service)
        if key not in self._stubs:
            if i not in self._channels:
                target, creds = self.s.endpoints[i], self.s.credentials()
                self._channels[i] = (grpc.aio.secure_channel(target, creds, options=CHANNEL_OPTIONS) if creds
                                     else grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS))
            self._stubs[key] = STUBS[service](self._channels[i])
        return self._stubs[key]

    async def call(self, op: Op):
        retry = self.s.retry
        deadline = time.monotonic() + retry.max_total_s
        attempt = 0
        while True:
            i = self._next
            method = getattr(self._stub(i, op.service), op.method)
            try:
                resp = await method(op.request, timeout=self.s.timeout + op.extra_timeout,
                                    metadata=self.s.metadata)
            except grpc.RpcError as err:
                e = _error(err)
            else:
                return op.convert(resp)
            attempt += 1
            if not retryable(e, op) or attempt >= retry.max_attempts:
                raise e from None
            if self._next == i:
                self._next = (i + 1) % len(self.s.endpoints)
            delay = retry.delay(attempt, e, len(self.s.endpoints))
            if time.monotonic() + delay > deadline:
                raise e from None
            await asyncio.sleep(delay)

    async def stream(self, service: str, method: str, request, timeout: Optional[float]):
        call = getattr(self._stub(self._next, service), method)(request, timeout=timeout, metadata=self.s.metadata)
        try:
            async for msg in call:
                yield msg
        except grpc.RpcError as err:
            raise _error(err) from None
        finally:
            call.cancel()

    async def close(self):
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
        self._stubs.clear()


@bind_async
class AsyncKv(KvOps):
    pass


@bind_async
class AsyncClusterApi(ClusterOps):
    pass


@bind_async
class AsyncAuthApi(AuthOps):
    pass


@bind_async
class AsyncQueues(QueuesOps):
    pass


@bind_async
class AsyncWorkflows(WorkflowsOps):
    pass


@bind_async
class AsyncJobs(AsyncWorkerMixin, JobsOps):
    async def logs(self, id: str, attempt: Optional[int] = None, follow: bool = False,
                   timeout: Optional[float] = None) -> AsyncIterator[bytes]:
        """As `Client.jobs.logs`: `async for chunk in client.jobs.logs(id)`."""
        req = jobs_pb2.LogsRequest(id=id, attempt=attempt, follow=follow)
        if timeout is None and not follow:
            timeout = self._t.s.timeout
        async for chunk in self._t.stream("Jobs", "Logs", req, timeout):
            if chunk.data:
                yield chunk.data
            if chunk.end:
                return

    async def watch_events(self, since: str = "", poll_s: float = 1.0, limit: int = 0,
                           stop: Optional[asyncio.Event] = None) -> AsyncIterator[dict]:
        """As `Client.jobs.watch_events`."""
        while stop is None or not stop.is_set():
            page = await self.events(since, limit)
            for ev in page.events:
                yield ev
            since = page.cursor
            if not page.events:
                await asyncio.sleep(poll_s)


@bind_async
class AsyncCollections(CollectionsOps):
    pass


@bind_async
class AsyncPolicies(PoliciesOps):
    pass


class AsyncClient:
    """As `orrery.Client`, for asyncio: `await client.kv.put(...)`. Use it
    in one event loop; `await client.close()` (or `async with`) at the end."""

    def __init__(self, endpoints="127.0.0.1:17001", token: Optional[str] = None, ca_cert=None,
                 tls: Optional[bool] = None, timeout: float = 30.0, retry=None):
        self._t = _AsyncTransport(Settings(endpoints, token, ca_cert, tls, timeout, retry))
        self.kv = AsyncKv(self._t)
        self.cluster = AsyncClusterApi(self._t)
        self.auth = AsyncAuthApi(self._t)
        self.queues = AsyncQueues(self._t)
        self.jobs = AsyncJobs(self._t)
        self.workflows = AsyncWorkflows(self._t)
        self.collections = AsyncCollections(self._t)
        self.policies = AsyncPolicies(self._t)

    @classmethod
    def from_env(cls, endpoints=None, **kw) -> "AsyncClient":
        endpoints, kw = env_settings(endpoints, **kw)
        return cls(endpoints, **kw)

    @property
    def endpoints(self):
        return list(self._t.s.endpoints)

    async def close(self):
        await self._t.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
