from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateQueueRequest(_message.Message):
    __slots__ = ("name", "partitions", "lease_s", "max_attempts", "backoff_initial_ms", "backoff_multiplier", "backoff_max_ms", "concurrency_limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_INITIAL_MS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    partitions: int
    lease_s: int
    max_attempts: int
    backoff_initial_ms: int
    backoff_multiplier: float
    backoff_max_ms: int
    concurrency_limit: int
    def __init__(self, name: _Optional[str] = ..., partitions: _Optional[int] = ..., lease_s: _Optional[int] = ..., max_attempts: _Optional[int] = ..., backoff_initial_ms: _Optional[int] = ..., backoff_multiplier: _Optional[float] = ..., backoff_max_ms: _Optional[int] = ..., concurrency_limit: _Optional[int] = ...) -> None: ...

class QueueInfo(_message.Message):
    __slots__ = ("name", "partitions", "lease_s", "max_attempts", "json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    partitions: int
    lease_s: int
    max_attempts: int
    json: str
    def __init__(self, name: _Optional[str] = ..., partitions: _Optional[int] = ..., lease_s: _Optional[int] = ..., max_attempts: _Optional[int] = ..., json: _Optional[str] = ...) -> None: ...

class ListQueuesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListQueuesResponse(_message.Message):
    __slots__ = ("queues",)
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[QueueInfo]
    def __init__(self, queues: _Optional[_Iterable[_Union[QueueInfo, _Mapping]]] = ...) -> None: ...

class GetQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteQueueResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "queue", "kind", "state", "attempts", "priority", "json")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: str
    kind: str
    state: str
    attempts: int
    priority: int
    json: str
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., attempts: _Optional[int] = ..., priority: _Optional[int] = ..., json: _Optional[str] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("queue", "kind", "params_json", "priority", "run_at_ms", "delay_ms", "gpus", "gpu_memory_mb", "cpus", "shared_gpu", "dedupe_key", "submitted_by")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    SHARED_GPU_FIELD_NUMBER: _ClassVar[int]
    DEDUPE_KEY_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    queue: str
    kind: str
    params_json: str
    priority: int
    run_at_ms: int
    delay_ms: int
    gpus: int
    gpu_memory_mb: int
    cpus: int
    shared_gpu: bool
    dedupe_key: str
    submitted_by: str
    def __init__(self, queue: _Optional[str] = ..., kind: _Optional[str] = ..., params_json: _Optional[str] = ..., priority: _Optional[int] = ..., run_at_ms: _Optional[int] = ..., delay_ms: _Optional[int] = ..., gpus: _Optional[int] = ..., gpu_memory_mb: _Optional[int] = ..., cpus: _Optional[int] = ..., shared_gpu: _Optional[bool] = ..., dedupe_key: _Optional[str] = ..., submitted_by: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("job", "created")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    created: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("queue", "state", "limit", "cursor")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    queue: str
    state: str
    limit: int
    cursor: str
    def __init__(self, queue: _Optional[str] = ..., state: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_cursor")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_cursor: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RunsResponse(_message.Message):
    __slots__ = ("runs_json",)
    RUNS_JSON_FIELD_NUMBER: _ClassVar[int]
    runs_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, runs_json: _Optional[_Iterable[str]] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("id", "attempt", "follow")
    ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    id: str
    attempt: int
    follow: bool
    def __init__(self, id: _Optional[str] = ..., attempt: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("data", "end")
    DATA_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    end: bool
    def __init__(self, data: _Optional[bytes] = ..., end: _Optional[bool] = ...) -> None: ...

class ClaimJobsRequest(_message.Message):
    __slots__ = ("queue", "worker_id", "kinds", "lease_s", "wait_s", "max", "complete", "free_gpus", "shared_gpus", "free_cpus")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FREE_GPUS_FIELD_NUMBER: _ClassVar[int]
    SHARED_GPUS_FIELD_NUMBER: _ClassVar[int]
    FREE_CPUS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    worker_id: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    lease_s: int
    wait_s: float
    max: int
    complete: _containers.RepeatedCompositeFieldContainer[CompleteRequest]
    free_gpus: _containers.RepeatedCompositeFieldContainer[GpuOffer]
    shared_gpus: _containers.RepeatedCompositeFieldContainer[GpuOffer]
    free_cpus: int
    def __init__(self, queue: _Optional[str] = ..., worker_id: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., lease_s: _Optional[int] = ..., wait_s: _Optional[float] = ..., max: _Optional[int] = ..., complete: _Optional[_Iterable[_Union[CompleteRequest, _Mapping]]] = ..., free_gpus: _Optional[_Iterable[_Union[GpuOffer, _Mapping]]] = ..., shared_gpus: _Optional[_Iterable[_Union[GpuOffer, _Mapping]]] = ..., free_cpus: _Optional[int] = ...) -> None: ...

class GpuOffer(_message.Message):
    __slots__ = ("uuid", "free_memory_mb")
    UUID_FIELD_NUMBER: _ClassVar[int]
    FREE_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    free_memory_mb: int
    def __init__(self, uuid: _Optional[str] = ..., free_memory_mb: _Optional[int] = ...) -> None: ...

class ClaimJobsResponse(_message.Message):
    __slots__ = ("jobs", "completions")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    completions: _containers.RepeatedCompositeFieldContainer[CompleteBatchItem]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., completions: _Optional[_Iterable[_Union[CompleteBatchItem, _Mapping]]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("id", "token")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: int
    def __init__(self, id: _Optional[str] = ..., token: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("cancelled", "lease_expires_ms")
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    lease_expires_ms: int
    def __init__(self, cancelled: _Optional[bool] = ..., lease_expires_ms: _Optional[int] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("id", "token", "result_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: int
    result_json: str
    def __init__(self, id: _Optional[str] = ..., token: _Optional[int] = ..., result_json: _Optional[str] = ...) -> None: ...

class FailRequest(_message.Message):
    __slots__ = ("id", "token", "error", "retry")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: int
    error: str
    retry: bool
    def __init__(self, id: _Optional[str] = ..., token: _Optional[int] = ..., error: _Optional[str] = ..., retry: _Optional[bool] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("since", "limit")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    since: str
    limit: int
    def __init__(self, since: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class EventsResponse(_message.Message):
    __slots__ = ("events_json", "cursor")
    EVENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    events_json: _containers.RepeatedScalarFieldContainer[str]
    cursor: str
    def __init__(self, events_json: _Optional[_Iterable[str]] = ..., cursor: _Optional[str] = ...) -> None: ...

class GpusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GpusResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SubmitBatchRequest(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[SubmitRequest]
    def __init__(self, jobs: _Optional[_Iterable[_Union[SubmitRequest, _Mapping]]] = ...) -> None: ...

class SubmitBatchItem(_message.Message):
    __slots__ = ("job", "created", "error")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job: Job
    created: bool
    error: ItemError
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., created: _Optional[bool] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class SubmitBatchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SubmitBatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[SubmitBatchItem, _Mapping]]] = ...) -> None: ...

class CompleteBatchRequest(_message.Message):
    __slots__ = ("completions",)
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    completions: _containers.RepeatedCompositeFieldContainer[CompleteRequest]
    def __init__(self, completions: _Optional[_Iterable[_Union[CompleteRequest, _Mapping]]] = ...) -> None: ...

class CompleteBatchItem(_message.Message):
    __slots__ = ("id", "state", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: str
    error: ItemError
    def __init__(self, id: _Optional[str] = ..., state: _Optional[str] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class CompleteBatchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CompleteBatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[CompleteBatchItem, _Mapping]]] = ...) -> None: ...

class WorkflowStep(_message.Message):
    __slots__ = ("name", "kind", "params_json", "depends_on", "for_each", "on_failure", "priority", "gpus", "gpu_memory_mb", "cpus", "shared_gpu")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    FOR_EACH_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    SHARED_GPU_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    params_json: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    for_each: str
    on_failure: str
    priority: int
    gpus: int
    gpu_memory_mb: int
    cpus: int
    shared_gpu: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., params_json: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ..., for_each: _Optional[str] = ..., on_failure: _Optional[str] = ..., priority: _Optional[int] = ..., gpus: _Optional[int] = ..., gpu_memory_mb: _Optional[int] = ..., cpus: _Optional[int] = ..., shared_gpu: _Optional[bool] = ...) -> None: ...

class StartWorkflowRequest(_message.Message):
    __slots__ = ("queue", "steps", "input_json")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    queue: str
    steps: _containers.RepeatedCompositeFieldContainer[WorkflowStep]
    input_json: str
    def __init__(self, queue: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[WorkflowStep, _Mapping]]] = ..., input_json: _Optional[str] = ...) -> None: ...

class GetWorkflowRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelWorkflowRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("id", "queue", "state", "json")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: str
    state: str
    json: str
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[str] = ..., state: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...
