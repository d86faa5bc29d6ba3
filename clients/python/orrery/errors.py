"""Exceptions raised by the client, mapped from the server's error codes.

The server sends each error's code (the `code` of REST's
`{"error": {"code", "message"}}`) in the gRPC metadata `orrery-error-code`;
older servers send only the gRPC status, which then picks the class.
"""

from typing import Optional

import grpc


class OrreryError(Exception):
    """Any error from the cluster. `code` is the server's error code
    (e.g. "not_found", "key_too_large"), `message` its text and
    `grpc_code` the gRPC status code (None for errors raised locally)."""

    def __init__(self, message: str, code: str = "error", grpc_code: Optional[grpc.StatusCode] = None,
                 retry_after: Optional[float] = None):
        super().__init__(f"{code}: {message}")
        #: The node could not be reached (no answer from a server): another
        #: endpoint may be tried.
        self.transport = False
        self.code = code
        self.message = message
        self.grpc_code = grpc_code
        #: Seconds the server asked the client to wait before retrying (503s).
        self.retry_after = retry_after


class InvalidArgument(OrreryError):
    """400: bad input; `code` says which check failed."""


class NotFound(OrreryError):
    """404."""


class Conflict(OrreryError):
    """409: e.g. a name that exists, a stale lease token, a finished job."""


class ClusterVersionTooLow(Conflict):
    """409 `cluster_version_too_low`: the command needs a newer cluster version."""


class TooLarge(OrreryError):
    """413."""


class Unauthenticated(OrreryError):
    """401: no token, or one that is not (or no longer) valid."""


class PermissionDenied(OrreryError):
    """403: the token's role lacks the permission."""


class Unavailable(OrreryError):
    """503: no leader, no quorum, or a node that cannot be reached. Nothing
    happened; the client has already retried (see `Client(retry=...)`)."""


class OutcomeUnknown(Unavailable):
    """503 `outcome_unknown`: a write was proposed and not confirmed in time;
    it may still be applied. Retried automatically only for idempotent calls."""


class NotInitialized(Unavailable):
    """503 `not_initialized`: the node is not part of an initialised cluster."""


class EvaluationTimeout(OrreryError):
    """422 `evaluation_timeout`: a policy run passed its deadline."""


class Internal(OrreryError):
    """500: a server bug."""


_BY_CODE = {
    "not_found": NotFound,
    "conflict": Conflict,
    "cluster_version_too_low": ClusterVersionTooLow,
    "too_large": TooLarge,
    "unavailable": Unavailable,
    "outcome_unknown": OutcomeUnknown,
    "not_initialized": NotInitialized,
    "internal": Internal,
    # A committed write whose apply failed (a server bug, caught): nothing
    # changed, and retrying fails the same way.
    "apply_failed": Internal,
    "unauthenticated": Unauthenticated,
    "forbidden": PermissionDenied,
    "evaluation_timeout": EvaluationTimeout,
    # The node's request deadline passed (or the call's grpc-timeout, seen
    # by the server first): like `outcome_unknown`, a write may still apply.
    "timeout": OutcomeUnknown,
}

_BY_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TooLarge,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.DEADLINE_EXCEEDED: EvaluationTimeout,
    grpc.StatusCode.INTERNAL: Internal,
}

_GRPC_DEFAULT_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.FAILED_PRECONDITION: "conflict",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "too_large",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "forbidden",
    grpc.StatusCode.INTERNAL: "internal",
}


def _metadata(call) -> dict:
    md = {}
    for getter in ("trailing_metadata", "initial_metadata"):
        try:
            items = getattr(call, getter)()
        except Exception:  # a call that failed before any metadata arrived
            items = None
        for k, v in items or ():
            md.setdefault(k.lower(), v if isinstance(v, str) else v.decode("ascii", "replace"))
    return md


def from_grpc(err: grpc.RpcError, metadata: Optional[dict] = None) -> OrreryError:
    """The OrreryError for a failed call (sync or asyncio). `metadata`: the
    call's metadata when the caller already read it (asyncio calls)."""
    status = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else str(err)) or ""
    md = metadata if metadata is not None else _metadata(err)
    code = md.get("orrery-error-code")
    retry_after = None
    if "retry-after" in md:
        try:
            retry_after = float(md["retry-after"])
        except ValueError:
            retry_after = None
    if code:
        cls = _BY_CODE.get(code) or _BY_GRPC.get(status, OrreryError)
    else:
        # No code from the server: a transport failure (connection refused,
        # TLS handshake...) or an older server.
        cls = _BY_GRPC.get(status, OrreryError)
        code = _GRPC_DEFAULT_CODE.get(status, status.name.lower() if status else "error")
        if status == grpc.StatusCode.DEADLINE_EXCEEDED:
            cls, code = Timeout, "deadline_exceeded"
        elif status == grpc.StatusCode.UNAVAILABLE and message.startswith("outcome unknown:"):
            cls, code = OutcomeUnknown, "outcome_unknown"
    e = cls(message, code=code, grpc_code=status, retry_after=retry_after)
    e.transport = cls is Unavailable and not md.get("orrery-error-code")
    return e


class Timeout(OrreryError):
    """The call's deadline (`timeout`) passed on the client side."""
