/* The public API (/v1/...): requests with the token, problem+json answers as ApiError. */

import { authHeaders, showAuth } from "./auth.js";

export class ApiError extends Error {
  constructor(status, title, detail, problem) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.problem = problem || {};
  }
}

export async function readProblem(resp) {
  const text = await resp.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && typeof body === "object") {
      return { title: body.title || resp.statusText || `HTTP ${resp.status}`,
               detail: body.detail || "", problem: body };
    }
  } catch (_) { /* not JSON */ }
  return { title: resp.statusText || `HTTP ${resp.status}`, detail: text.slice(0, 300),
           problem: {} };
}

export async function request(path, { method = "GET", accept = "application/json", body } = {}) {
  let resp;
  const headers = { Accept: accept, ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    resp = await fetch(path, { method, cache: "no-store", headers,
                               body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "The service did not answer", String(err.message || err));
  }
  if (!resp.ok) {
    const p = await readProblem(resp);
    if (resp.status === 401) showAuth(p.detail);
    throw new ApiError(resp.status, p.title, p.detail, p.problem);
  }
  return resp;
}

export async function api(path, options) {
  const resp = await request(path, options);
  return resp.status === 204 ? null : resp.json();
}

let machine = null;

/** The job state machine as data ({states, initial, transitions}); asked once per page load. */
export function fetchMachine() {
  if (!machine) {
    machine = api("/v1/fsm").catch((err) => {
      machine = null;
      throw err;
    });
  }
  return machine;
}
