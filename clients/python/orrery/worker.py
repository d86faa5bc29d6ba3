"""The worker loop (`client.jobs.work`): claim a job with a lease, keep the
lease alive with heartbeats while the caller works on it, then complete or
fail it."""

import asyncio
import os
import socket
import threading
import uuid
from typing import Any, AsyncIterator, Iterator, Optional, Sequence

from . import errors
from .types import Job


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _heartbeat_every(job: Job, lease_s: Optional[int]) -> float:
    # A third of the lease: two heartbeats may be lost before it expires.
    return max(0.2, (lease_s or job.raw.get("lease_s") or 30) / 3)


class _WorkItemBase:
    def __init__(self, jobs, job: Job):
        self._jobs = jobs
        self.job = job
        #: The job's next heartbeat said it was cancelled: stop and call `fail`.
        self.cancelled = False
        #: A heartbeat was refused (the lease expired and the job went to
        #: another worker, or it ended): this worker's completion will be too.
        self.lease_lost = False
        self.done = False

    id = property(lambda self: self.job.id)
    kind = property(lambda self: self.job.kind)
    params = property(lambda self: self.job.params)
    token = property(lambda self: self.job.token)

    def _beat_result(self, hb=None, err=None):
        if hb is not None and hb.cancelled:
            self.cancelled = True
        if isinstance(err, (errors.Conflict, errors.NotFound)):
            self.lease_lost = True


class WorkItem(_WorkItemBase):
    """A claimed job in the sync worker loop: work on `params`, then
    `complete(result)` or `fail(error)`. Left alone, the loop completes it
    with no result when the next job is asked for."""

    def heartbeat(self):
        try:
            hb = self._jobs.heartbeat(self.id, self.token)
        except errors.OrreryError as e:
            self._beat_result(err=e)
            raise
        self._beat_result(hb)
        return hb

    def complete(self, result: Any = None) -> Job:
        self.done = True
        return self._jobs.complete(self.id, self.token, result)

    def fail(self, error: str = "", retry: bool = True) -> Job:
        self.done = True
        return self._jobs.fail(self.id, self.token, error, retry)


class AsyncWorkItem(_WorkItemBase):
    """As `WorkItem`, for the asyncio client (await its methods)."""

    async def heartbeat(self):
        try:
            hb = await self._jobs.heartbeat(self.id, self.token)
        except errors.OrreryError as e:
            self._beat_result(err=e)
            raise
        self._beat_result(hb)
        return hb

    async def complete(self, result: Any = None) -> Job:
        self.done = True
        return await self._jobs.complete(self.id, self.token, result)

    async def fail(self, error: str = "", retry: bool = True) -> Job:
        self.done = True
        return await self._jobs.fail(self.id, self.token, error, retry)


_ABANDONED = "the worker loop stopped before the job was completed"


class SyncWorkerMixin:
    def work(self, queue: str, kinds: Sequence[str] = (), worker_id: Optional[str] = None,
             lease_s: Optional[int] = None, wait_s: float = 5.0, heartbeat: bool = True,
             stop: Optional[threading.Event] = None) -> Iterator[WorkItem]:
        """Yields jobs of `queue` (of `kinds`, if given) one at a time, each
        claimed with a lease of `lease_s` (default: the queue's) that a
        thread renews every third of it while the caller works (heartbeat=False:
        no renewal). A job the caller neither completes nor fails is
        completed when the next is asked for; one left when the loop is
        stopped (break, an exception) is failed to be retried. Runs until
        `stop` is set (checked between claims, every `wait_s` at most)."""
        worker_id = worker_id or default_worker_id()
        while stop is None or not stop.is_set():
            claimed = self.claim(queue, worker_id, kinds, lease_s=lease_s, wait_s=wait_s)
            if not claimed:
                continue
            item = WorkItem(self, claimed[0])
            done = threading.Event()
            if heartbeat:
                threading.Thread(target=self._beat, args=(item, lease_s, done), daemon=True).start()
            try:
                yield item
            except GeneratorExit:
                if not item.done:
                    self._abandon(item)
                raise
            finally:
                done.set()
            if not item.done:
                item.complete()

    @staticmethod
    def _beat(item: WorkItem, lease_s, done: threading.Event):
        every = _heartbeat_every(item.job, lease_s)
        while not done.wait(every) and not item.done:
            try:
                item.heartbeat()
            except errors.OrreryError:
                if item.lease_lost:
                    return  # nothing left to renew
                # Unavailable after the retries: try again next period.

    @staticmethod
    def _abandon(item: WorkItem):
        try:
            item.fail(_ABANDONED, retry=True)
        except errors.OrreryError:
            pass  # the lease then expires and the job is claimed again


class AsyncWorkerMixin:
    async def work(self, queue: str, kinds: Sequence[str] = (), worker_id: Optional[str] = None,
                   lease_s: Optional[int] = None, wait_s: float = 5.0, heartbeat: bool = True,
                   stop: Optional[asyncio.Event] = None) -> AsyncIterator[AsyncWorkItem]:
        """As the sync client's `work`, heartbeating from an asyncio task:
        `async for job in client.jobs.work(...)`."""
        worker_id = worker_id or default_worker_id()
        while stop is None or not stop.is_set():
            claimed = await self.claim(queue, worker_id, kinds, lease_s=lease_s, wait_s=wait_s)
            if not claimed:
                continue
            item = AsyncWorkItem(self, claimed[0])
            beat = asyncio.ensure_future(self._beat(item, lease_s)) if heartbeat else None
            try:
                yield item
            except (GeneratorExit, asyncio.CancelledError):
                if not item.done:
                    await self._abandon(item)
                raise
            finally:
                if beat is not None:
                    beat.cancel()
            if not item.done:
                await item.complete()

    @staticmethod
    async def _beat(item: AsyncWorkItem, lease_s):
        every = _heartbeat_every(item.job, lease_s)
        while not item.done:
            await asyncio.sleep(every)
            if item.done:
                return
            try:
                await item.heartbeat()
            except errors.OrreryError:
                if item.lease_lost:
                    return

    @staticmethod
    async def _abandon(item: AsyncWorkItem):
        try:
            await item.fail(_ABANDONED, retry=True)
        except errors.OrreryError:
            pass
