// Types of @orrery/client. Objects sent and returned are the REST JSON of
// docs/api.md; the shapes below name the fields the client relies on and
// leave the rest open.

export interface ClientOptions {
  /** One node: `https://host:port` or `host:port`. */
  endpoint?: string;
  /** Several nodes; a node that cannot be reached is replaced by the next. */
  endpoints?: string[];
  /** Bearer token (`orr_...`). */
  token?: string;
  /** Per attempt, in ms (default 30000). */
  timeoutMs?: number;
  /** Further attempts after a 503 or an unreachable node (default 5). */
  retries?: number;
  /** Cap on one wait for `Retry-After`, in ms (default 10000). */
  maxRetryDelayMs?: number;
  /** A fetch implementation (default: the global one). */
  fetch?: typeof fetch;
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | null | undefined>;
  json?: unknown;
  body?: string | Uint8Array;
  headers?: Record<string, string>;
  timeoutMs?: number;
  /** Whether repeating the request is safe (default: GET, PUT, DELETE). */
  idempotent?: boolean;
  signal?: AbortSignal;
}

type Json = { [k: string]: any };
type Consistency = "linearizable" | "stale";

export interface Job extends Json {
  id: string;
  queue: string;
  kind: string;
  params: any;
  state: "queued" | "running" | "succeeded" | "failed" | "cancelled" | "dead";
  attempts: number;
  result: any;
  last_error: string | null;
  /** Present on a claimed job: the lease token for heartbeat/complete/fail. */
  token?: number;
  created?: boolean;
  waiting?: string | null;
}

export interface Hit {
  id: number | string;
  score: number;
  payload?: Json;
  vector?: number[];
}

export interface Filter {
  must?: Json[];
  should?: Json[];
  must_not?: Json[];
}

export interface Run extends Json {
  id: string;
  policy_id: string;
  version: number;
  status: "running" | "succeeded" | "failed";
  input: any;
  output: any;
  trace: Array<{ id: string; type: string; started: number; duration_us: number; output?: any; branch?: string; arm?: string; error?: string }>;
  error: string | null;
}

export interface JobEvent extends Json {
  id: string;
  shard: number;
  seq: number;
  type: string;
  job_id: string;
  queue: string;
  attempt: number;
  payload: any;
  ts: number;
  /** The stream position after this event: pass it as `since` to resume. */
  cursor: string;
}

type Vector = number[] | ArrayLike<number>;

export declare class Kv {
  put(key: string, value: string | Uint8Array | ArrayBuffer | ArrayBufferView): Promise<number>;
  get(key: string, opts?: { consistency?: Consistency }): Promise<Uint8Array | null>;
  getText(key: string, opts?: { consistency?: Consistency }): Promise<string | null>;
  getEntry(key: string, opts?: { consistency?: Consistency }): Promise<{ value: Uint8Array; revision: number | null } | null>;
  delete(key: string): Promise<{ deleted: boolean; revision: number }>;
  cas(key: string, expected: string | null, value: string): Promise<{ succeeded: boolean; revision: number; current?: string | null }>;
  list(opts?: { prefix?: string; limit?: number; consistency?: Consistency }): Promise<Array<{ key: string; revision: number; value: Uint8Array; text: string | null }>>;
  deletePrefix(prefix: string): Promise<number>;
}

export declare class Cluster {
  status(): Promise<Json>;
  version(): Promise<Json>;
  setVersion(body: { hold: boolean } | { finalize: true }): Promise<Json>;
  health(): Promise<{ status: string }>;
  ready(): Promise<{ status: string; placement_leader: number }>;
  metrics(): Promise<string>;
}

export declare class Queues {
  create(name: string, opts?: { partitions?: number; lease_s?: number; max_attempts?: number; backoff?: { initial_ms?: number; multiplier?: number; max_ms?: number }; concurrency_limit?: number }): Promise<Json>;
  list(): Promise<Json[]>;
  get(name: string): Promise<Json>;
  delete(name: string): Promise<{ deleted: boolean }>;
}

