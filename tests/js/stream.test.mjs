// The chat page's fetch/resume logic against a scripted fake fetch (run: node --test tests/js/).
import { test } from "node:test";
import assert from "node:assert/strict";

import { splitEventId, streamChat } from "../../src/ssegate/web/stream.js";

const enc = new TextEncoder();
const SID = "abc_DEF-123";

function ev(seq, type, data) {
  return `id: ${SID}:${seq}\n${type ? `event: ${type}\n` : ""}data: ${JSON.stringify(data)}\n\n`;
}
const start = (seq = 1) => ev(seq, "start", { stream_id: SID, model: "demo" });
const delta = (seq, text) => ev(seq, null, { delta: text });
const done = (seq, finish_reason = "stop") => ev(seq, "done", { finish_reason, usage: { completion_tokens: 2 } });

/** A Response whose body sends `chunks`, then ends, or errors when `breakOff` (a dropped connection). */
function sse(chunks, { breakOff = false, headers = {} } = {}) {
  const body = new ReadableStream({
    async pull(controller) {
      if (chunks.length) {
        controller.enqueue(enc.encode(chunks.shift()));
        await new Promise((r) => setTimeout(r, 1));
      } else if (breakOff) controller.error(new TypeError("network error"));
      else controller.close();
    },
  });
  return new Response(body, {
    status: 200,
    headers: { "Content-Type": "text/event-stream", "X-Stream-Id": SID, ...headers },
  });
}

function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

/** A fake fetch that answers each call with the next scripted reply (a Response, an Error, or a function). */
function script(...replies) {
  const calls = [];
  async function fetch(url, init = {}) {
    calls.push({ url, method: init.method || "GET", headers: init.headers || {}, body: init.body });
    if (init.signal?.aborted) throw new DOMException("aborted", "AbortError");
    const reply = replies.shift();
    if (!reply) throw new Error(`unexpected fetch ${url}`);
    const r = typeof reply === "function" ? reply(url, init) : reply;
    if (r instanceof Error) throw r;
    return r;
  }
  return { fetch, calls };
}

function collect() {
  const seen = { deltas: [], seqs: [], ids: [], heartbeats: 0, reconnects: [], starts: [] };
  const handlers = {
    onStreamId: (id) => seen.ids.push(id),
    onStart: (d) => seen.starts.push(d),
    onDelta: (t, seq) => seen.deltas.push([seq, t]),
    onSeq: (s) => seen.seqs.push(s),
    onHeartbeat: () => seen.heartbeats++,
    onReconnect: (r) => seen.reconnects.push(r),
  };
  return { seen, handlers, text: () => seen.deltas.map(([, t]) => t).join("") };
}

const request = { messages: [{ role: "user", content: "hi" }] };
const fast = [1, 1, 1];

test("splitEventId", () => {
  assert.deepEqual(splitEventId("a:b:12"), { streamId: "a:b", seq: 12 });
  assert.equal(splitEventId("nocolon"), null);
  assert.equal(splitEventId("x:"), null);
  assert.equal(splitEventId("x:-1"), null);
});

test("a whole answer: POST, start, deltas, heartbeat, done", async () => {
  const { fetch, calls } = script(sse([start(), delta(2, "Hel"), ": ping\n\n", delta(3, "lo"), done(4)]));
  const c = collect();
  const result = await streamChat({ request, apiKey: "k1", fetch, handlers: c.handlers });
  assert.deepEqual(result, { outcome: "done", finish_reason: "stop", usage: { completion_tokens: 2 } });
  assert.equal(c.text(), "Hello");
  assert.deepEqual(c.seen.seqs, [1, 2, 3, 4]);
  assert.equal(c.seen.heartbeats, 1);
  assert.deepEqual(c.seen.ids, [SID]);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, "/v1/chat/stream");
  assert.equal(calls[0].method, "POST");
  assert.equal(calls[0].headers.Authorization, "Bearer k1");
  assert.deepEqual(JSON.parse(calls[0].body), request);
});

test("no Authorization header without a key", async () => {
  const { fetch, calls } = script(sse([start(), done(2)]));
  await streamChat({ request, fetch });
  assert.equal(calls[0].headers.Authorization, undefined);
});

