"""Typed results. Each has `from_pb` for its protobuf message; results whose
server form is a JSON document keep it whole in `raw`."""

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

PointId = Union[int, str]


def _json(text: str, empty=None):
    return json.loads(text) if text else empty


# ---- KV ----

@dataclass
class KeyValue:
    key: bytes
    value: bytes
    revision: int


@dataclass
class CasResult:
    succeeded: bool
    revision: int
    #: The value found when the comparison failed (None: the key was absent).
    current: Optional[bytes]


# ---- cluster ----

@dataclass
class Member:
    id: int
    addr: str
    peer_addr: str
    state: str
    shards: List[int]

    @staticmethod
    def from_pb(m):
        return Member(m.id, m.addr, m.peer_addr, m.state, list(m.shards))


@dataclass
class Members:
    cluster_id: str
    members: List[Member]
    placement_leader: int


@dataclass
class Shard:
    id: int
    group_id: int
    replicas: List[int]
    epoch: int
    leader: int


@dataclass
class ReplicaStatus:
    node_id: int
    matched: int
    lag: int
    voter: bool


@dataclass
class GroupStatus:
    group_id: int
    name: str
    leader: int
    term: int
    commit_index: int
    applied_index: int
    last_log_index: int
    replicas: List[ReplicaStatus]
    reported_by: int

    @staticmethod
    def from_pb(g):
        return GroupStatus(g.group_id, g.name, g.leader, g.term, g.commit_index, g.applied_index,
                           g.last_log_index,
                           [ReplicaStatus(r.node_id, r.matched, r.lag, r.voter) for r in g.replicas],
                           g.reported_by)


@dataclass
class NodeVersion:
    node_id: int
    supported: int
    build: str


@dataclass
class ClusterVersion:
    active: int
    active_name: str
    held: bool
    supported: int
    nodes: List[NodeVersion]

    @staticmethod
    def from_pb(v):
        return ClusterVersion(v.active, v.active_name, v.held, v.supported,
                              [NodeVersion(n.node_id, n.supported, n.build) for n in v.nodes])


@dataclass
class Rebalance:
    paused: bool
    balanced: bool
    moving: List[int]

    @staticmethod
    def from_pb(r):
        return Rebalance(r.paused, r.balanced, list(r.moving))


@dataclass
class ClusterStatus:
    cluster_id: str
    node_id: int
    groups: List[GroupStatus]
    unreachable: List[int]
    cluster_version: Optional[ClusterVersion]
    insecure: bool


# ---- auth ----

@dataclass
class TokenInfo:
    id: str
    name: str
    role: str
    queues: List[str]
    created_ms: int
    expires_ms: int
    revoked_ms: int

    @staticmethod
    def from_pb(t):
        return TokenInfo(t.id, t.name, t.role, list(t.queues), t.created_ms, t.expires_ms, t.revoked_ms)


@dataclass
class NewToken:
    info: TokenInfo
    #: The bearer token itself, shown only here.
    token: str


# ---- queues and jobs ----

@dataclass
class Queue:
    name: str
    partitions: int
    lease_s: int
    max_attempts: int
    #: The REST form: backoff, concurrency_limit, and from `get` `counts`
    #: per state and `oldest_queued_age_ms`.
    raw: Dict[str, Any]

    @property
    def counts(self) -> Dict[str, int]:
        return self.raw.get("counts") or {}

    @staticmethod
    def from_pb(q):
        return Queue(q.name, q.partitions, q.lease_s, q.max_attempts, _json(q.json, {}))


@dataclass
class Job:
    id: str
    queue: str
    kind: str
    state: str
    #: Attempts so far; while running, the lease token.
    attempts: int
    priority: int
    #: The REST form: params, result, last_error, lease, runs' times, ...
    raw: Dict[str, Any]

    @property
    def params(self) -> Any:
        return self.raw.get("params")

    @property
    def result(self) -> Any:
        return self.raw.get("result")

    @property
    def last_error(self) -> Optional[str]:
        return self.raw.get("last_error")

    @property
    def token(self) -> int:
        """The lease token of a claimed job (its attempt number)."""
        return self.attempts

    @staticmethod
    def from_pb(j):
        return Job(j.id, j.queue, j.kind, j.state, j.attempts, j.priority, _json(j.json, {}))


@dataclass
class SubmitResult:
    job: Optional[Job]
    #: False: the dedupe key matched this existing job.
    created: bool
    #: Bulk submits: this job's error, when its shard could not commit it.
    error: Optional[Dict[str, str]] = None


@dataclass
class JobPage:
    jobs: List[Job]
    next_cursor: Optional[str]


@dataclass
class Heartbeat:
    cancelled: bool
    lease_expires_ms: int


@dataclass
class CompleteResult:
    id: str
    state: str
    error: Optional[Dict[str, str]] = None


@dataclass
class EventPage:
    events: List[Dict[str, Any]]
    #: Pass back as `since` for the events after these.
    cursor: str


