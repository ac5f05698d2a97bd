// The REST client: the token lives in sessionStorage (this tab only) and leaves only as an Authorization
// header to this origin. Paths are always absolute paths on this origin, never full URLs.

const STORAGE_KEY = "commhub.login";

/** An error answer of the hub: its HTTP status, stable code and readable message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let login = null; // {token, user, network_id}
let onUnauthorized = () => {};

/** Called when the hub answers 401 (token revoked or expired): the page goes back to the login form. */
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

/** The stored login of this tab, or null. */
export function loadLogin() {
  try {
    login = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
  } catch {
    login = null;
  }
  return login;
}

/** Keep a login for this tab (survives a reload, not the closing of the tab). */
export function saveLogin(value) {
  login = value;
  try { sessionStorage.setItem(STORAGE_KEY, JSON.stringify(value)); } catch { /* memory only */ }
}

/** Forget the login. */
export function clearLogin() {
  login = null;
  try { sessionStorage.removeItem(STORAGE_KEY); } catch { /* nothing stored */ }
}

/** The current bearer token, or null. */
export function token() { return login ? login.token : null; }

function checkPath(path) {
  if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//")) {
    throw new Error(`not a same-origin path: ${path}`);
  }
}

/** Headers for an authenticated request to this origin. */
export function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (login) headers.Authorization = `Bearer ${login.token}`;
  return headers;
}

/** A path with query parameters; empty values are left out. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") q.set(key, String(value));
  }
  const text = q.toString();
  return text ? `${path}?${text}` : path;
}

/** Call the hub; resolves to the JSON answer or throws an ApiError carrying the hub's message. `bearer`, when
 * given, is sent instead of the login's token (registering with the hub's registration token). */
export async function api(method, path, body, bearer) {
  checkPath(path);
  const headers = authHeaders({ Accept: "application/json" });
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store", redirect: "error",
    });
  } catch (err) {
    throw new ApiError(0, "network_error", `the hub did not answer (${err.message}); is it running?`);
  }
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const error = new ApiError(response.status, (data && data.error) || "http_error",
      (data && data.message) || `HTTP ${response.status}`);
    if (response.status === 401 && login && path !== "/api/auth/login") onUnauthorized(error);
    throw error;
  }
  return data;
}

/** True when the hub does not have this endpoint at all (an older server), not "this item is missing". */
export function isMissingEndpoint(err) {
  return err instanceof ApiError && (err.status === 404 || err.status === 405)
    && (err.code === "method_not_allowed" || err.message.startsWith("no such endpoint"));
}
