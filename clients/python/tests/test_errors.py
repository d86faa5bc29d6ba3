"""Error mapping and retry rules (no cluster needed: these are the client's
own decisions about statuses the server sends)."""

import grpc
import pytest

import orrery
from orrery import errors
from orrery._core import Op, Retry, parse_endpoints, retryable


class Status(grpc.RpcError):
    def __init__(self, code, details, md=()):
        self._code, self._details, self._md = code, details, tuple(md)

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._md

    def initial_metadata(self):
        return ()


@pytest.mark.parametrize("status,code,cls", [
    (grpc.StatusCode.FAILED_PRECONDITION, "conflict", orrery.Conflict),
    (grpc.StatusCode.FAILED_PRECONDITION, "cluster_version_too_low", orrery.ClusterVersionTooLow),
    (grpc.StatusCode.INVALID_ARGUMENT, "empty_key", orrery.InvalidArgument),
    (grpc.StatusCode.UNAVAILABLE, "outcome_unknown", orrery.OutcomeUnknown),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "timeout", orrery.OutcomeUnknown),
    (grpc.StatusCode.UNAVAILABLE, "not_initialized", orrery.NotInitialized),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "evaluation_timeout", orrery.EvaluationTimeout),
    (grpc.StatusCode.PERMISSION_DENIED, "forbidden", orrery.PermissionDenied),
])
def test_the_server_code_picks_the_class(status, code, cls):
    e = errors.from_grpc(Status(status, "msg", [("orrery-error-code", code), ("retry-after", "1")]))
    assert type(e) is cls and e.code == code and e.message == "msg" and e.grpc_code == status
    assert e.retry_after == 1.0 and not e.transport


def test_without_a_code_the_grpc_status_decides():
    e = errors.from_grpc(Status(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"))
    assert type(e) is orrery.Unavailable and e.transport and e.retry_after is None
    e = errors.from_grpc(Status(grpc.StatusCode.UNAVAILABLE, "outcome unknown: shard-1"))
    assert type(e) is orrery.OutcomeUnknown and not e.transport
    e = errors.from_grpc(Status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert type(e) is orrery.Timeout
    e = errors.from_grpc(Status(grpc.StatusCode.NOT_FOUND, "no"))
    assert type(e) is orrery.NotFound and e.code == "not_found"


def test_what_is_retried():
    unavailable = errors.from_grpc(Status(grpc.StatusCode.UNAVAILABLE, "x", [("orrery-error-code", "unavailable")]))
    unknown = errors.from_grpc(Status(grpc.StatusCode.UNAVAILABLE, "x", [("orrery-error-code", "outcome_unknown")]))
    conflict = errors.from_grpc(Status(grpc.StatusCode.FAILED_PRECONDITION, "x"))
    put, cas = Op("Kv", "Put", None), Op("Kv", "Cas", None, idempotent=False)
    assert retryable(unavailable, put) and retryable(unavailable, cas)
    assert retryable(unknown, put) and not retryable(unknown, cas)
    assert not retryable(conflict, put)


def test_retry_delays():
    r = Retry(backoff_initial_s=0.1, backoff_max_s=1.0)
    with_header = errors.Unavailable("x", retry_after=1.0)
    assert r.delay(1, with_header, 3) == 1.0
    transport = errors.Unavailable("x")
    transport.transport = True
    assert r.delay(1, transport, 3) == 0.0  # the next node at once
    assert 0.5 <= r.delay(5, transport, 3) <= 1.0  # then backoff, capped


def test_endpoints():
    assert parse_endpoints("a:1, https://b:2/,") == ["a:1", "b:2"]
    assert parse_endpoints(["a:1"]) == ["a:1"]
    with pytest.raises(ValueError):
        parse_endpoints("")
