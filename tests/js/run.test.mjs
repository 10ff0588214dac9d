// One answer's life (run.js) against a scripted fake fetch: statistics, saves, Stop (also before the stream
// has an id), a page going away, and how each ending settles the message (run: node --test tests/js/).
import { test } from "node:test";
import assert from "node:assert/strict";

import * as A from "../../src/ssegate/web/answer.js";
import { Run } from "../../src/ssegate/web/run.js";

const enc = new TextEncoder();
const SID = "sid_run_0001";
const ev = (seq, type, data) => `id: ${SID}:${seq}\n${type ? `event: ${type}\n` : ""}data: ${JSON.stringify(data)}\n\n`;
const tick = (ms = 1) => new Promise((r) => setTimeout(r, ms));

/** A body the test feeds by hand: push(text), end(), fail(). */
function manualBody() {
  let controller;
  const body = new ReadableStream({
    start(c) {
      controller = c;
    },
  });
  return {
    body,
    push: (text) => controller.enqueue(enc.encode(text)),
    end: () => controller.close(),
    fail: () => controller.error(new TypeError("network error")),
  };
}

/**
 * A fake fetch: the POST answers when `answer()` is called (so a test can act before the stream is
 * committed); cancel requests are recorded. An aborted signal rejects pending and later reads.
 */
function gateway() {
  const calls = [];
  const stream = manualBody();
  let release;
  const committed = new Promise((r) => {
    release = r;
  });
  async function fetch(url, init = {}) {
    calls.push({ url, method: init.method || "GET", body: init.body ? JSON.parse(init.body) : null });
    if (url.endsWith("/cancel")) return new Response(JSON.stringify({ status: "cancelling" }), { status: 202 });
    await committed;
    if (init.signal?.aborted) throw new DOMException("aborted", "AbortError");
    init.signal?.addEventListener("abort", () => {
      try {
        stream.fail();
      } catch {
        // already closed
      }
    });
    return new Response(stream.body, { status: 200, headers: { "X-Stream-Id": SID } });
  }
  return { fetch, calls, stream, answer: () => release() };
}

function newRun(gw, extra = {}) {
  const chat = { id: "c1", messages: [A.userMessage("hi")] };
  const msg = A.assistantMessage();
  chat.messages.push(msg);
  const seen = { saves: [], phases: [], ended: [], changed: 0 };
  const run = new Run({
    chat,
    msg,
    request: { messages: [{ role: "user", content: "hi" }], resume_grace_s: 30 },
    apiKey: "k",
    saveEveryMs: 5,
    streamOptions: { fetch: gw.fetch, backoff: [1] },
    hooks: {
      save: (r) => seen.saves.push({ content: r.msg.content, lastSeq: r.msg.lastSeq, state: r.msg.state }),
      phase: (r) => seen.phases.push(r.phase),
      changed: () => seen.changed++,
      ended: (r, ending) => seen.ended.push([r.phase, ending]),
    },
    ...extra,
  });
  return { run, msg, seen };
}

test("a whole answer: phases, statistics, saves that always pair text with its seq", async () => {
  const gw = gateway();
  const { run, msg, seen } = newRun(gw);
  const done = run.start();
  gw.answer();
  gw.stream.push(ev(1, "start", { stream_id: SID, model: "m" }));
  for (let i = 0; i < 5; i++) {
    gw.stream.push(ev(i + 2, null, { delta: `w${i} ` }));
    await tick(8);
  }
  gw.stream.push(ev(7, "done", { finish_reason: "stop", usage: { completion_tokens: 5 } }));
  await done;
  assert.equal(msg.state, "done");
  assert.equal(msg.content, "w0 w1 w2 w3 w4 ");
  assert.equal(msg.streamId, SID);
  assert.equal(msg.model, "m");
  assert.deepEqual(seen.phases.slice(0, 2), ["connecting", "streaming"]);
  assert.deepEqual(seen.ended, [["done", ""]]);
  assert.equal(run.detail, "· 5 tokens");
  assert.ok(run.ttftMs >= 0 && run.tps > 0 && run.deltas === 5);
  assert.equal(seen.changed, 5);
  // every save holds the text of exactly the events up to its seq (seq 1 is `start`, then one word each)
  for (const s of seen.saves.filter((x) => x.state === "streaming" && x.lastSeq > 1)) {
    assert.equal(s.content, Array.from({ length: s.lastSeq - 1 }, (_, i) => `w${i} `).join(""));
  }
  assert.equal(seen.saves.at(-1).state, "done");
});

