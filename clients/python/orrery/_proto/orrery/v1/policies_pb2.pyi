from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PolicyWeight(_message.Message):
    __slots__ = ("version", "weight")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    version: int
    weight: int
    def __init__(self, version: _Optional[int] = ..., weight: _Optional[int] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("id", "name", "description", "created", "updated", "allocation", "latest_version", "shadow_version", "run_retention_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_RETENTION_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    created: int
    updated: int
    allocation: _containers.RepeatedCompositeFieldContainer[PolicyWeight]
    latest_version: int
    shadow_version: int
    run_retention_ms: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., created: _Optional[int] = ..., updated: _Optional[int] = ..., allocation: _Optional[_Iterable[_Union[PolicyWeight, _Mapping]]] = ..., latest_version: _Optional[int] = ..., shadow_version: _Optional[int] = ..., run_retention_ms: _Optional[int] = ...) -> None: ...

class CreatePolicyRequest(_message.Message):
    __slots__ = ("name", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    def __init__(self, policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ...) -> None: ...

class PolicyRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class UpdatePolicyRequest(_message.Message):
    __slots__ = ("id", "description", "set_allocation", "allocation")
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SET_ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    description: str
    set_allocation: bool
    allocation: _containers.RepeatedCompositeFieldContainer[PolicyWeight]
    def __init__(self, id: _Optional[str] = ..., description: _Optional[str] = ..., set_allocation: _Optional[bool] = ..., allocation: _Optional[_Iterable[_Union[PolicyWeight, _Mapping]]] = ...) -> None: ...

class PolicyDeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class PolicyVersion(_message.Message):
    __slots__ = ("policy_id", "version", "graph_json", "created_by", "created", "archived")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GRAPH_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    version: int
    graph_json: str
    created_by: str
    created: int
    archived: bool
    def __init__(self, policy_id: _Optional[str] = ..., version: _Optional[int] = ..., graph_json: _Optional[str] = ..., created_by: _Optional[str] = ..., created: _Optional[int] = ..., archived: _Optional[bool] = ...) -> None: ...

class CreatePolicyVersionRequest(_message.Message):
    __slots__ = ("policy_id", "graph_json", "inactive", "created_by")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    GRAPH_JSON_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    graph_json: str
    inactive: bool
    created_by: str
    def __init__(self, policy_id: _Optional[str] = ..., graph_json: _Optional[str] = ..., inactive: _Optional[bool] = ..., created_by: _Optional[str] = ...) -> None: ...

class ListPolicyVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[PolicyVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[PolicyVersion, _Mapping]]] = ...) -> None: ...

class PolicyVersionRef(_message.Message):
    __slots__ = ("policy_id", "version")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    version: int
    def __init__(self, policy_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class PolicyRun(_message.Message):
    __slots__ = ("id", "policy_id", "version", "status", "run_key", "input_json", "output_json", "trace_json", "error", "created", "finished", "shadow", "termination")
    ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    TRACE_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    policy_id: str
    version: int
    status: str
    run_key: str
    input_json: str
    output_json: str
    trace_json: str
    error: str
    created: int
    finished: int
    shadow: PolicyShadowResult
    termination: PolicyTermination
    def __init__(self, id: _Optional[str] = ..., policy_id: _Optional[str] = ..., version: _Optional[int] = ..., status: _Optional[str] = ..., run_key: _Optional[str] = ..., input_json: _Optional[str] = ..., output_json: _Optional[str] = ..., trace_json: _Optional[str] = ..., error: _Optional[str] = ..., created: _Optional[int] = ..., finished: _Optional[int] = ..., shadow: _Optional[_Union[PolicyShadowResult, _Mapping]] = ..., termination: _Optional[_Union[PolicyTermination, _Mapping]] = ...) -> None: ...

class PolicyShadowResult(_message.Message):
    __slots__ = ("version", "output_json", "error", "would_enqueue")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WOULD_ENQUEUE_FIELD_NUMBER: _ClassVar[int]
    version: int
    output_json: str
    error: str
    would_enqueue: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[int] = ..., output_json: _Optional[str] = ..., error: _Optional[str] = ..., would_enqueue: _Optional[_Iterable[str]] = ...) -> None: ...

