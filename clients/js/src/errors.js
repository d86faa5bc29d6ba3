// Errors raised by the client. The server answers every error with
// `{"error": {"code", "message"}}` (docs/api.md, "Errors"); the class is
// chosen by the HTTP status, with `code` refining 503s, so callers can
// either `instanceof` a class or switch on `err.code`.

/** The base class of every error this client throws. */
export class OrreryError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code?: string, body?: unknown, endpoint?: string, requestId?: string|null, cause?: unknown}} [info]
   */
  constructor(message, info = {}) {
    super(message, info.cause === undefined ? undefined : { cause: info.cause });
    this.name = new.target.name;
    /** HTTP status (0 when no response arrived). */
    this.status = info.status ?? 0;
    /** The server's error code (`not_found`, `unavailable`, ...), or a client code. */
    this.code = info.code ?? "unknown";
    /** The parsed response body, when there was one. */
    this.body = info.body;
    /** The node that answered (or failed to). */
    this.endpoint = info.endpoint;
    /** The server's `x-request-id`, to find the request in the node's log. */
    this.requestId = info.requestId ?? null;
  }
}

/** 400: a bad request (`invalid_json`, `missing_field`, `invalid_vector`, ...). */
export class InvalidArgument extends OrreryError {}
/** 401: no token, or one the cluster does not know. */
export class Unauthenticated extends OrreryError {}
/** 403: the token's role lacks the endpoint's permission. */
export class PermissionDenied extends OrreryError {}
/** 404: an absent resource or an unknown endpoint. */
export class NotFound extends OrreryError {}
/** 405: the method is not served on that path. */
export class MethodNotAllowed extends OrreryError {}
/** 409: conflicts (existing name, stale lease token, cluster version too low). */
export class Conflict extends OrreryError {}
/** 413: a key, value, body or graph over its limit. */
export class TooLarge extends OrreryError {}
/** 415: a JSON endpoint got another content type (a client bug). */
export class UnsupportedMediaType extends OrreryError {}
/** 422: a synchronous policy run passed its deadline (not retried). */
export class EvaluationTimeout extends OrreryError {}
/** 500: a server bug. */
export class InternalError extends OrreryError {}
/** 503: no leader, no quorum, not initialised: safe to retry. */
export class Unavailable extends OrreryError {
  constructor(message, info = {}) {
    super(message, info);
    /** Seconds the server asked to wait (`Retry-After`), or null. */
    this.retryAfter = info.retryAfter ?? null;
  }
}
/** 503 `outcome_unknown`: a write was proposed and not confirmed; it may still apply. */
export class OutcomeUnknown extends Unavailable {}
/** No response: every endpoint refused the connection, or the network failed. */
export class ConnectionError extends OrreryError {}
/** No response within `timeoutMs`. */
export class TimeoutError extends OrreryError {}

const BY_STATUS = {
  400: InvalidArgument,
  401: Unauthenticated,
  403: PermissionDenied,
  404: NotFound,
  405: MethodNotAllowed,
  409: Conflict,
  413: TooLarge,
  415: UnsupportedMediaType,
  422: EvaluationTimeout,
  500: InternalError,
  503: Unavailable,
};

/**
 * The error for an HTTP error response.
 * @param {number} status
 * @param {unknown} body parsed JSON, text, or undefined
 * @param {{endpoint?: string, requestId?: string|null, retryAfter?: number|null}} [extra]
 * @returns {OrreryError}
 */
export function errorFromResponse(status, body, extra = {}) {
  const env = body && typeof body === "object" ? /** @type {any} */ (body).error : undefined;
  const code =
    env && typeof env.code === "string" ? env.code : status === 503 ? "unavailable" : `http_${status}`;
  const message =
    env && typeof env.message === "string"
      ? env.message
      : typeof body === "string" && body
        ? body
        : `HTTP ${status}`;
  let Cls = BY_STATUS[status] ?? OrreryError;
  if (status === 503 && code === "outcome_unknown") Cls = OutcomeUnknown;
  return new Cls(message, { status, code, body, ...extra });
}
