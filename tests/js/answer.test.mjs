// Every part of an answer (CONTRACT §3.1) through the page's real stream reader into its message model,
// and back out as the next request (run: node --test tests/js/).
import { test } from "node:test";
import assert from "node:assert/strict";

import * as A from "../../src/ssegate/web/answer.js";
import { streamChat } from "../../src/ssegate/web/stream.js";

const enc = new TextEncoder();
const SID = "s_0123456789abcdef";

/** The wire form of a list of [type, data] events, numbered from seq 1. */
function wire(events) {
  return events
    .map(([type, data], i) => `id: ${SID}:${i + 1}\n${type ? `event: ${type}\n` : ""}data: ${JSON.stringify(data)}\n\n`)
    .join("");
}

/** A fake fetch answering one POST with `text`, cut into small pieces (as a network would). */
function serve(text, piece = 7) {
  const calls = [];
  async function fetch(url, init = {}) {
    calls.push({ url, body: init.body ? JSON.parse(init.body) : null });
    let at = 0;
    const body = new ReadableStream({
      pull(controller) {
        if (at >= text.length) return controller.close();
        controller.enqueue(enc.encode(text.slice(at, at + piece)));
        at += piece;
      },
    });
    return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream", "X-Stream-Id": SID } });
  }
  return { fetch, calls };
}

/** Play `events` into a fresh assistant message the way the page does; returns it and what the run saw. */
async function play(events, { clock = [0] } = {}) {
  const msg = A.assistantMessage();
  const kinds = [];
  const now = () => clock[0];
  const { fetch, calls } = serve(wire(events));
  const result = await streamChat({
    request: { messages: [{ role: "user", content: "weather?" }], resume_grace_s: 30 },
    fetch,
    handlers: {
      ...A.partHandlers(msg, {
        now,
        after: (kind) => {
          kinds.push(kind);
          clock[0] += 1000; // each part a second later
        },
      }),
      onStart: (data) => {
        msg.model = data.model;
      },
    },
  });
  if (result.outcome === "done") A.finishAnswer(msg, result, now());
  return { msg, kinds, result, calls };
}

const start = ["start", { stream_id: SID, model: "m1" }];
const usage = { prompt_tokens: 9, completion_tokens: 5, estimated: false };

test("reasoning, then text: reasoning is timed until the first text", async () => {
  const { msg, kinds } = await play([
    start,
    ["reasoning", { delta: "The user wants " }],
    ["reasoning", { delta: "a greeting." }],
    [null, { delta: "Hel" }],
    [null, { delta: "lo" }],
    ["done", { finish_reason: "stop", usage }],
  ]);
  assert.deepEqual(kinds, ["reasoning", "reasoning", "text", "text"]);
  assert.equal(msg.reasoning, "The user wants a greeting.");
  assert.equal(msg.content, "Hello");
  assert.equal(msg.reasoningMs, 2000); // started at 0; the first text came after two parts, at 2000
  assert.equal(A.reasoningLabel(msg), "Thought for 2 s");
  assert.equal(msg.state, "done");
  assert.equal(msg.model, "m1");
});

test("a reasoning label while it streams", () => {
  const msg = A.assistantMessage();
  A.addReasoning(msg, "hmm", 0);
  assert.equal(A.reasoningLabel(msg), "Thinking…");
  A.addText(msg, "ok", 400);
  assert.equal(A.reasoningLabel(msg), "Thought for a moment");
});

test("tool calls assemble from pieces, and `done` repeats them whole", async () => {
  const { msg, result } = await play([
    start,
    ["reasoning", { delta: "Need the weather tool." }],
    ["tool_call", { index: 0, id: "call_8f2", name: "get_weather" }],
    ["tool_call_delta", { index: 0, arguments: '{"city": "Pa' }],
    ["tool_call", { index: 1, id: "call_9a1", name: "get_time" }],
    ["tool_call_delta", { index: 1, arguments: '{"tz": "CET"}' }],
    ["tool_call_delta", { index: 0, arguments: 'ris"}' }],
    [
      "done",
      {
        finish_reason: "tool_calls",
        usage,
        tool_calls: [
          { id: "call_8f2", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris"}' } },
          { id: "call_9a1", type: "function", function: { name: "get_time", arguments: '{"tz": "CET"}' } },
        ],
        provider_data: { anthropic: { signature: "sig==", blocks: [1, 2] } },
      },
    ],
  ]);
  assert.equal(result.finish_reason, "tool_calls");
  assert.equal(msg.state, "done");
  assert.equal(msg.content, "");
  assert.equal(msg.reasoningMs, 1000);
  assert.deepEqual(msg.tool_calls.map((c) => [c.id, c.function.name, c.function.arguments]), [
    ["call_8f2", "get_weather", '{"city": "Paris"}'],
    ["call_9a1", "get_time", '{"tz": "CET"}'],
  ]);
  assert.deepEqual(msg.provider_data, { anthropic: { signature: "sig==", blocks: [1, 2] } });
  assert.equal(A.formatArguments(msg.tool_calls[0].function.arguments), '{\n  "city": "Paris"\n}');
});

test("the pieces alone (no whole calls in `done`) still make the calls", async () => {
  const { msg } = await play([
    start,
    ["tool_call", { index: 0, id: "c1", name: "lookup" }],
    ["tool_call_delta", { index: 0, arguments: '{"q": ' }],
    ["tool_call_delta", { index: 0, arguments: '"ssegate"}' }],
    ["done", { finish_reason: "tool_calls", usage }],
  ]);
  assert.deepEqual(msg.tool_calls, [{ id: "c1", type: "function", function: { name: "lookup", arguments: '{"q": "ssegate"}' } }]);
  assert.equal(msg.provider_data, undefined);
});

test("arguments shown while streaming are the raw text so far", () => {
  assert.equal(A.formatArguments('{"city": "Pa'), '{"city": "Pa');
  assert.equal(A.formatArguments(""), "");
});

test("the next request carries reasoning, tool_calls and provider_data back unchanged", async () => {
  const providerData = { opaque: ["x", { y: 1 }] };
  const { msg } = await play([
    start,
    ["reasoning", { delta: "think" }],
    [null, { delta: "Calling." }],
    ["tool_call", { index: 0, id: "call_1", name: "f" }],
    ["tool_call_delta", { index: 0, arguments: "{}" }],
    ["done", { finish_reason: "tool_calls", usage, provider_data: providerData }],
  ]);
  const conversation = [A.userMessage("weather?"), msg, A.userMessage("and tomorrow?")];
  assert.deepEqual(A.conversationForApi(conversation), [
    { role: "user", content: "weather?" },
    {
      role: "assistant",
      content: "Calling.",
      reasoning: "think",
      tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: "{}" } }],
      provider_data: providerData,
    },
    { role: "user", content: "and tomorrow?" },
  ]);
});

