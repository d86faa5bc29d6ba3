from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateBackupRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BackupChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class GetRebalanceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetRebalanceRequest(_message.Message):
    __slots__ = ("paused", "max_moves", "max_per_node", "keep_paused")
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    MAX_MOVES_FIELD_NUMBER: _ClassVar[int]
    MAX_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    KEEP_PAUSED_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    max_moves: int
    max_per_node: int
    keep_paused: bool
    def __init__(self, paused: _Optional[bool] = ..., max_moves: _Optional[int] = ..., max_per_node: _Optional[int] = ..., keep_paused: _Optional[bool] = ...) -> None: ...

class RebalanceState(_message.Message):
    __slots__ = ("paused", "balanced", "moving", "max_moves", "max_per_node", "limits_set")
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    BALANCED_FIELD_NUMBER: _ClassVar[int]
    MOVING_FIELD_NUMBER: _ClassVar[int]
    MAX_MOVES_FIELD_NUMBER: _ClassVar[int]
    MAX_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_SET_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    balanced: bool
    moving: _containers.RepeatedScalarFieldContainer[int]
    max_moves: int
    max_per_node: int
    limits_set: bool
    def __init__(self, paused: _Optional[bool] = ..., balanced: _Optional[bool] = ..., moving: _Optional[_Iterable[int]] = ..., max_moves: _Optional[int] = ..., max_per_node: _Optional[int] = ..., limits_set: _Optional[bool] = ...) -> None: ...

class InitRequest(_message.Message):
    __slots__ = ("shards",)
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    shards: int
    def __init__(self, shards: _Optional[int] = ...) -> None: ...

class InitResponse(_message.Message):
    __slots__ = ("cluster_id", "node_id", "shards", "root_token")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    ROOT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    node_id: int
    shards: int
    root_token: str
    def __init__(self, cluster_id: _Optional[str] = ..., node_id: _Optional[int] = ..., shards: _Optional[int] = ..., root_token: _Optional[str] = ...) -> None: ...

class AddMemberRequest(_message.Message):
    __slots__ = ("id", "addr", "peer_addr", "learner_only")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDR_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ONLY_FIELD_NUMBER: _ClassVar[int]
    id: int
    addr: str
    peer_addr: str
    learner_only: bool
    def __init__(self, id: _Optional[int] = ..., addr: _Optional[str] = ..., peer_addr: _Optional[str] = ..., learner_only: _Optional[bool] = ...) -> None: ...

class AddMemberResponse(_message.Message):
    __slots__ = ("progress", "member")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    progress: _containers.RepeatedScalarFieldContainer[str]
    member: Member
    def __init__(self, progress: _Optional[_Iterable[str]] = ..., member: _Optional[_Union[Member, _Mapping]] = ...) -> None: ...

class RemoveMemberRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class RemoveMemberResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PromoteMemberRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class PromoteMemberResponse(_message.Message):
    __slots__ = ("member",)
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    member: Member
    def __init__(self, member: _Optional[_Union[Member, _Mapping]] = ...) -> None: ...

class ListMembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Member(_message.Message):
    __slots__ = ("id", "addr", "peer_addr", "state", "shards", "capacity")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    id: int
    addr: str
    peer_addr: str
    state: str
    shards: _containers.RepeatedScalarFieldContainer[int]
    capacity: int
    def __init__(self, id: _Optional[int] = ..., addr: _Optional[str] = ..., peer_addr: _Optional[str] = ..., state: _Optional[str] = ..., shards: _Optional[_Iterable[int]] = ..., capacity: _Optional[int] = ...) -> None: ...

class ListMembersResponse(_message.Message):
    __slots__ = ("cluster_id", "members", "placement_leader")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_LEADER_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    members: _containers.RepeatedCompositeFieldContainer[Member]
    placement_leader: int
    def __init__(self, cluster_id: _Optional[str] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., placement_leader: _Optional[int] = ...) -> None: ...

class ListShardsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Shard(_message.Message):
    __slots__ = ("id", "group_id", "replicas", "epoch", "leader")
    ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    id: int
    group_id: int
    replicas: _containers.RepeatedScalarFieldContainer[int]
    epoch: int
    leader: int
    def __init__(self, id: _Optional[int] = ..., group_id: _Optional[int] = ..., replicas: _Optional[_Iterable[int]] = ..., epoch: _Optional[int] = ..., leader: _Optional[int] = ...) -> None: ...

class ListShardsResponse(_message.Message):
    __slots__ = ("shards",)
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedCompositeFieldContainer[Shard]
    def __init__(self, shards: _Optional[_Iterable[_Union[Shard, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("node_id", "matched", "lag", "voter")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    matched: int
    lag: int
    voter: bool
    def __init__(self, node_id: _Optional[int] = ..., matched: _Optional[int] = ..., lag: _Optional[int] = ..., voter: _Optional[bool] = ...) -> None: ...

class GroupStatus(_message.Message):
    __slots__ = ("group_id", "name", "leader", "term", "commit_index", "applied_index", "last_log_index", "replicas", "reported_by")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REPORTED_BY_FIELD_NUMBER: _ClassVar[int]
    group_id: int
    name: str
    leader: int
    term: int
    commit_index: int
    applied_index: int
    last_log_index: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    reported_by: int
    def __init__(self, group_id: _Optional[int] = ..., name: _Optional[str] = ..., leader: _Optional[int] = ..., term: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., last_log_index: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., reported_by: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("cluster_id", "node_id", "groups", "unreachable", "cluster_version", "insecure")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    INSECURE_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    node_id: int
    groups: _containers.RepeatedCompositeFieldContainer[GroupStatus]
    unreachable: _containers.RepeatedScalarFieldContainer[int]
    cluster_version: ClusterVersion
    insecure: bool
    def __init__(self, cluster_id: _Optional[str] = ..., node_id: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[GroupStatus, _Mapping]]] = ..., unreachable: _Optional[_Iterable[int]] = ..., cluster_version: _Optional[_Union[ClusterVersion, _Mapping]] = ..., insecure: _Optional[bool] = ...) -> None: ...

class GetVersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetVersionRequest(_message.Message):
    __slots__ = ("hold", "finalize")
    HOLD_FIELD_NUMBER: _ClassVar[int]
    FINALIZE_FIELD_NUMBER: _ClassVar[int]
    hold: bool
    finalize: bool
    def __init__(self, hold: _Optional[bool] = ..., finalize: _Optional[bool] = ...) -> None: ...

class NodeVersion(_message.Message):
    __slots__ = ("node_id", "supported", "build")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    supported: int
    build: str
    def __init__(self, node_id: _Optional[int] = ..., supported: _Optional[int] = ..., build: _Optional[str] = ...) -> None: ...

class ClusterVersion(_message.Message):
    __slots__ = ("active", "active_name", "held", "supported", "nodes")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_NAME_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    active: int
    active_name: str
    held: bool
    supported: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeVersion]
    def __init__(self, active: _Optional[int] = ..., active_name: _Optional[str] = ..., held: _Optional[bool] = ..., supported: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeVersion, _Mapping]]] = ...) -> None: ...