test("an error before the commit is the HTTP status and JSON body", async () => {
  const { fetch } = script(
    json(429, { error: { code: "rate_limited", message: "slow down", retryable: true } }, { "Retry-After": "3" }),
  );
  const result = await streamChat({ request, fetch });
  assert.deepEqual(result, {
    outcome: "error",
    error: { code: "rate_limited", message: "slow down", retryable: true },
    status: 429,
    retryAfter: 3,
  });
});

test("an error response that is not ours (a proxy's HTML) maps its status", async () => {
  const { fetch } = script(new Response("<html>Bad Gateway</html>", { status: 502, statusText: "Bad Gateway" }));
  const result = await streamChat({ request, fetch });
  assert.equal(result.error.code, "upstream_error");
  assert.equal(result.error.retryable, true);
});

test("an unreachable gateway is a retryable network_error", async () => {
  const { fetch } = script(new TypeError("Failed to fetch"));
  const result = await streamChat({ request, fetch });
  assert.equal(result.error.code, "network_error");
  assert.equal(result.error.retryable, true);
});

test("an error event after the commit ends the answer", async () => {
  const { fetch } = script(
    sse([start(), delta(2, "par"), ev(3, "error", { error: { code: "upstream_timeout", message: "idle", retryable: true } })]),
  );
  const c = collect();
  const result = await streamChat({ request, fetch, handlers: c.handlers });
  assert.deepEqual(result, { outcome: "error", error: { code: "upstream_timeout", message: "idle", retryable: true } });
  assert.equal(c.text(), "par");
});

test("a drop mid-answer resumes after the last seq: no gap, no duplicate", async () => {
  const { fetch, calls } = script(
    sse([start(), delta(2, "one "), delta(3, "two ")], { breakOff: true }),
    new TypeError("still down"),
    // the server replays from an earlier seq than asked (or a proxy retried): duplicates must be ignored
    sse([delta(2, "one "), delta(3, "two "), delta(4, "three"), done(5)]),
  );
  const c = collect();
  const result = await streamChat({ request, fetch, handlers: c.handlers, backoff: fast });
  assert.equal(result.outcome, "done");
  assert.equal(c.text(), "one two three");
  assert.deepEqual(c.seen.seqs, [1, 2, 3, 4, 5]);
  assert.equal(calls[1].url, `/v1/streams/${SID}?after=3`);
  assert.equal(calls[2].url, `/v1/streams/${SID}?after=3`);
  assert.equal(c.seen.reconnects.length, 2);
});

test("a body that just ends before the terminal event is a drop too", async () => {
  const { fetch, calls } = script(sse([start(), delta(2, "a")]), sse([delta(3, "b"), done(4)]));
  const c = collect();
  const result = await streamChat({ request, fetch, handlers: c.handlers, backoff: fast });
  assert.equal(result.outcome, "done");
  assert.equal(c.text(), "ab");
  assert.equal(calls[1].url, `/v1/streams/${SID}?after=2`);
});

test("resume after a reload: GET at once, with the key", async () => {
  const { fetch, calls } = script(sse([delta(5, "rest"), done(6, "length")]));
  const c = collect();
  const result = await streamChat({ resume: { streamId: SID, lastSeq: 4 }, apiKey: "k", fetch, handlers: c.handlers });
  assert.equal(result.finish_reason, "length");
  assert.equal(c.text(), "rest");
  assert.equal(calls[0].url, `/v1/streams/${SID}?after=4`);
  assert.equal(calls[0].headers.Authorization, "Bearer k");
  assert.deepEqual(c.seen.reconnects, []);
});

test("resume answered 404: the stream is gone", async () => {
  const { fetch } = script(json(404, { error: { code: "not_found", message: "no such stream", retryable: false } }));
  const result = await streamChat({ resume: { streamId: SID, lastSeq: 4 }, fetch });
  assert.equal(result.outcome, "error");
  assert.equal(result.error.code, "not_found");
  assert.equal(result.resume, true);
});

