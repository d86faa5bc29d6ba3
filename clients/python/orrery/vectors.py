"""`client.collections`: vector collections, points and search. Vectors may
be lists of numbers or numpy arrays (anything with `.tolist()`)."""

import json
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from ._core import Group, Op, op
from ._proto.orrery.v1 import kv_pb2, vectors_pb2 as pb
from .types import Collection, Hit, Point, PointId

Vector = Any  # a sequence of numbers or a 1-D numpy array
PointLike = Union[Point, Dict[str, Any]]


def _vector(v: Vector) -> List[float]:
    if hasattr(v, "tolist"):  # numpy arrays (and scalars' containers)
        v = v.tolist()
    if v and isinstance(v[0], list):
        raise ValueError("a vector must be one-dimensional")
    return [float(x) for x in v]


def _id_pb(i: PointId) -> pb.VectorPointId:
    if isinstance(i, bool):
        raise TypeError("a point id is an unsigned integer or a UUID string")
    if isinstance(i, int):
        return pb.VectorPointId(num=i)
    if hasattr(i, "hex") and not isinstance(i, (str, bytes)):  # uuid.UUID
        return pb.VectorPointId(uuid=str(i))
    if isinstance(i, str):
        return pb.VectorPointId(uuid=i)
    # numpy integers
    return pb.VectorPointId(num=int(i))


def _id(p) -> PointId:
    return p.num if p.WhichOneof("id") == "num" else p.uuid


def _point_pb(p: PointLike) -> pb.VectorPoint:
    if isinstance(p, Point):
        p = {"id": p.id, "vector": p.vector, "payload": p.payload}
    try:
        pid, vec = p["id"], p["vector"]
    except KeyError as e:
        raise ValueError(f"a point needs {e.args[0]!r}") from None
    payload = p.get("payload")
    return pb.VectorPoint(id=_id_pb(pid), vector=_vector(vec),
                          payload_json=json.dumps(payload) if payload else "")


def _hit(h) -> Hit:
    return Hit(_id(h.id), h.score, json.loads(h.payload_json) if h.payload_json else None,
               list(h.vector) or None)


def _consistency(c: str) -> int:
    return kv_pb2.STALE if c == "stale" else kv_pb2.LINEARIZABLE


def _search_pb(collection, vector, k, filter, ef, exact, with_payload, with_vector, consistency):
    if consistency not in ("linearizable", "stale"):
        raise ValueError(f"consistency must be 'linearizable' or 'stale', not {consistency!r}")
    return pb.VectorSearchRequest(
        collection=collection, vector=_vector(vector), k=k, ef=ef, exact=exact,
        filter_json=json.dumps(filter) if filter else "", with_payload=with_payload,
        with_vector=with_vector, consistency=_consistency(consistency))


class CollectionsOps(Group):
    @op
    def create(self, name: str, dim: int, metric: str = "cosine", shards: int = 0, replication: int = 0,
               m: int = 0, ef_construction: int = 0, ef_search: int = 0) -> Collection:
        """A new collection of `dim`-dimensional vectors; metric cosine, l2
        or dot; 0 means the server's default for the index settings. The
        same definition again returns the existing collection."""
        req = pb.VectorCreateCollectionRequest(name=name, dim=dim, metric=metric, shards=shards,
                                               replication=replication, m=m,
                                               ef_construction=ef_construction, ef_search=ef_search)
        return Op("Vectors", "CreateCollection", req, Collection.from_pb)

    @op
    def list(self) -> List[Collection]:
        return Op("Vectors", "ListCollections", pb.VectorListCollectionsRequest(),
                  lambda r: [Collection.from_pb(c) for c in r.collections])

    @op
    def get(self, name: str) -> Collection:
        """The collection with its point count and per-shard index state."""
        return Op("Vectors", "GetCollection", pb.VectorGetCollectionRequest(name=name), Collection.from_pb)

    @op
    def drop(self, name: str) -> None:
        return Op("Vectors", "DropCollection", pb.VectorGetCollectionRequest(name=name), lambda r: None,
                  idempotent=False)

    @op
    def upsert(self, collection: str, points: Iterable[PointLike]) -> int:
        """Inserts or replaces points: `Point`s or dicts {"id", "vector",
        "payload"?}. Returns how many were upserted."""
        req = pb.VectorUpsertRequest(collection=collection, points=[_point_pb(p) for p in points])
        return Op("Vectors", "UpsertPoints", req, lambda r: r.upserted)

    @op
    def get_point(self, collection: str, id: PointId) -> Point:
        """The point (NotFound if absent)."""
        return Op("Vectors", "GetPoint", pb.VectorGetPointRequest(collection=collection, id=_id_pb(id)),
                  lambda p: Point(_id(p.id), list(p.vector), json.loads(p.payload_json) if p.payload_json else {}))

    @op
    def delete(self, collection: str, ids: Optional[Sequence[PointId]] = None,
               filter: Optional[Dict[str, Any]] = None) -> int:
        """Deletes the points with these ids, or those matching `filter`
        (exactly one of the two). Returns how many were deleted."""
        if (ids is None) == (filter is None):
            raise ValueError("give exactly one of ids or filter")
        req = pb.VectorDeleteRequest(collection=collection, ids=[_id_pb(i) for i in ids or ()],
                                     filter_json=json.dumps(filter) if filter is not None else "")
        return Op("Vectors", "DeletePoints", req, lambda r: r.deleted)

    @op
    def search(self, collection: str, vector: Vector, k: int = 10, filter: Optional[Dict[str, Any]] = None,
               ef: int = 0, exact: bool = False, with_payload: bool = True, with_vector: bool = False,
               consistency: str = "linearizable") -> List[Hit]:
        """The `k` nearest points, best first. `filter`: the REST filter
        language, e.g. {"must": [{"key": "lang", "match": "en"}]}."""
        req = _search_pb(collection, vector, k, filter, ef, exact, with_payload, with_vector, consistency)
        return Op("Vectors", "Search", req, lambda r: [_hit(h) for h in r.result])

    @op
    def search_batch(self, collection: str, vectors: Iterable[Vector], k: int = 10,
                     filter: Optional[Dict[str, Any]] = None, ef: int = 0, exact: bool = False,
                     with_payload: bool = True, with_vector: bool = False,
                     consistency: str = "linearizable") -> List[List[Hit]]:
        """One search per vector (rows of a 2-D numpy array work too)."""
        reqs = [_search_pb(collection, v, k, filter, ef, exact, with_payload, with_vector, consistency)
                for v in vectors]
        return Op("Vectors", "SearchBatch", pb.VectorSearchBatchRequest(searches=reqs),
                  lambda r: [[_hit(h) for h in res.result] for res in r.results])
