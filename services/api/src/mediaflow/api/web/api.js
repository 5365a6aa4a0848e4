// The REST API as the console uses it. The key lives in sessionStorage (gone when the tab closes) and
// travels only in the Authorization header: never in a URL, not even for Server-Sent Events, which
// are read with fetch streaming instead of EventSource.

const KEY = "mediaflow.apiKey";
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function getKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    const code = body && body.code ? body.code : `http_${status}`;
    super(body && body.detail ? `${code}: ${body.detail}` : `${code}: HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export function headers(extra = {}, key = getKey()) {
  return { Authorization: `Bearer ${key}`, ...extra };
}

/** JSON in, JSON out; a problem answer becomes an ApiError carrying its `code`. */
export async function api(path, { method = "GET", json, key, headers: extra = {}, body } = {}) {
  const init = { method, headers: headers(extra, key ?? getKey()) };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof data === "object" ? data : null);
  return data;
}

export const jobPath = (id) => `v1/jobs/${encodeURIComponent(id)}`;

/** POST /v1/media with XMLHttpRequest, for real upload progress: onProgress(loaded, total). */
export function uploadMedia(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "v1/media");
    xhr.setRequestHeader("Authorization", `Bearer ${getKey()}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(file.size, file.size);
        resolve(xhr.response);
      } else {
        reject(new ApiError(xhr.status, xhr.response));
      }
    };
    xhr.onerror = () => reject(new Error(`upload of ${file.name} failed: network error`));
    xhr.onabort = () => reject(new Error(`upload of ${file.name} aborted`));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

/** An artifact as a blob: URL (the key must not be in a URL, so no plain link). Caller revokes it. */
export async function artifactBlobUrl(artifact) {
  return blobUrl(artifact.url);
}

/** The bytes of an upload (GET /v1/media/{id}/content) as a blob: URL, with its content type. */
export async function mediaBlobUrl(mediaId) {
  return blobUrl(`/v1/media/${encodeURIComponent(mediaId)}/content`);
}

// Artifacts are fetched with `no-cache` (revalidated: a rename rewrites them under the same URL).
async function blobUrl(path) {
  const response = await fetch(path.replace(/^\//, ""), { headers: headers(), cache: "no-cache" });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { /* not a problem document */ }
    throw new ApiError(response.status, body);
  }
  return URL.createObjectURL(await response.blob());
}

export async function artifactText(artifact) {
  const response = await fetch(artifact.url.replace(/^\//, ""), { headers: headers(), cache: "no-cache" });
  if (!response.ok) throw new ApiError(response.status, null);
  return response.text();
}

export async function downloadArtifact(artifact) {
  const url = await artifactBlobUrl(artifact);
  const a = document.createElement("a");
  a.href = url;
  a.download = artifact.name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** The SSE id is the Redis stream id `<ms>-<seq>`: the event's time. */
export function eventTime(id) {
  const ms = Number(String(id || "").split("-")[0]);
  return Number.isFinite(ms) && ms > 0 ? new Date(ms) : null;
}

/**
 * Follow GET /v1/jobs/{id}/events with fetch streaming and the Authorization header.
 * onEvent({id, event, data}) for each event; resumes after the last id when the connection drops;
 * stops after a terminal state (the server ends the stream there) or when stop() is called.
 */
export function followEvents(jobId, onEvent, { onError } = {}) {
  return followStream(`${jobPath(jobId)}/events`, onEvent, { onError, resume: true });
}

// A batch ends like a job, or as `partial` (ended, mixed outcomes) or `deleted`.
export const ENDED = new Set([...TERMINAL, "partial", "deleted"]);

/** Follow GET /v1/batches/{id}/events: a `batch` event (with items) first, then `item` and `batch`
 * (totals) events as jobs move. A reconnection starts over with the whole batch. */
export function followBatch(batchId, onEvent, { onError } = {}) {
  return followStream(`v1/batches/${encodeURIComponent(batchId)}/events`, onEvent, { onError, resume: false });
}

function followStream(path, onEvent, { onError, resume }) {
  const controller = new AbortController();
  let lastId = null;
  let lastState = null;
  let stopped = false;

  function dispatch(block) {
    let id = null, event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    if (id) lastId = id;
    let parsed;
    try { parsed = JSON.parse(data.join("\n")); } catch { parsed = data.join("\n"); }
    if (event === "state" || event === "batch") lastState = parsed.state;
    if (event === "deleted") lastState = "deleted";
    onEvent({ id, event, data: parsed });
  }

  async function run() {
    let delay = 500;
    while (!stopped) {
      try {
        const query = resume && lastId ? `?after=${encodeURIComponent(lastId)}` : "";
        const response = await fetch(`${path}${query}`, {
          headers: headers({ Accept: "text/event-stream" }),
          signal: controller.signal,
        });
        if (!response.ok) {
          let body = null;
          try { body = await response.json(); } catch { /* empty */ }
          throw new ApiError(response.status, body);
        }
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        delay = 500;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            dispatch(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
        }
        if (ENDED.has(lastState)) return;  // the stream ended with the job (or batch)
      } catch (err) {
        if (stopped || err.name === "AbortError") return;
        if (err instanceof ApiError && err.status < 500) {  // 401, 404: reconnecting will not help
          if (onError) onError(err);
          return;
        }
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  run();
  return {
    stop() {
      stopped = true;
      controller.abort();
    },
  };
}