test("a plain answer goes back as role and content only", async () => {
  const { msg, calls } = await play([start, [null, { delta: "Hi." }], ["done", { finish_reason: "stop", usage }]]);
  assert.deepEqual(A.apiMessage(msg), { role: "assistant", content: "Hi." });
  assert.equal(calls[0].body.resume_grace_s, 30);
});

test("unknown event types are skipped, their seq still counts", async () => {
  const { msg } = await play([
    start,
    ["usage_update", { whatever: 1 }],
    [null, { delta: "ok" }],
    ["done", { finish_reason: "stop", usage }],
  ]);
  assert.equal(msg.content, "ok");
  assert.equal(msg.state, "done");
});

test("malformed parts are ignored, not fatal", async () => {
  const { msg } = await play([
    start,
    ["tool_call", { index: -1, id: "x", name: "bad" }],
    ["tool_call_delta", { index: 0, arguments: 42 }],
    ["reasoning", { text: "wrong field" }],
    [null, { delta: "fine" }],
    ["done", { finish_reason: "stop", usage, tool_calls: "not a list" }],
  ]);
  assert.equal(msg.content, "fine");
  assert.equal(msg.tool_calls, undefined);
  assert.equal(msg.reasoning, undefined);
});

test("an error before any output is an error in place of the answer, never sent upstream", () => {
  const msg = A.assistantMessage();
  A.failAnswer(msg, { code: "upstream_error", message: "502", retryable: true });
  assert.equal(msg.state, "error");
  const conversation = [A.userMessage("q1"), msg];
  assert.deepEqual(A.conversationForApi(conversation), [{ role: "user", content: "q1" }]);
});

test("an error after some output keeps it: interrupted, and sent upstream as it is", () => {
  const msg = A.assistantMessage();
  A.addText(msg, "The answer sta");
  A.failAnswer(msg, { code: "upstream_timeout", message: "idle", retryable: true });
  assert.equal(msg.state, "interrupted");
  assert.equal(msg.content, "The answer sta");
  assert.deepEqual(A.conversationForApi([A.userMessage("q"), msg]).at(-1), { role: "assistant", content: "The answer sta" });
});

test("reasoning alone that then failed is interrupted (it did arrive) but not sent as an empty answer", () => {
  const msg = A.assistantMessage();
  A.addReasoning(msg, "thinking", 0);
  A.failAnswer(msg, { code: "upstream_error" }, {}, 10);
  assert.equal(msg.state, "interrupted");
  assert.deepEqual(A.conversationForApi([A.userMessage("q"), msg]), [{ role: "user", content: "q" }]);
});

test("never two user messages in a row upstream: a failed turn then a new question go as one", () => {
  const failed = A.assistantMessage();
  A.failAnswer(failed, { code: "network_error" });
  const stoppedEarly = A.assistantMessage();
  A.stopAnswer(stoppedEarly);
  const api = A.conversationForApi([
    A.userMessage("first"),
    failed,
    A.userMessage("second"),
    stoppedEarly,
    A.userMessage("third"),
  ]);
  assert.deepEqual(api, [{ role: "user", content: "first\n\nsecond\n\nthird" }]);
});

test("a streaming answer is not part of the conversation sent upstream", () => {
  const msg = A.assistantMessage();
  A.addText(msg, "partial");
  assert.deepEqual(A.conversationForApi([A.userMessage("q"), msg]), [{ role: "user", content: "q" }]);
});

test("a resumable drop is marked so Retry resumes instead of asking again", () => {
  const msg = A.assistantMessage();
  msg.streamId = SID;
  A.addText(msg, "so far");
  A.failAnswer(msg, { code: "connection_lost" }, { resumable: true });
  assert.equal(msg.state, "interrupted");
  assert.equal(msg.resumable, true);
  A.finishAnswer(msg, { finish_reason: "stop", usage: null });
  assert.equal(msg.resumable, undefined);
  assert.equal(msg.error, undefined);
});

test("a server-side cancel ends as cancelled", () => {
  const msg = A.assistantMessage();
  A.addText(msg, "x");
  A.finishAnswer(msg, { finish_reason: "cancelled", usage: { completion_tokens: 1 } });
  assert.equal(msg.state, "cancelled");
});

test("titles: one line, shortened", () => {
  assert.equal(A.titleFrom("  What is\n\nSSE?  "), "What is SSE?");
  assert.equal(A.titleFrom("x".repeat(100)).length, 48);
  assert.equal(A.titleFrom("   "), "New chat");
});

test("ids are distinct", () => {
  const ids = new Set(Array.from({ length: 1000 }, () => A.newId()));
  assert.equal(ids.size, 1000);
});