export interface ClaimRequest {
  worker_id: string;
  kinds?: string[];
  lease_s?: number;
  wait_s?: number;
  max?: number;
  free_gpus?: Array<{ uuid: string; free_memory_mb?: number }>;
  shared_gpus?: Array<{ uuid: string; free_memory_mb?: number }>;
  free_cpus?: number;
  complete?: Array<{ id: string; token: number; result?: any; run?: Json }>;
}

export declare class Jobs {
  submit(job: { queue: string; kind: string; params?: any; priority?: number; run_at_ms?: number; delay_ms?: number; resources?: Json; dedupe_key?: string; submitted_by?: string }): Promise<Job>;
  submitBatch(jobs: Json[]): Promise<{ jobs: Array<Job | { error: { code: string; message: string } }>; created: number; existing: number; failed: number }>;
  get(id: string): Promise<Job>;
  list(opts?: { queue?: string; state?: string; limit?: number; cursor?: string }): Promise<{ jobs: Job[]; next_cursor: string | null }>;
  cancel(id: string): Promise<Job>;
  runs(id: string): Promise<Json[]>;
  logs(id: string, opts?: { attempt?: number }): Promise<string>;
  followLogs(id: string, opts?: { attempt?: number; signal?: AbortSignal }): AsyncGenerator<{ type: "log" | "lagged"; text: string }>;
  /** A job (with `token`), null when nothing was claimable, or `{jobs, completions?}` with `max` or `complete`. */
  claim(queue: string, req: ClaimRequest): Promise<Job | { jobs: Job[]; completions?: Json } | null>;
  heartbeat(id: string, token: number): Promise<{ cancelled: boolean; lease_expires_ms: number }>;
  complete(id: string, token: number, opts?: { result?: any; run?: Json }): Promise<Job>;
  fail(id: string, token: number, opts?: { error?: string; retry?: boolean; run?: Json }): Promise<Job>;
  completeBatch(completions: Array<{ id: string; token: number; result?: any; run?: Json }>): Promise<{ results: Json[]; completed: number; failed: number }>;
}

export interface WorkflowStep {
  name: string;
  kind: string;
  params?: any;
  depends_on?: string[];
  /** A step in depends_on whose result is an array: one job per item. */
  for_each?: string;
  on_failure?: "fail_workflow" | "continue";
  priority?: number;
  resources?: { gpus?: number; gpu_memory_mb?: number; cpus?: number; shared_gpu?: boolean };
}

export interface Workflow extends Json {
  id: string;
  queue: string;
  partition: number;
  state: "running" | "succeeded" | "failed" | "cancelled";
  error: string | null;
  input: any;
  steps: Array<{
    name: string;
    kind: string;
    depends_on: string[];
    for_each: string | null;
    on_failure: "fail_workflow" | "continue";
    state: "pending" | "claimable" | "running" | "succeeded" | "failed" | "cancelled" | "skipped";
    jobs: Array<{ id: string; state: Job["state"]; attempts: number }>;
    result: any;
    error: string | null;
  }>;
}

export declare class Workflows {
  start(workflow: { queue: string; steps: WorkflowStep[]; input?: any }): Promise<Workflow>;
  get(id: string): Promise<Workflow>;
  cancel(id: string): Promise<Workflow>;
}

export declare class Events {
  list(opts?: { since?: string; limit?: number }): Promise<{ events: Omit<JobEvent, "cursor">[]; cursor: string }>;
  stream(opts?: { since?: string; signal?: AbortSignal }): AsyncGenerator<JobEvent>;
}

export declare class Gpus {
  list(): Promise<{ gpus: Json[]; nodes: Json[] }>;
}

export declare class Collections {
  create(name: string, opts: { dim: number; metric?: "cosine" | "l2" | "dot"; shards?: number; replication?: number; m?: number; ef_construction?: number; ef_search?: number }): Promise<Json>;
  list(): Promise<Json[]>;
  get(name: string): Promise<Json>;
  delete(name: string): Promise<{ dropped: unknown }>;
  upsert(name: string, points: Array<{ id: number | string; vector: Vector; payload?: Json }>): Promise<number>;
  getPoint(name: string, id: number | string): Promise<{ id: number | string; vector: number[]; payload: Json | null } | null>;
  deletePoints(name: string, sel: { ids: Array<number | string> } | { filter: Filter }): Promise<number>;
  search(name: string, vector: Vector, opts?: { k?: number; filter?: Filter; ef?: number; exact?: boolean; with_payload?: boolean; with_vector?: boolean; consistency?: Consistency }): Promise<Hit[]>;
  searchBatch(name: string, searches: Array<{ vector: Vector; k?: number; filter?: Filter; ef?: number; exact?: boolean; with_payload?: boolean; with_vector?: boolean }>): Promise<Hit[][]>;
}

