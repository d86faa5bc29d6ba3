"""`client.queues` and `client.jobs`: job queues, jobs, external workers,
events and GPUs. What the sync and asyncio clients share; the worker loop,
log streams and event polling are in `worker.py`."""

import json
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ._core import Group, Op, op
from ._proto.orrery.v1 import jobs_pb2 as pb
from .types import CompleteResult, EventPage, Heartbeat, Job, JobPage, Queue, SubmitResult


def _err(e) -> Optional[Dict[str, str]]:
    return {"code": e.code, "message": e.message} if e.code or e.message else None


def _submit_pb(queue: str, kind: str, params: Any = None, priority: int = 0, run_at_ms: Optional[int] = None,
               delay_ms: Optional[int] = None, gpus: int = 0, gpu_memory_mb: int = 0, cpus: int = 0,
               shared_gpu: bool = False, dedupe_key: Optional[str] = None,
               submitted_by: Optional[str] = None) -> pb.SubmitRequest:
    return pb.SubmitRequest(queue=queue, kind=kind, params_json=json.dumps(params) if params is not None else "",
                            priority=priority, run_at_ms=run_at_ms, delay_ms=delay_ms, gpus=gpus,
                            gpu_memory_mb=gpu_memory_mb, cpus=cpus, shared_gpu=shared_gpu,
                            dedupe_key=dedupe_key, submitted_by=submitted_by)


def _complete_pb(id: str, token: int, result: Any = None) -> pb.CompleteRequest:
    return pb.CompleteRequest(id=id, token=token, result_json=json.dumps(result) if result is not None else "")


class QueuesOps(Group):
    @op
    def create(self, name: str, partitions: Optional[int] = None, lease_s: Optional[int] = None,
               max_attempts: Optional[int] = None, backoff_initial_ms: Optional[int] = None,
               backoff_multiplier: Optional[float] = None, backoff_max_ms: Optional[int] = None,
               concurrency_limit: Optional[int] = None) -> Queue:
        """A new queue; unset settings take the server's defaults
        (lease 30 s, 3 attempts, backoff 1 s x 2 up to 60 s)."""
        req = pb.CreateQueueRequest(name=name, partitions=partitions, lease_s=lease_s, max_attempts=max_attempts,
                                    backoff_initial_ms=backoff_initial_ms, backoff_multiplier=backoff_multiplier,
                                    backoff_max_ms=backoff_max_ms, concurrency_limit=concurrency_limit)
        return Op("Jobs", "CreateQueue", req, Queue.from_pb, idempotent=False)

    @op
    def list(self) -> List[Queue]:
        return Op("Jobs", "ListQueues", pb.ListQueuesRequest(), lambda r: [Queue.from_pb(q) for q in r.queues])

    @op
    def get(self, name: str) -> Queue:
        """The queue with `counts` per state."""
        return Op("Jobs", "GetQueue", pb.GetQueueRequest(name=name), Queue.from_pb)

    @op
    def delete(self, name: str) -> None:
        return Op("Jobs", "DeleteQueue", pb.DeleteQueueRequest(name=name), lambda r: None, idempotent=False)


