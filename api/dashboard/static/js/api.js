// The dashboard's only door to the server: the /v1 API with the signed-in key as a Bearer
// header, and the job stream (Server-Sent Events read with fetch, since EventSource cannot
// send headers and the key must never go into a URL).

const KEY = "lco.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function signIn(key) {
  sessionStorage.setItem(KEY, key);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${apiKey()}`, ...extra };
}

async function failure(res) {
  const body = await res.json().catch(() => null);
  if (res.status === 401) window.dispatchEvent(new Event("lco:unauthorized"));
  return new ApiError(res.status, body?.error?.message || `${res.status} ${res.statusText}`);
}

// GET (or POST with `body`) a /v1 path; resolves to the parsed JSON, rejects with ApiError.
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(`/v1${path}`, init);
  if (!res.ok) throw await failure(res);
  return res.json();
}

// A plain link cannot carry the key, and the key never goes into a URL: ask the API for a
// short-lived signed link to this checkpoint, then follow it, so the browser streams the
// tar to disk itself (no copy in memory, whatever the model's size).
export async function downloadCheckpoint(jobId, checkpointId) {
  const link = await api(
    `/fine_tuning/jobs/${encodeURIComponent(jobId)}/checkpoints/${encodeURIComponent(checkpointId)}/download_link`,
    { method: "POST" },
  );
  const a = document.createElement("a");
  a.href = link.url;
  a.download = "";
  document.body.append(a);
  a.click();
  a.remove();
}

// Reads one SSE response, calling onMessage(type, data) per message; returns at its end.
async function readStream(path, onMessage, signal) {
  const res = await fetch(`/v1${path}`, {
    headers: headers({ Accept: "text/event-stream" }),
    signal,
  });
  if (!res.ok) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let type = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") type = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) onMessage(type, JSON.parse(data.join("\n")));
    }
  }
}

// Follows a job's stream until it ends (`end` message) or `signal` aborts. Each connection
// replays the job's history, so `onConnect` runs first and the caller starts afresh; a
// dropped connection is retried with a growing pause.
export async function watchJob(jobId, { onConnect, onMessage, onError, signal }) {
  let pause = 1000;
  while (!signal.aborted) {
    let ended = false;
    try {
      onConnect();
      await readStream(
        `/fine_tuning/jobs/${encodeURIComponent(jobId)}/stream`,
        (type, data) => {
          if (type === "end") ended = true;
          onMessage(type, data);
        },
        signal,
      );
      pause = 1000;
    } catch (err) {
      if (signal.aborted) return;
      onError?.(err);
      if (err instanceof ApiError && err.status < 500) return; // 401/404: retrying won't help
    }
    if (ended || signal.aborted) return;
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 15000);
  }
}