# ---- vectors ----

@dataclass
class ShardState:
    shard: int
    points: int
    index: str
    indexed_entries: int


@dataclass
class Collection:
    name: str
    dim: int
    metric: str
    shards: int
    replication: int
    m: int
    ef_construction: int
    ef_search: int
    #: Only from `get`.
    points: int = 0
    shard_states: List[ShardState] = field(default_factory=list)

    @staticmethod
    def from_pb(c):
        return Collection(c.name, c.dim, c.metric, c.shards, c.replication, c.m, c.ef_construction,
                          c.ef_search, c.points,
                          [ShardState(s.shard, s.points, s.index, s.indexed_entries) for s in c.shard_states])


@dataclass
class Point:
    id: PointId
    vector: List[float]
    payload: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Hit:
    id: PointId
    score: float
    payload: Optional[Dict[str, Any]] = None
    vector: Optional[List[float]] = None


# ---- policies ----

@dataclass
class Policy:
    id: str
    name: str
    description: str
    created: int
    updated: int
    #: [(version, weight)]
    allocation: List[tuple]
    latest_version: int
    #: evaluated next to the live version on recorded runs (cluster version 5)
    shadow_version: Optional[int] = None
    #: how long runs are kept, ms; None: the node's default
    run_retention_ms: Optional[int] = None

    @staticmethod
    def from_pb(p):
        return Policy(p.id, p.name, p.description, p.created, p.updated,
                      [(a.version, a.weight) for a in p.allocation], p.latest_version,
                      p.shadow_version if p.HasField("shadow_version") else None,
                      p.run_retention_ms if p.HasField("run_retention_ms") else None)


@dataclass
class PolicyVersion:
    policy_id: str
    version: int
    graph: Dict[str, Any]
    created_by: str
    created: int
    archived: bool

    @staticmethod
    def from_pb(v):
        return PolicyVersion(v.policy_id, v.version, _json(v.graph_json, {}), v.created_by, v.created,
                             v.archived)


@dataclass
class PolicyRun:
    id: str
    policy_id: str
    version: int
    #: running | succeeded | failed
    status: str
    run_key: Optional[str]
    input: Any
    output: Any
    trace: List[Dict[str, Any]]
    error: Optional[str]
    created: int
    finished: Optional[int]
    #: {"version", "output", "error", "would_enqueue"} of the shadow version, or None
    shadow: Optional[Dict[str, Any]] = None
    #: {"status", "reason"?} when a terminate node ended the run, or None
    termination: Optional[Dict[str, Any]] = None

    @staticmethod
    def from_pb(r):
        shadow = None
        if r.HasField("shadow"):
            s = r.shadow
            shadow = {"version": s.version,
                      "output": _json(s.output_json) if s.HasField("output_json") else None,
                      "error": s.error if s.HasField("error") else None,
                      "would_enqueue": list(s.would_enqueue)}
        termination = termination_of(r)
        return PolicyRun(
            r.id, r.policy_id, r.version, r.status,
            r.run_key if r.HasField("run_key") else None,
            _json(r.input_json),
            _json(r.output_json) if r.HasField("output_json") else None,
            _json(r.trace_json, []),
            r.error if r.HasField("error") else None,
            r.created,
            r.finished if r.HasField("finished") else None,
            shadow,
            termination,
        )


def termination_of(m) -> Optional[Dict[str, Any]]:
    """A PolicyRun's or PolicyBatchResult's termination as a dict, or None."""
    if not m.HasField("termination"):
        return None
    t = {"status": m.termination.status}
    if m.termination.HasField("reason"):
        t["reason"] = m.termination.reason
    return t


@dataclass
class BatchResult:
    status: str
    output: Any
    error: Optional[str]
    #: {"status", "reason"?} when a terminate node ended the evaluation
    termination: Optional[Dict[str, Any]] = None


@dataclass
class PolicyBatch:
    version: int
    results: List[BatchResult]


@dataclass
class RunPage:
    runs: List[PolicyRun]
    next_cursor: Optional[str]


@dataclass
class Workflow:
    """A workflow (a DAG of step jobs) with each step's state, jobs and result."""
    id: str
    queue: str
    #: running, succeeded, failed or cancelled.
    state: str
    #: The REST form: input, error, times and `steps`.
    raw: Dict[str, Any]

    @property
    def error(self) -> Optional[str]:
        return self.raw.get("error")

    @property
    def steps(self) -> List[Dict[str, Any]]:
        """Each step: name, kind, depends_on, for_each, on_failure, state
        (pending, claimable, running, succeeded, failed, cancelled, skipped),
        jobs [{id, state, attempts}], result, error."""
        return self.raw.get("steps", [])

    def step(self, name: str) -> Dict[str, Any]:
        for s in self.steps:
            if s.get("name") == name:
                return s
        raise KeyError(name)

    @staticmethod
    def from_pb(w):
        return Workflow(w.id, w.queue, w.state, _json(w.json, {}))
