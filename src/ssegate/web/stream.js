// One answer, over fetch: start it (POST /v1/chat/stream) or resume it (GET /v1/streams/{id}?after=seq),
// read the event stream, and when the connection drops before the terminal event, reconnect with a backoff
// long enough to outlast a short network outage (the page asks the server for a 30 s resume grace) and carry
// on from the last seq seen. No DOM: the page passes handlers, tests pass a fake fetch.
//
// streamChat() resolves with how the answer ended, never rejects:
//   {outcome: "done", finish_reason, usage, tool_calls?, provider_data?}   the `done` event (CONTRACT §3.1),
//                                                    or finish_reason "ended" after a 204 on resume
//   {outcome: "error", error: {code, message, retryable}, status?, retryAfter?, resume?}
//   {outcome: "aborted"}                             the caller's AbortSignal fired
// Events are delivered in seq order, each seq once: anything at or below the last seq seen is ignored,
// which is what makes a resume gap-free and duplicate-free. Besides text deltas, the parts of an answer are
// passed on as they come: `reasoning` ({delta}), `tool_call` ({index, id, name}) and `tool_call_delta`
// ({index, arguments}); events of a kind this page does not know are skipped (their seq still counts).

import { SSEParser } from "./sse.js";

/**
 * Default reconnect delays (ms); one attempt per entry. They add up to about 35 s, a little more than the
 * resume grace the page asks for, so a network outage shorter than the grace never loses the answer.
 */
export const BACKOFF_MS = [250, 500, 1000, 2000, 3000, 4000, 4000, 4000, 4000, 4000, 4000, 4000];

/** Status → error code, for error responses that carry no ssegate JSON body (e.g. from a proxy). */
const STATUS_CODES = {
  400: "invalid_request",
  401: "unauthorized",
  404: "not_found",
  413: "payload_too_large",
  422: "invalid_request",
  429: "rate_limited",
  502: "upstream_error",
  503: "overloaded",
  504: "upstream_timeout",
};

/** Statuses worth another resume attempt: the gateway or a proxy in front of it is briefly unavailable. */
const TRANSIENT = new Set([408, 425, 429, 500, 502, 503, 504]);

/** Split an event id "<stream_id>:<seq>" into its parts; null when it is not one. */
export function splitEventId(id) {
  const i = id.lastIndexOf(":");
  if (i <= 0) return null;
  const digits = id.slice(i + 1);
  if (!/^[0-9]{1,15}$/.test(digits)) return null;
  const seq = Number(digits);
  return { streamId: id.slice(0, i), seq };
}

/** Read an error response into {code, message, retryable}, whatever its body is. */
export async function errorFromResponse(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: fall back to the status
  }
  const e = body && typeof body === "object" && body.error && typeof body.error === "object" ? body.error : {};
  const code = typeof e.code === "string" && e.code ? e.code : STATUS_CODES[response.status] || "http_error";
  const message =
    typeof e.message === "string" && e.message ? e.message : `HTTP ${response.status} ${response.statusText || ""}`.trim();
  const retryable = typeof e.retryable === "boolean" ? e.retryable : TRANSIENT.has(response.status);
  return { code, message, retryable };
}

function retryAfterSeconds(response) {
  const v = response.headers.get("Retry-After");
  if (!v) return undefined;
  const n = Number(v);
  if (Number.isFinite(n)) return Math.max(0, n);
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, Math.round((t - Date.now()) / 1000));
}

/** Sleep `ms`, cut short by `signal` aborting or by an "online" event on `wake` (the network is back). */
function abortableSleep(ms, signal, wake) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      wake?.removeEventListener("online", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
    wake?.addEventListener("online", done, { once: true });
  });
}

function safeJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * Stream one answer.
 * @param {object} opts
 * @param {{messages: {role: string, content: string}[], model?: string}} [opts.request] start a new answer
 * @param {{streamId: string, lastSeq: number}} [opts.resume] or pick up an existing one after lastSeq
 * @param {string} [opts.apiKey] sent as "Authorization: Bearer <key>" when set
 * @param {string} [opts.baseUrl] "" for the page's own origin
 * @param {AbortSignal} [opts.signal]
 * @param {object} [opts.handlers] onStreamId(id), onStart(data, seq), onDelta(text, seq),
 *   onReasoning(text, seq), onToolCall({index, id, name}, seq), onToolCallDelta({index, arguments}, seq),
 *   onSeq(seq), onHeartbeat(text), onReconnect({attempt, delayMs}), onConnected({resumed})
 * @param {number[]} [opts.backoff] reconnect delays in ms
 * @param {EventTarget} [opts.wake] an "online" event on it ends a reconnect wait early (the page: window)
 * @param {typeof fetch} [opts.fetch]
 */
