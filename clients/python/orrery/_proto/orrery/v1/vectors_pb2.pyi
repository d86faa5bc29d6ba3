from orrery._proto.orrery.v1 import kv_pb2 as _kv_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VectorPointId(_message.Message):
    __slots__ = ("num", "uuid")
    NUM_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    num: int
    uuid: str
    def __init__(self, num: _Optional[int] = ..., uuid: _Optional[str] = ...) -> None: ...

class VectorCreateCollectionRequest(_message.Message):
    __slots__ = ("name", "dim", "metric", "shards", "replication", "m", "ef_construction", "ef_search")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: str
    shards: int
    replication: int
    m: int
    ef_construction: int
    ef_search: int
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[str] = ..., shards: _Optional[int] = ..., replication: _Optional[int] = ..., m: _Optional[int] = ..., ef_construction: _Optional[int] = ..., ef_search: _Optional[int] = ...) -> None: ...

class VectorShardState(_message.Message):
    __slots__ = ("shard", "points", "index", "indexed_entries")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEXED_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    shard: int
    points: int
    index: str
    indexed_entries: int
    def __init__(self, shard: _Optional[int] = ..., points: _Optional[int] = ..., index: _Optional[str] = ..., indexed_entries: _Optional[int] = ...) -> None: ...

class VectorCollection(_message.Message):
    __slots__ = ("name", "dim", "metric", "shards", "replication", "m", "ef_construction", "ef_search", "points", "shard_states")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    SHARD_STATES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: str
    shards: int
    replication: int
    m: int
    ef_construction: int
    ef_search: int
    points: int
    shard_states: _containers.RepeatedCompositeFieldContainer[VectorShardState]
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[str] = ..., shards: _Optional[int] = ..., replication: _Optional[int] = ..., m: _Optional[int] = ..., ef_construction: _Optional[int] = ..., ef_search: _Optional[int] = ..., points: _Optional[int] = ..., shard_states: _Optional[_Iterable[_Union[VectorShardState, _Mapping]]] = ...) -> None: ...

class VectorListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VectorListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[VectorCollection]
    def __init__(self, collections: _Optional[_Iterable[_Union[VectorCollection, _Mapping]]] = ...) -> None: ...

class VectorGetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class VectorDropCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VectorPoint(_message.Message):
    __slots__ = ("id", "vector", "payload_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    id: VectorPointId
    vector: _containers.RepeatedScalarFieldContainer[float]
    payload_json: str
    def __init__(self, id: _Optional[_Union[VectorPointId, _Mapping]] = ..., vector: _Optional[_Iterable[float]] = ..., payload_json: _Optional[str] = ...) -> None: ...

class VectorUpsertRequest(_message.Message):
    __slots__ = ("collection", "points")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    points: _containers.RepeatedCompositeFieldContainer[VectorPoint]
    def __init__(self, collection: _Optional[str] = ..., points: _Optional[_Iterable[_Union[VectorPoint, _Mapping]]] = ...) -> None: ...

class VectorUpsertResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class VectorGetPointRequest(_message.Message):
    __slots__ = ("collection", "id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    id: VectorPointId
    def __init__(self, collection: _Optional[str] = ..., id: _Optional[_Union[VectorPointId, _Mapping]] = ...) -> None: ...

class VectorDeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "filter_json")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_JSON_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedCompositeFieldContainer[VectorPointId]
    filter_json: str
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[_Union[VectorPointId, _Mapping]]] = ..., filter_json: _Optional[str] = ...) -> None: ...

class VectorDeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class VectorSearchRequest(_message.Message):
    __slots__ = ("collection", "vector", "k", "ef", "exact", "filter_json", "with_payload", "with_vector", "consistency")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    FILTER_JSON_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTOR_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    collection: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    k: int
    ef: int
    exact: bool
    filter_json: str
    with_payload: bool
    with_vector: bool
    consistency: _kv_pb2.Consistency
    def __init__(self, collection: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., k: _Optional[int] = ..., ef: _Optional[int] = ..., exact: _Optional[bool] = ..., filter_json: _Optional[str] = ..., with_payload: _Optional[bool] = ..., with_vector: _Optional[bool] = ..., consistency: _Optional[_Union[_kv_pb2.Consistency, str]] = ...) -> None: ...

class VectorHit(_message.Message):
    __slots__ = ("id", "score", "payload_json", "vector")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    id: VectorPointId
    score: float
    payload_json: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[_Union[VectorPointId, _Mapping]] = ..., score: _Optional[float] = ..., payload_json: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class VectorSearchResponse(_message.Message):
    __slots__ = ("result", "took_ms")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[VectorHit]
    took_ms: float
    def __init__(self, result: _Optional[_Iterable[_Union[VectorHit, _Mapping]]] = ..., took_ms: _Optional[float] = ...) -> None: ...

class VectorSearchBatchRequest(_message.Message):
    __slots__ = ("searches",)
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    searches: _containers.RepeatedCompositeFieldContainer[VectorSearchRequest]
    def __init__(self, searches: _Optional[_Iterable[_Union[VectorSearchRequest, _Mapping]]] = ...) -> None: ...

class VectorSearchBatchResponse(_message.Message):
    __slots__ = ("results", "took_ms")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[VectorSearchResponse]
    took_ms: float
    def __init__(self, results: _Optional[_Iterable[_Union[VectorSearchResponse, _Mapping]]] = ..., took_ms: _Optional[float] = ...) -> None: ...
