"""`client.policies`: versioned decision graphs, runs and data sources.
Graphs, inputs, outputs and traces are JSON-able Python values."""

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._core import Group, Op, op
from ._proto.orrery.v1 import policies_pb2 as pb
from .types import BatchResult, Policy, PolicyBatch, PolicyRun, PolicyVersion, RunPage, termination_of


class PoliciesOps(Group):
    @op
    def create(self, name: str, description: str = "") -> Policy:
        return Op("Policies", "CreatePolicy", pb.CreatePolicyRequest(name=name, description=description),
                  Policy.from_pb, idempotent=False)

    @op
    def list(self) -> List[Policy]:
        return Op("Policies", "ListPolicies", pb.ListPoliciesRequest(),
                  lambda r: [Policy.from_pb(p) for p in r.policies])

    @op
    def get(self, policy: str) -> Policy:
        """By id or name (as everywhere `policy` is taken)."""
        return Op("Policies", "GetPolicy", pb.PolicyRef(id=policy), Policy.from_pb)

    @op
    def update(self, policy: str, description: Optional[str] = None,
               allocation: Optional[Sequence[Tuple[int, int]]] = None) -> Policy:
        """Changes the description and/or the allocation [(version, weight)]."""
        req = pb.UpdatePolicyRequest(id=policy, description=description)
        if allocation is not None:
            req.set_allocation = True
            req.allocation.extend(pb.PolicyWeight(version=v, weight=w) for v, w in allocation)
        return Op("Policies", "UpdatePolicy", req, Policy.from_pb)

    @op
    def delete(self, policy: str) -> bool:
        return Op("Policies", "DeletePolicy", pb.PolicyRef(id=policy), lambda r: r.deleted, idempotent=False)

    @op
    def create_version(self, policy: str, graph: Dict[str, Any], inactive: bool = False,
                       created_by: str = "") -> PolicyVersion:
        """A new version of the graph; unless `inactive` it takes all traffic."""
        req = pb.CreatePolicyVersionRequest(policy_id=policy, graph_json=json.dumps(graph), inactive=inactive,
                                            created_by=created_by)
        return Op("Policies", "CreateVersion", req, PolicyVersion.from_pb, idempotent=False)

    @op
    def versions(self, policy: str) -> List[PolicyVersion]:
        return Op("Policies", "ListVersions", pb.PolicyRef(id=policy),
                  lambda r: [PolicyVersion.from_pb(v) for v in r.versions])

    @op
    def get_version(self, policy: str, version: int) -> PolicyVersion:
        return Op("Policies", "GetVersion", pb.PolicyVersionRef(policy_id=policy, version=version),
                  PolicyVersion.from_pb)

    @op
    def archive_version(self, policy: str, version: int) -> PolicyVersion:
        """Archives a version (Conflict while the allocation gives it weight)."""
        return Op("Policies", "ArchiveVersion", pb.PolicyVersionRef(policy_id=policy, version=version),
                  PolicyVersion.from_pb)

    @op
    def run(self, policy: str, input: Any, version: Optional[int] = None, run_key: Optional[str] = None,
            mode: Optional[str] = None) -> PolicyRun:
        """Evaluates the policy on `input` and records the run (`.output`,
        `.trace`). mode="async": the run comes back `running` and a job
        evaluates it (poll `get_run`)."""
        req = pb.RunPolicyRequest(policy_id=policy, input_json=json.dumps(input), version=version,
                                  run_key=run_key, mode=mode)
        # A run is recorded (and may enqueue jobs): repeat it after an unknown
        # outcome only when a run key makes it the same run.
        return Op("Policies", "Run", req, PolicyRun.from_pb, idempotent=run_key is not None)

    @op
    def run_batch(self, policy: str, inputs: Sequence[Any], version: Optional[int] = None) -> PolicyBatch:
        """Evaluates many inputs (not recorded); results in input order."""
        req = pb.PolicyRunBatchRequest(policy_id=policy, inputs_json=[json.dumps(i) for i in inputs],
                                       version=version)
        return Op("Policies", "RunBatch", req, lambda r: PolicyBatch(r.version, [
            BatchResult(x.status, json.loads(x.output_json) if x.HasField("output_json") else None,
                        x.error if x.HasField("error") else None, termination_of(x)) for x in r.results]))

    @op
    def get_run(self, run_id: str) -> PolicyRun:
        return Op("Policies", "GetRun", pb.PolicyRunRef(id=run_id), PolicyRun.from_pb)

    @op
    def runs(self, policy: Optional[str] = None, version: Optional[int] = None, status: Optional[str] = None,
             limit: int = 0, cursor: Optional[str] = None) -> RunPage:
        """Recorded runs, newest first; pass `next_cursor` back as `cursor`."""
        req = pb.ListPolicyRunsRequest(policy=policy, version=version, status=status, limit=limit,
                                       cursor=cursor)
        return Op("Policies", "ListRuns", req, lambda r: RunPage(
            [PolicyRun.from_pb(x) for x in r.runs], r.next_cursor if r.HasField("next_cursor") else None))

    @op
    def create_data_source(self, source: Dict[str, Any]) -> Dict[str, Any]:
        """A data source as its REST JSON, e.g. {"name": "scores", "kind":
        "kv", "key_template": "scores/{key}"}."""
        return Op("Policies", "CreateDataSource", pb.PolicyDataSource(json=json.dumps(source)),
                  lambda r: json.loads(r.json), idempotent=False)

    @op
    def data_sources(self) -> List[Dict[str, Any]]:
        return Op("Policies", "ListDataSources", pb.ListPolicyDataSourcesRequest(),
                  lambda r: [json.loads(d.json) for d in r.data_sources])

    @op
    def delete_data_source(self, name: str) -> bool:
        return Op("Policies", "DeleteDataSource", pb.PolicyDataSourceRef(name=name), lambda r: r.deleted,
                  idempotent=False)
