"""`client.kv`: keys and values are bytes (str is encoded as UTF-8)."""

from typing import List, Optional, Union

from ._core import Group, Op, op
from ._proto.orrery.v1 import kv_pb2 as pb
from .types import CasResult, KeyValue

Bytes = Union[bytes, str]


def _b(v: Bytes) -> bytes:
    return v.encode() if isinstance(v, str) else bytes(v)


def _consistency(c: str) -> int:
    try:
        return {"linearizable": pb.LINEARIZABLE, "stale": pb.STALE}[c]
    except KeyError:
        raise ValueError(f"consistency must be 'linearizable' or 'stale', not {c!r}") from None


class KvOps(Group):
    @op
    def put(self, key: Bytes, value: Bytes) -> int:
        """Writes the value; returns the revision (log index) that wrote it."""
        return Op("Kv", "Put", pb.PutRequest(key=_b(key), value=_b(value)), lambda r: r.revision)

    @op
    def get(self, key: Bytes, consistency: str = "linearizable") -> Optional[bytes]:
        """The value, or None when the key is absent."""
        return Op("Kv", "Get", pb.GetRequest(key=_b(key), consistency=_consistency(consistency)),
                  lambda r: r.value if r.found else None)

    @op
    def get_entry(self, key: Bytes, consistency: str = "linearizable") -> Optional[KeyValue]:
        """Value and revision, or None when the key is absent."""
        k = _b(key)
        return Op("Kv", "Get", pb.GetRequest(key=k, consistency=_consistency(consistency)),
                  lambda r: KeyValue(k, r.value, r.revision) if r.found else None)

    @op
    def delete(self, key: Bytes) -> bool:
        """Whether the key existed."""
        return Op("Kv", "Delete", pb.DeleteRequest(key=_b(key)), lambda r: r.deleted)

    @op
    def cas(self, key: Bytes, expected: Optional[Bytes], value: Bytes) -> CasResult:
        """Writes `value` if the key holds `expected` (None: if it is absent).
        A failed comparison is a result (`succeeded=False`), not an error."""
        req = pb.CasRequest(key=_b(key), value=_b(value))
        if expected is not None:
            req.expected = _b(expected)
        # Not idempotent: repeated after an unknown outcome, a CAS that took
        # would report a failed comparison.
        return Op("Kv", "Cas", req,
                  lambda r: CasResult(r.succeeded, r.revision, r.current if r.HasField("current") else None),
                  idempotent=False)

    @op
    def list(self, prefix: Bytes = b"", limit: int = 0, consistency: str = "linearizable") -> List[KeyValue]:
        """Keys with the prefix, in key order (limit 0: the server's 100)."""
        req = pb.ListRequest(prefix=_b(prefix), limit=limit, consistency=_consistency(consistency))
        return Op("Kv", "List", req, lambda r: [KeyValue(i.key, i.value, i.revision) for i in r.items])

    @op
    def delete_prefix(self, prefix: Bytes) -> int:
        """Deletes every key with the (non-empty) prefix; returns how many."""
        return Op("Kv", "DeletePrefix", pb.DeletePrefixRequest(prefix=_b(prefix)), lambda r: r.deleted)
