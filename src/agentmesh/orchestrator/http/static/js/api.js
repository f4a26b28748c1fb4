// The HTTP API as the dashboard uses it: JSON calls, and a task's events and the task list's
// changes as Server-Sent Events.
//
// The bearer token lives in sessionStorage (gone when the tab closes). EventSource cannot
// send an Authorization header, so the event stream is read with fetch and parsed here.

const TOKEN_KEY = "agentmesh.token";

/** An answer of the API that is not 2xx: its HTTP status and the API's code, field, reason. */
export class ApiError extends Error {
  constructor(status, body) {
    const reason = body?.reason || `HTTP ${status}`;
    super(body?.field ? `${reason} (${body.field})` : reason);
    this.status = status;
    this.code = body?.code || "";
    this.field = body?.field || "";
    this.reason = reason;
  }
}

/** Moves a `?token=` of the address into sessionStorage, and out of the address bar and history. */
export function takeTokenFromAddress() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    setToken(token);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function authorization() {
  // Without a token the browser may still present a client certificate of the mesh CA.
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not the API's JSON (a proxy's page): the status alone says it.
  }
  return new ApiError(response.status, body);
}

/** GET (or another method with a JSON body) of `path`; the parsed answer, or ApiError. */
export async function call(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json", ...authorization() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    signal,
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** Splits text/event-stream text into frames {id, event, data}; returns the unfinished rest. */
export function parseFrames(text, onFrame) {
  const normal = text.replace(/\r\n?/g, "\n");
  const blocks = normal.split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const frame = { id: "", event: "message", data: [] };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const key = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (key === "data") frame.data.push(value);
      else if (key === "id" || key === "event") frame[key] = value;
    }
    if (frame.data.length) onFrame({ ...frame, data: JSON.parse(frame.data.join("\n")) });
  }
  return rest;
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

/**
 * Reads the Server-Sent Events of `path`, reconnecting after a broken connection (waiting
 * longer each time, up to 10 s) until `onFrame(frame)` returns true or `signal` aborts.
 * `lastEventId()` is sent as Last-Event-ID when reconnecting; `onConnection(bool)` tells
 * whether the stream is up; `onError(error)` gets a refusal (an answer under 500) or an
 * `error` frame, and then the reading stops.
 */
async function follow(path, { onFrame, onError, onConnection, signal, lastEventId = () => "" }) {
  let delay = 500;
  let done = false;
  while (!signal?.aborted && !done) {
    try {
      const headers = { Accept: "text/event-stream", ...authorization() };
      const last = lastEventId();
      if (last) headers["Last-Event-ID"] = last;
      const response = await fetch(path, { headers, cache: "no-store", signal });
      if (!response.ok) throw await failure(response);
      onConnection(true);
      delay = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      while (!done) {
        const { value, done: ended } = await reader.read();
        if (ended) break;
        let refused = null;
        buffer = parseFrames(buffer + value, (frame) => {
          if (refused || done) return;
          if (frame.event === "error") refused = new ApiError(0, frame.data);
          else if (onFrame(frame)) done = true;
        });
        if (refused) {
          onError(refused);
          return;
        }
      }
      if (done) reader.cancel().catch(() => {});
    } catch (error) {
      if (signal?.aborted) return;
      if (error instanceof ApiError && error.status < 500) {
        onError(error);
        return;
      }
    }
    if (done) break;
    // Ended unasked: the connection broke (or the server restarts); come back.
    onConnection(false);
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 10000);
  }
}

/**
 * Follows a task's events until its final state: `onEvent(kind, data)` for each one (return
 * true once the task is final), `onError(error)` when the stream is refused or ends with an
 * error event. A broken connection is resumed with Last-Event-ID, so no event is lost or
 * seen twice; `onConnection(bool)` tells whether the stream is up.
 */
export async function watchTask(taskId, { onEvent, onError, onConnection = () => {}, signal }) {
  let last = "";
  await follow(`/v1/tasks/${encodeURIComponent(taskId)}/events`, {
    signal,
    onError,
    onConnection,
    lastEventId: () => last,
    onFrame(frame) {
      if (frame.id) last = frame.id;
      return onEvent(frame.event, frame.data);
    },
  });
}

/**
 * Follows the task list's changes (until `signal` aborts): `onRelist()` when the list must be
 * read again (the stream starts with it, after every reconnection too, and when changes were
 * lost), `onTask(task)` for a task that changed. `onConnection(bool)` and `onError(error)`
 * as for watchTask.
 */
export async function watchTaskList({ onRelist, onTask, onError, onConnection = () => {}, signal }) {
  await follow("/v1/tasks/changes", {
    signal,
    onError,
    onConnection,
    onFrame(frame) {
      if (frame.event === "relist") onRelist();
      else if (frame.event === "task") onTask(frame.data);
      return false;
    },
  });
}
