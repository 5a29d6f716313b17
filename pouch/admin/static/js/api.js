// The admin API, with the signed-in token. The token lives in this tab's sessionStorage and
// goes out only as "Authorization: Bearer" on the API's own origin: no cookie, so a page on
// another site cannot make the browser send anything that authenticates.

const STORAGE = "pouch.adminToken";

export function token() {
  return sessionStorage.getItem(STORAGE);
}

export function keepToken(value) {
  sessionStorage.setItem(STORAGE, value);
}

export function forgetToken() {
  sessionStorage.removeItem(STORAGE);
}

// An answer other than success, with the API's message (or what went wrong on the way).
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Told when the token stops working (revoked meanwhile): the app signs out.
let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

async function send(method, path, body, bearer) {
  const headers = {"Authorization": `Bearer ${bearer ?? token() ?? ""}`};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                  credentials: "omit", cache: "no-store"});
  } catch (e) {
    throw new ApiError(0, "The gateway does not answer: is it still running?");
  }
  if (response.ok) return response;
  let message = `${response.status} ${response.statusText}`;
  try {
    message = (await response.json()).error.message || message;
  } catch (e) { /* not the API's JSON: keep the status line */ }
  if (response.status === 401 && bearer === undefined) onUnauthorized(message);
  throw new ApiError(response.status, message);
}

// Paths are relative ("api/keys"): the dashboard works behind a proxy that mounts it under a prefix.
export async function get(path, bearer) {
  return (await send("GET", path, undefined, bearer)).json();
}

export async function post(path, body = {}) {
  return (await send("POST", path, body)).json();
}

export async function patch(path, body) {
  return (await send("PATCH", path, body)).json();
}

export async function remove(path) {
  return (await send("DELETE", path)).json();
}

// A CSV export, fetched with the token (a plain link could not send it) and handed to the
// browser as a download.
export async function download(path, fallbackName) {
  const response = await send("GET", path);
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return name;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export function keyPath(name, action = "") {
  return `api/keys/${encodeURIComponent(name)}${action ? `/${action}` : ""}`;
}