export declare class Policies {
  create(name: string, opts?: { description?: string }): Promise<Json>;
  list(): Promise<Json[]>;
  get(id: string): Promise<Json>;
  update(id: string, patch: { description?: string; allocation?: Array<{ version: number; weight: number }> }): Promise<Json>;
  delete(id: string): Promise<{ deleted: boolean }>;
  createVersion(id: string, graph: { nodes: Json[]; edges: Json[]; deadline_ms?: number }, opts?: { activate?: boolean; created_by?: string }): Promise<Json>;
  versions(id: string): Promise<Json[]>;
  version(id: string, v: number): Promise<Json>;
  archiveVersion(id: string, v: number): Promise<Json>;
  run(id: string, input: Json, opts?: { version?: number; run_key?: string; mode?: "sync" | "async" }): Promise<Run>;
  runBatch(id: string, inputs: Json[], opts?: { version?: number }): Promise<{ version: number; results: Array<{ status: string; output: any; error: string | null }> }>;
}

export declare class Runs {
  get(id: string): Promise<Run>;
  list(opts?: { policy?: string; version?: number; status?: "running" | "succeeded" | "failed"; limit?: number; cursor?: string }): Promise<{ runs: Run[]; next_cursor: string | null }>;
}

export declare class DataSources {
  create(source: { name: string; kind: "kv" | "http" | "vector"; [field: string]: any }): Promise<Json>;
  list(): Promise<Json[]>;
  delete(name: string): Promise<{ deleted: boolean }>;
}

export declare class Tokens {
  create(body: { name: string; role: "admin" | "writer" | "reader" | "worker"; queues?: string[]; ttl_s?: number }): Promise<Json & { id: string; token: string; role: string }>;
  list(): Promise<Json[]>;
  revoke(id: string): Promise<Json>;
}

export declare class Client {
  constructor(opts: ClientOptions);
  readonly kv: Kv;
  readonly cluster: Cluster;
  readonly queues: Queues;
  readonly jobs: Jobs;
  readonly workflows: Workflows;
  readonly events: Events;
  readonly gpus: Gpus;
  readonly collections: Collections;
  readonly policies: Policies;
  readonly runs: Runs;
  readonly dataSources: DataSources;
  readonly tokens: Tokens;
  /** The endpoint requests currently go to. */
  readonly endpoint: string;
  /** Any route, with the same errors and retries; resolves to the decoded body. */
  request(method: string, path: string, opts?: RequestOptions): Promise<any>;
}

export declare class OrreryError extends Error {
  /** HTTP status; 0 when no response arrived. */
  readonly status: number;
  /** The server's `error.code`, or `connection`, `tls`, `timeout`. */
  readonly code: string;
  readonly body: unknown;
  readonly endpoint: string | undefined;
  readonly requestId: string | null;
}
export declare class InvalidArgument extends OrreryError {}
export declare class Unauthenticated extends OrreryError {}
export declare class PermissionDenied extends OrreryError {}
export declare class NotFound extends OrreryError {}
export declare class MethodNotAllowed extends OrreryError {}
export declare class Conflict extends OrreryError {}
export declare class TooLarge extends OrreryError {}
export declare class UnsupportedMediaType extends OrreryError {}
export declare class EvaluationTimeout extends OrreryError {}
export declare class InternalError extends OrreryError {}
export declare class Unavailable extends OrreryError {
  /** Seconds from `Retry-After`, or null. */
  readonly retryAfter: number | null;
}
export declare class OutcomeUnknown extends Unavailable {}
export declare class ConnectionError extends OrreryError {}
export declare class TimeoutError extends OrreryError {}
export declare function errorFromResponse(status: number, body: unknown, extra?: { endpoint?: string; requestId?: string | null; retryAfter?: number | null }): OrreryError;