test("resume answered 204: it already ended", async () => {
  const { fetch } = script(new Response(null, { status: 204 }));
  const result = await streamChat({ resume: { streamId: SID, lastSeq: 9 }, fetch });
  assert.equal(result.outcome, "done");
  assert.equal(result.ended, true);
});

test("a 503 on resume is retried; giving up is connection_lost", async () => {
  const busy = () => json(503, { error: { code: "overloaded", message: "busy", retryable: true } });
  const { fetch, calls } = script(sse([start()], { breakOff: true }), busy, new TypeError("down"), busy);
  const c = collect();
  const result = await streamChat({ request, fetch, handlers: c.handlers, backoff: fast });
  assert.equal(result.outcome, "error");
  assert.equal(result.error.code, "connection_lost");
  assert.equal(result.error.retryable, true);
  assert.equal(calls.length, 4);
  assert.deepEqual(c.seen.reconnects.map((r) => r.attempt), [1, 2, 3]);
});

test("aborting stops reading and never resumes", async () => {
  const ac = new AbortController();
  const body = new ReadableStream({
    start(controller) {
      controller.enqueue(enc.encode(start() + delta(2, "x")));
      ac.signal.addEventListener("abort", () => controller.error(new DOMException("aborted", "AbortError")));
    },
  });
  const { fetch, calls } = script(new Response(body, { status: 200, headers: { "X-Stream-Id": SID } }));
  const c = collect();
  const pending = streamChat({ request, fetch, signal: ac.signal, handlers: c.handlers, backoff: fast });
  await new Promise((r) => setTimeout(r, 20));
  ac.abort();
  assert.deepEqual(await pending, { outcome: "aborted" });
  assert.equal(c.text(), "x");
  assert.equal(calls.length, 1);
});

test("aborting during the reconnect wait ends at once", async () => {
  const ac = new AbortController();
  const { fetch, calls } = script(sse([start()], { breakOff: true }));
  const c = collect();
  c.handlers.onReconnect = () => ac.abort();
  const t0 = Date.now();
  const result = await streamChat({ request, fetch, signal: ac.signal, handlers: c.handlers, backoff: [10000] });
  assert.deepEqual(result, { outcome: "aborted" });
  assert.ok(Date.now() - t0 < 2000);
  assert.equal(calls.length, 1);
});

test("the network coming back (an `online` event) ends a reconnect wait at once", async () => {
  const wake = new EventTarget();
  const { fetch, calls } = script(sse([start(), delta(2, "a")], { breakOff: true }), sse([delta(3, "b"), done(4)]));
  const c = collect();
  c.handlers.onReconnect = () => setTimeout(() => wake.dispatchEvent(new Event("online")), 5);
  const t0 = Date.now();
  const result = await streamChat({ request, fetch, handlers: c.handlers, backoff: [60000], wake });
  assert.equal(result.outcome, "done");
  assert.equal(c.text(), "ab");
  assert.ok(Date.now() - t0 < 5000);
  assert.equal(calls[1].url, `/v1/streams/${SID}?after=2`);
});

test("the default backoff outlasts the 30 s resume grace the page asks for", async () => {
  const { BACKOFF_MS } = await import("../../src/ssegate/web/stream.js");
  const total = BACKOFF_MS.reduce((a, b) => a + b, 0);
  assert.ok(total > 30000 && total < 60000, `${total} ms`);
});

test("done's tool_calls and provider_data reach the caller; absent ones are not invented", async () => {
  const calls = [{ id: "c", type: "function", function: { name: "f", arguments: "{}" } }];
  const withParts = script(sse([start(), ev(2, "done", { finish_reason: "tool_calls", usage: {}, tool_calls: calls, provider_data: { k: 1 } })]));
  const r1 = await streamChat({ request, fetch: withParts.fetch });
  assert.deepEqual(r1, { outcome: "done", finish_reason: "tool_calls", usage: {}, tool_calls: calls, provider_data: { k: 1 } });
  const plain = script(sse([start(), done(2)]));
  const r2 = await streamChat({ request, fetch: plain.fetch });
  assert.deepEqual(Object.keys(r2).sort(), ["finish_reason", "outcome", "usage"]);
});