class PolicyTermination(_message.Message):
    __slots__ = ("status", "reason")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    status: str
    reason: str
    def __init__(self, status: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RunPolicyRequest(_message.Message):
    __slots__ = ("policy_id", "input_json", "version", "run_key", "mode")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    input_json: str
    version: int
    run_key: str
    mode: str
    def __init__(self, policy_id: _Optional[str] = ..., input_json: _Optional[str] = ..., version: _Optional[int] = ..., run_key: _Optional[str] = ..., mode: _Optional[str] = ...) -> None: ...

class PolicyRunBatchRequest(_message.Message):
    __slots__ = ("policy_id", "inputs_json", "version")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    inputs_json: _containers.RepeatedScalarFieldContainer[str]
    version: int
    def __init__(self, policy_id: _Optional[str] = ..., inputs_json: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ...) -> None: ...

class PolicyBatchResult(_message.Message):
    __slots__ = ("status", "output_json", "error", "termination")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_FIELD_NUMBER: _ClassVar[int]
    status: str
    output_json: str
    error: str
    termination: PolicyTermination
    def __init__(self, status: _Optional[str] = ..., output_json: _Optional[str] = ..., error: _Optional[str] = ..., termination: _Optional[_Union[PolicyTermination, _Mapping]] = ...) -> None: ...

class PolicyRunBatchResponse(_message.Message):
    __slots__ = ("version", "results")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    version: int
    results: _containers.RepeatedCompositeFieldContainer[PolicyBatchResult]
    def __init__(self, version: _Optional[int] = ..., results: _Optional[_Iterable[_Union[PolicyBatchResult, _Mapping]]] = ...) -> None: ...

class PolicyRunRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListPolicyRunsRequest(_message.Message):
    __slots__ = ("policy", "version", "status", "limit", "cursor", "since", "until", "outcome")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    policy: str
    version: int
    status: str
    limit: int
    cursor: str
    since: int
    until: int
    outcome: str
    def __init__(self, policy: _Optional[str] = ..., version: _Optional[int] = ..., status: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., since: _Optional[int] = ..., until: _Optional[int] = ..., outcome: _Optional[str] = ...) -> None: ...

class ListPolicyRunsResponse(_message.Message):
    __slots__ = ("runs", "next_cursor")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[PolicyRun]
    next_cursor: str
    def __init__(self, runs: _Optional[_Iterable[_Union[PolicyRun, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class PolicyDataSource(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class ListPolicyDataSourcesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPolicyDataSourcesResponse(_message.Message):
    __slots__ = ("data_sources",)
    DATA_SOURCES_FIELD_NUMBER: _ClassVar[int]
    data_sources: _containers.RepeatedCompositeFieldContainer[PolicyDataSource]
    def __init__(self, data_sources: _Optional[_Iterable[_Union[PolicyDataSource, _Mapping]]] = ...) -> None: ...

class PolicyDataSourceRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SetPolicySettingsRequest(_message.Message):
    __slots__ = ("id", "set_shadow_version", "shadow_version", "set_run_retention", "run_retention_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    SET_SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SET_RUN_RETENTION_FIELD_NUMBER: _ClassVar[int]
    RUN_RETENTION_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    set_shadow_version: bool
    shadow_version: int
    set_run_retention: bool
    run_retention_ms: int
    def __init__(self, id: _Optional[str] = ..., set_shadow_version: _Optional[bool] = ..., shadow_version: _Optional[int] = ..., set_run_retention: _Optional[bool] = ..., run_retention_ms: _Optional[int] = ...) -> None: ...

class CompareShadowRequest(_message.Message):
    __slots__ = ("policy_id", "since", "until", "limit", "cursor")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    since: int
    until: int
    limit: int
    cursor: str
    def __init__(self, policy_id: _Optional[str] = ..., since: _Optional[int] = ..., until: _Optional[int] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ShadowDifference(_message.Message):
    __slots__ = ("run_id", "version", "shadow_version")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    version: int
    shadow_version: int
    def __init__(self, run_id: _Optional[str] = ..., version: _Optional[int] = ..., shadow_version: _Optional[int] = ...) -> None: ...

class ShadowComparison(_message.Message):
    __slots__ = ("policy_id", "shadow_version", "compared", "agreed", "shadow_failed", "differing", "next_cursor")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    AGREED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FAILED_FIELD_NUMBER: _ClassVar[int]
    DIFFERING_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    shadow_version: int
    compared: int
    agreed: int
    shadow_failed: int
    differing: _containers.RepeatedCompositeFieldContainer[ShadowDifference]
    next_cursor: str
    def __init__(self, policy_id: _Optional[str] = ..., shadow_version: _Optional[int] = ..., compared: _Optional[int] = ..., agreed: _Optional[int] = ..., shadow_failed: _Optional[int] = ..., differing: _Optional[_Iterable[_Union[ShadowDifference, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...