class JobsOps(Group):
    @op
    def submit(self, queue: str, kind: str, params: Any = None, *, priority: int = 0,
               run_at_ms: Optional[int] = None, delay_ms: Optional[int] = None, gpus: int = 0,
               gpu_memory_mb: int = 0, cpus: int = 0, shared_gpu: bool = False,
               dedupe_key: Optional[str] = None, submitted_by: Optional[str] = None) -> str:
        """Enqueues a job; returns its id. With `dedupe_key`, a key already
        used in the queue returns that job's id (and the call is retried
        safely after an unknown outcome)."""
        req = _submit_pb(queue, kind, params, priority, run_at_ms, delay_ms, gpus, gpu_memory_mb, cpus,
                         shared_gpu, dedupe_key, submitted_by)
        return Op("Jobs", "Submit", req, lambda r: r.job.id, idempotent=dedupe_key is not None)

    @op
    def submit_batch(self, jobs: Iterable[Dict[str, Any]]) -> List[SubmitResult]:
        """Many jobs at once, each a dict of `submit`'s arguments (queue,
        kind, params, ...). One result per job, in order."""
        reqs = [_submit_pb(**j) for j in jobs]
        return Op("Jobs", "SubmitBatch", pb.SubmitBatchRequest(jobs=reqs), lambda r: [
            SubmitResult(Job.from_pb(i.job) if i.HasField("job") else None, i.created,
                         _err(i.error) if i.HasField("error") else None) for i in r.items],
                  idempotent=all(r.HasField("dedupe_key") for r in reqs))

    @op
    def get(self, id: str) -> Job:
        return Op("Jobs", "GetJob", pb.GetJobRequest(id=id), Job.from_pb)

    @op
    def list(self, queue: Optional[str] = None, state: Optional[str] = None, limit: int = 0,
             cursor: Optional[str] = None) -> JobPage:
        """Jobs in id (submission) order; pass `next_cursor` back as `cursor`."""
        req = pb.ListJobsRequest(queue=queue, state=state, limit=limit, cursor=cursor)
        return Op("Jobs", "ListJobs", req, lambda r: JobPage(
            [Job.from_pb(j) for j in r.jobs], r.next_cursor if r.HasField("next_cursor") else None))

    @op
    def cancel(self, id: str) -> Job:
        """A queued job is cancelled at once; a running one gets
        `cancel_requested` (its worker's next heartbeat says so)."""
        return Op("Jobs", "Cancel", pb.CancelRequest(id=id), Job.from_pb, idempotent=False)

    @op
    def runs(self, id: str) -> List[Dict[str, Any]]:
        """The job's attempts: node, worker, times, outcome, exit code."""
        return Op("Jobs", "Runs", pb.GetJobRequest(id=id), lambda r: [json.loads(x) for x in r.runs_json])

    @op
    def claim(self, queue: str, worker_id: str, kinds: Sequence[str] = (), lease_s: Optional[int] = None,
              wait_s: float = 0.0, max: int = 1) -> List[Job]:
        """Claims up to `max` jobs with a lease (long-polls up to `wait_s`
        seconds); `job.token` is each lease's token. Empty: nothing to do."""
        req = pb.ClaimJobsRequest(queue=queue, worker_id=worker_id, kinds=list(kinds), lease_s=lease_s,
                                  wait_s=wait_s, max=max)
        # Not repeated after an unknown outcome: a claim that took comes
        # back when its lease expires.
        return Op("Jobs", "Claim", req, lambda r: [Job.from_pb(j) for j in r.jobs], idempotent=False,
                  extra_timeout=wait_s)

    @op
    def heartbeat(self, id: str, token: int) -> Heartbeat:
        """Extends the lease by its length; `.cancelled`: stop the work."""
        return Op("Jobs", "Heartbeat", pb.HeartbeatRequest(id=id, token=token),
                  lambda r: Heartbeat(r.cancelled, r.lease_expires_ms))

    @op
    def complete(self, id: str, token: int, result: Any = None) -> Job:
        """The job succeeded with `result` (JSON-able). Conflict when the
        lease is no longer this token's (expired, or the job ended)."""
        return Op("Jobs", "Complete", _complete_pb(id, token, result), Job.from_pb, idempotent=False)

    @op
    def complete_batch(self, completions: Iterable[Dict[str, Any]]) -> List[CompleteResult]:
        """Completes many jobs ({"id", "token", "result"?} each); one
        result per completion, in order (a stale token fails only its own)."""
        reqs = [_complete_pb(c["id"], c["token"], c.get("result")) for c in completions]
        return Op("Jobs", "CompleteBatch", pb.CompleteBatchRequest(completions=reqs), lambda r: [
            CompleteResult(i.id, i.state, _err(i.error) if i.HasField("error") else None) for i in r.items],
                  idempotent=False)

    @op
    def fail(self, id: str, token: int, error: str = "", retry: bool = True) -> Job:
        """The attempt failed: queued again with backoff while attempts
        remain (unless retry=False), else `dead`."""
        return Op("Jobs", "Fail", pb.FailRequest(id=id, token=token, error=error, retry=retry), Job.from_pb,
                  idempotent=False)

    @op
    def events(self, since: str = "", limit: int = 0) -> EventPage:
        """Job events after the cursor `since` ("" = the oldest kept)."""
        return Op("Jobs", "Events", pb.EventsRequest(since=since, limit=limit),
                  lambda r: EventPage([json.loads(e) for e in r.events_json], r.cursor))

    @op
    def gpus(self) -> Dict[str, Any]:
        """{"gpus": [...], "nodes": [...]} as each node last reported them."""
        return Op("Jobs", "Gpus", pb.GpusRequest(), lambda r: json.loads(r.json))
