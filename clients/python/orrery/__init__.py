"""Python client for Orrery over gRPC.

    from orrery import Client
    c = Client("127.0.0.1:17001", token=TOKEN, ca_cert="ca.crt")
    c.kv.put("colour", b"blue")

See README.md.
"""

from ._core import Retry
from .aio import AsyncClient
from .client import Client
from .errors import (ClusterVersionTooLow, Conflict, EvaluationTimeout, Internal, InvalidArgument, NotFound,
                     NotInitialized, OrreryError, OutcomeUnknown, PermissionDenied, Timeout, TooLarge,
                     Unauthenticated, Unavailable)
from .types import (BatchResult, CasResult, ClusterStatus, ClusterVersion, Collection, CompleteResult, EventPage,
                    GroupStatus, Heartbeat, Hit, Job, JobPage, KeyValue, Member, Members, NewToken, Point,
                    Policy, PolicyBatch, PolicyRun, PolicyVersion, Queue, RunPage, Shard, SubmitResult,
                    TokenInfo, Workflow)
from .worker import AsyncWorkItem, WorkItem

__version__ = "0.1.0"

__all__ = [
    "Client", "AsyncClient", "Retry", "WorkItem", "AsyncWorkItem",
    "OrreryError", "InvalidArgument", "NotFound", "Conflict", "ClusterVersionTooLow", "TooLarge",
    "Unauthenticated", "PermissionDenied", "Unavailable", "OutcomeUnknown", "NotInitialized",
    "EvaluationTimeout", "Internal", "Timeout",
    "BatchResult", "CasResult", "ClusterStatus", "ClusterVersion", "Collection", "CompleteResult", "EventPage",
    "GroupStatus", "Heartbeat", "Hit", "Job", "JobPage", "KeyValue", "Member", "Members", "NewToken", "Point",
    "Policy", "PolicyBatch", "PolicyRun", "PolicyVersion", "Queue", "RunPage", "Shard", "SubmitResult",
    "TokenInfo", "Workflow",
]
