"""`client.workflows`: DAGs of step jobs (docs/api.md, "Workflows"). What
the sync and asyncio clients share."""

import json
from typing import Any, Dict, Iterable

from ._core import Group, Op, op
from ._proto.orrery.v1 import jobs_pb2 as pb
from .types import Workflow

_STEP_KEYS = {"name", "kind", "params", "depends_on", "for_each", "on_failure", "priority", "resources"}
_RESOURCE_KEYS = {"gpus", "gpu_memory_mb", "cpus", "shared_gpu"}


def _step_pb(s: Dict[str, Any]) -> pb.WorkflowStep:
    unknown = set(s) - _STEP_KEYS
    if unknown:
        raise ValueError(f"step {s.get('name')!r}: unknown fields {sorted(unknown)}")
    r = s.get("resources") or {}
    unknown = set(r) - _RESOURCE_KEYS
    if unknown:
        raise ValueError(f"step {s.get('name')!r}: unknown resources {sorted(unknown)}")
    params = s.get("params")
    return pb.WorkflowStep(
        name=s["name"], kind=s["kind"], params_json=json.dumps(params) if params is not None else "",
        depends_on=list(s.get("depends_on") or []), for_each=s.get("for_each"),
        on_failure=s.get("on_failure"), priority=s.get("priority") or 0, gpus=r.get("gpus", 0),
        gpu_memory_mb=r.get("gpu_memory_mb", 0), cpus=r.get("cpus", 0), shared_gpu=r.get("shared_gpu", False))


class WorkflowsOps(Group):
    @op
    def start(self, queue: str, steps: Iterable[Dict[str, Any]], input: Any = None) -> Workflow:
        """Starts a workflow: `steps` are dicts as in the REST body (name,
        kind, params, depends_on, for_each, on_failure, priority,
        resources). Steps without dependencies are claimable at once; each
        other step's job is created when its dependencies succeeded and gets
        their results in `params["deps"]`. Not repeated after an unknown
        outcome (it would start a second workflow)."""
        req = pb.StartWorkflowRequest(queue=queue, steps=[_step_pb(s) for s in steps],
                                      input_json=json.dumps(input) if input is not None else "")
        return Op("Jobs", "StartWorkflow", req, Workflow.from_pb, idempotent=False)

    @op
    def get(self, id: str) -> Workflow:
        """The workflow with each step's state, jobs and result."""
        return Op("Jobs", "GetWorkflow", pb.GetWorkflowRequest(id=id), Workflow.from_pb)

    @op
    def cancel(self, id: str) -> Workflow:
        """Cancels it: pending steps are never created, queued jobs are
        cancelled, running ones asked to stop. Cancelling again answers the
        same, so it is repeated after an unknown outcome; a workflow that
        already succeeded or failed raises `Conflict`."""
        return Op("Jobs", "CancelWorkflow", pb.CancelWorkflowRequest(id=id), Workflow.from_pb)
