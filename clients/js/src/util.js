// Small helpers shared by the groups.

/** One path segment, percent-encoded (names, ids). */
export function seg(s) {
  if (s === undefined || s === null || String(s) === "") throw new TypeError("a name or id is required");
  return encodeURIComponent(String(s));
}

/** A vector as a plain array of numbers (arrays and typed arrays accepted). */
export function vec(v) {
  if (Array.isArray(v)) return v;
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(/** @type {any} */ (v));
  throw new TypeError("a vector must be an array of numbers or a typed array (Float32Array, ...)");
}