test("Stop with a stream id: the explicit cancel, then the connection goes", async () => {
  const gw = gateway();
  const { run, msg, seen } = newRun(gw);
  const done = run.start();
  gw.answer();
  gw.stream.push(ev(1, "start", { stream_id: SID }) + ev(2, null, { delta: "par" }));
  await tick(10);
  run.stop();
  assert.equal(msg.state, "cancelled");
  assert.deepEqual(seen.ended, [["cancelled", "Stopped."]]);
  await done;
  const cancels = gw.calls.filter((c) => c.url.endsWith("/cancel"));
  assert.deepEqual(cancels.map((c) => [c.url, c.method]), [[`/v1/streams/${SID}/cancel`, "POST"]]);
  assert.equal(msg.content, "par");
});

test("Stop before the stream has an id: it cancels as soon as the id arrives", async () => {
  const gw = gateway();
  const { run, msg, seen } = newRun(gw);
  const done = run.start();
  await tick(5);
  run.stop(); // the server has not committed the stream yet: no id to cancel
  assert.equal(msg.state, "cancelled");
  assert.equal(gw.calls.filter((c) => c.url.endsWith("/cancel")).length, 0);
  gw.answer(); // the server commits: the response (and its X-Stream-Id) arrives
  gw.stream.push(ev(1, "start", { stream_id: SID }) + ev(2, null, { delta: "late" }));
  await done;
  assert.deepEqual(gw.calls.filter((c) => c.url.endsWith("/cancel")).map((c) => c.url), [`/v1/streams/${SID}/cancel`]);
  assert.equal(msg.content, ""); // nothing written after Stop
  assert.equal(msg.state, "cancelled");
  assert.deepEqual(seen.ended, [["cancelled", "Stopped."]]);
});

test("a page going away: saved where it was, and the dying connection is not recorded as a failure", async () => {
  const gw = gateway();
  const { run, msg, seen } = newRun(gw, { streamOptions: { fetch: gw.fetch, backoff: [] } });
  const done = run.start();
  gw.answer();
  gw.stream.push(ev(1, "start", { stream_id: SID }) + ev(2, null, { delta: "half" }));
  await tick(10);
  run.detach();
  assert.deepEqual(seen.saves.at(-1), { content: "half", lastSeq: 2, state: "streaming" });
  gw.stream.fail(); // the browser tears the connection down
  await done;
  assert.equal(msg.state, "streaming"); // so the reloaded page resumes it
  assert.deepEqual(seen.ended, []);
});

test("a failure before any output is an error; after some, interrupted; a drop with an id is resumable", async () => {
  const e1 = gateway();
  const r1 = newRun(e1);
  const d1 = r1.run.start();
  e1.answer();
  e1.stream.push(ev(1, "start", { stream_id: SID }) + ev(2, "error", { error: { code: "upstream_error", message: "x", retryable: true } }));
  await d1;
  assert.equal(r1.msg.state, "error");
  assert.match(r1.seen.ended[0][1], /^Error: The model provider returned an error\./);

  const e2 = gateway();
  const r2 = newRun(e2, { streamOptions: { fetch: e2.fetch, backoff: [] } }); // no reconnects: a drop is final
  const d2 = r2.run.start();
  e2.answer();
  e2.stream.push(ev(1, "start", { stream_id: SID }) + ev(2, null, { delta: "some" }));
  await tick(10);
  e2.stream.fail();
  await d2;
  assert.equal(r2.msg.state, "interrupted");
  assert.equal(r2.msg.resumable, true);
  assert.equal(r2.msg.content, "some");
  assert.match(r2.seen.ended[0][1], /^Interrupted: /);
});