export async function streamChat(opts) {
  const {
    request,
    resume,
    apiKey = "",
    baseUrl = "",
    signal,
    handlers = {},
    backoff = BACKOFF_MS,
    wake,
    fetch: fetchImpl = globalThis.fetch.bind(globalThis),
  } = opts;
  const h = {
    onStreamId() {},
    onStart() {},
    onDelta() {},
    onReasoning() {},
    onToolCall() {},
    onToolCallDelta() {},
    onSeq() {},
    onHeartbeat() {},
    onReconnect() {},
    onConnected() {},
    ...handlers,
  };
  const auth = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
  let streamId = resume ? resume.streamId : null;
  let lastSeq = resume ? resume.lastSeq : 0;
  let terminal = null;

  // Feed one response body through the parser; returns when the body ends, throws when it errors.
  async function consume(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder("utf-8");
    const parser = new SSEParser({
      onEvent(event) {
        if (terminal) return;
        const id = splitEventId(event.lastEventId);
        if (!id) return; // every ssegate event has an id; anything else is not ours
        if (id.seq <= lastSeq) return; // replayed: already have it
        const data = safeJSON(event.data);
        lastSeq = id.seq;
        if (!streamId) {
          streamId = id.streamId;
          h.onStreamId(streamId);
        }
        if (event.type === "start") {
          h.onStart(data || {}, id.seq);
        } else if (event.type === "message") {
          if (data && typeof data.delta === "string") h.onDelta(data.delta, id.seq);
        } else if (event.type === "reasoning") {
          if (data && typeof data.delta === "string") h.onReasoning(data.delta, id.seq);
        } else if (event.type === "tool_call") {
          if (data && Number.isSafeInteger(data.index) && data.index >= 0) {
            h.onToolCall(
              { index: data.index, id: typeof data.id === "string" ? data.id : "", name: typeof data.name === "string" ? data.name : "" },
              id.seq,
            );
          }
        } else if (event.type === "tool_call_delta") {
          if (data && Number.isSafeInteger(data.index) && data.index >= 0 && typeof data.arguments === "string") {
            h.onToolCallDelta({ index: data.index, arguments: data.arguments }, id.seq);
          }
        } else if (event.type === "done") {
          terminal = { outcome: "done", finish_reason: data?.finish_reason ?? "stop", usage: data?.usage ?? null };
          if (Array.isArray(data?.tool_calls)) terminal.tool_calls = data.tool_calls;
          if (data && data.provider_data !== undefined && data.provider_data !== null) {
            terminal.provider_data = data.provider_data;
          }
        } else if (event.type === "error") {
          const e = data?.error || {};
          terminal = {
            outcome: "error",
            error: {
              code: e.code || "upstream_error",
              message: e.message || "the stream failed",
              retryable: Boolean(e.retryable),
            },
          };
        }
        h.onSeq(lastSeq);
      },
      onComment: (text) => h.onHeartbeat(text),
    });
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(decoder.decode(value, { stream: true }));
        if (terminal) break;
      }
      if (!terminal) parser.feed(decoder.decode());
    } finally {
      if (terminal) reader.cancel().catch(() => {});
      else reader.releaseLock?.();
    }
  }

  // 1. Start the answer, unless resuming one.
  if (!resume) {
    let response;
    try {
      response = await fetchImpl(`${baseUrl}/v1/chat/stream`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...auth },
        body: JSON.stringify(request),
        signal,
        cache: "no-store",
      });
    } catch (err) {
      if (signal?.aborted) return { outcome: "aborted" };
      return { outcome: "error", error: networkError(err) };
    }
    if (!response.ok || !response.body) {
      const error = await errorFromResponse(response);
      return { outcome: "error", error, status: response.status, retryAfter: retryAfterSeconds(response) };
    }
    const header = response.headers.get("X-Stream-Id");
    if (header) {
      streamId = header;
      h.onStreamId(streamId);
    }
    h.onConnected({ resumed: false });
    try {
      await consume(response);
    } catch {
      // the body broke off: fall through to resuming
    }
    if (terminal) return terminal;
    if (signal?.aborted) return { outcome: "aborted" };
    if (!streamId) {
      return { outcome: "error", error: { code: "connection_lost", message: "no stream id", retryable: true } };
    }
  }

  // 2. Resume (after a drop, or because we were asked to), with backoff, until a terminal event.
  let attempt = 0;
  let immediate = Boolean(resume); // a requested resume goes at once; a drop waits first
  for (;;) {
    if (!immediate) {
      if (attempt >= backoff.length) {
        return {
          outcome: "error",
          error: { code: "connection_lost", message: "the connection dropped and could not be resumed", retryable: true },
          resume: true,
        };
      }
      const delayMs = backoff[attempt++];
      h.onReconnect({ attempt, delayMs });
      await abortableSleep(delayMs, signal, wake);
      if (signal?.aborted) return { outcome: "aborted" };
    }
    immediate = false;
    let response;
    try {
      response = await fetchImpl(`${baseUrl}/v1/streams/${encodeURIComponent(streamId)}?after=${lastSeq}`, {
        method: "GET",
        headers: { Accept: "text/event-stream", ...auth },
        signal,
        cache: "no-store",
      });
    } catch {
      if (signal?.aborted) return { outcome: "aborted" };
      continue; // network still down
    }
    if (response.status === 204) {
      // Nothing after lastSeq and the stream is over: it ended while we were away.
      return { outcome: "done", finish_reason: "ended", usage: null, ended: true };
    }
    if (!response.ok || !response.body) {
      const error = await errorFromResponse(response);
      if (TRANSIENT.has(response.status)) continue;
      return { outcome: "error", error, status: response.status, resume: true };
    }
    h.onConnected({ resumed: true });
    const before = lastSeq;
    try {
      await consume(response);
    } catch {
      // dropped again
    }
    if (terminal) return terminal;
    if (signal?.aborted) return { outcome: "aborted" };
    if (lastSeq > before) attempt = 0; // progress: the backoff starts over
  }
}

function networkError(err) {
  return {
    code: "network_error",
    message: err && err.message ? String(err.message) : "could not reach the gateway",
    retryable: true,
  };
}

/** Ask the server to stop a generation (fire and forget; the page has already stopped listening). */
export async function cancelStream({ streamId, apiKey = "", baseUrl = "", fetch: fetchImpl = globalThis.fetch.bind(globalThis) }) {
  try {
    const response = await fetchImpl(`${baseUrl}/v1/streams/${encodeURIComponent(streamId)}/cancel`, {
      method: "POST",
      headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {},
      keepalive: true,
    });
    return response.status;
  } catch {
    return 0;
  }
}
