// ssegate's POST /api/chat read by the real Vercel AI SDK (`ai` 5.0.0, the newest 5.x, the newest 6.x): its own
// DefaultChatTransport, stream parser (readUIMessageStream) and Chat class. Run by tests/test_aisdk.py, which
// starts a gateway on the demo model (with /script on) and passes its URL in SSEGATE_URL.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";

import * as ai5 from "ai5";
import * as ai5latest from "ai5latest";
import * as ai6 from "ai6";

const require = createRequire(import.meta.url);
const BASE = process.env.SSEGATE_URL;
assert.ok(BASE, "SSEGATE_URL must name a running gateway");
const API = `${BASE}/api/chat`;

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

// `says` is whether the app tells ssegate its `ai` version (header X-AI-SDK-Version): without it, the oldest
// field set (ai 5.0.0's strict schema) is sent; with it, finish.finishReason too.
const SDKS = [
  { name: "ai5", sdk: ai5, version: require("ai5/package.json").version, says: false },
  { name: "ai5latest", sdk: ai5latest, version: require("ai5latest/package.json").version, says: true },
  { name: "ai6", sdk: ai6, version: require("ai6/package.json").version, says: true },
];

const script = (s) => `/script ${JSON.stringify(s)}`;
const user = (text, id = randomUUID()) => ({ id, role: "user", parts: [{ type: "text", text }] });

/** The Chat class of `sdk` over a plain in-memory state (what @ai-sdk/react's useChat wraps). */
function makeChat(sdk, init) {
  class State {
    status = "ready";
    error = undefined;
    messages = [];
    pushMessage = (m) => { this.messages = this.messages.concat(m); };
    popMessage = () => { this.messages = this.messages.slice(0, -1); };
    replaceMessage = (i, m) => { this.messages = [...this.messages.slice(0, i), m, ...this.messages.slice(i + 1)]; };
    snapshot = (v) => structuredClone(v);
  }
  class Chat extends sdk.AbstractChat {}
  return new Chat({ id: randomUUID(), ...init, state: new State() });
}

function transport(sdk, { version, says }, body = {}, extraHeaders = {}) {
  const headers = { ...(says ? { "X-AI-SDK-Version": version } : {}), ...extraHeaders };
  return new sdk.DefaultChatTransport({ api: API, headers, body });
}

/** Every message readUIMessageStream yields for `stream`, and the errors it reported. */
async function assemble(sdk, stream) {
  const errors = [];
  let last;
  for await (const message of sdk.readUIMessageStream({ stream, onError: (e) => errors.push(e) })) last = message;
  return { message: last, errors };
}

const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

for (const entry of SDKS) {
  const { name, sdk, version } = entry;

  describe(`${name} (ai@${version})`, () => {
    test("a scripted answer assembles into reasoning and text parts, with the headers of the protocol", async () => {
      let response;
      const fetchSpy = async (...args) => (response = await fetch(...args));
      const t = new sdk.DefaultChatTransport({
        api: API, fetch: fetchSpy, headers: entry.says ? { "X-AI-SDK-Version": version } : {},
      });
      const chatId = randomUUID();
      const stream = await t.sendMessages({
        chatId, trigger: "submit-message", messageId: undefined, abortSignal: undefined,
        messages: [user(script({ parts: [{ reasoning: "Let me " }, { reasoning: "think." }, "Hel", "lo ", "there"] }))],
      });
      assert.equal(response.headers.get("x-vercel-ai-ui-message-stream"), "v1");
      assert.match(response.headers.get("content-type"), /^text\/event-stream/);
      const { message, errors } = await assemble(sdk, stream);
      assert.deepEqual(errors, []);
      assert.equal(message.role, "assistant");
      assert.match(message.id, /^msg-/);
      assert.deepEqual(message.parts.map((p) => p.type), ["step-start", "reasoning", "text"]);
      assert.equal(message.parts[1].text, "Let me think.");
      assert.equal(message.parts[1].state, "done");
      assert.equal(message.parts[2].text, "Hello there");
      assert.equal(message.parts[2].state, "done");
    });

    test("the demo model's reasoning and tool call, then the client's tool output, end in the answer", async () => {
      const calls = [];
      const finishes = [];
      const chat = makeChat(sdk, {
        transport: transport(sdk, entry, { reasoning_effort: "low", tools: [WEATHER] }),
        sendAutomaticallyWhen: sdk.lastAssistantMessageIsCompleteWithToolCalls,
        onToolCall: ({ toolCall }) => {
          calls.push(toolCall);
          // not awaited: the SDK runs it after the chunk that called (awaiting it here would deadlock)
          chat.addToolResult({ tool: toolCall.toolName, toolCallId: toolCall.toolCallId, output: "18 C, light rain" });
        },
        onFinish: (event) => finishes.push(event),
      });
      await chat.sendMessage({ text: "What is the weather in Paris?" });
      assert.equal(chat.status, "ready", String(chat.error));
      assert.equal(chat.messages.length, 2, JSON.stringify(chat.messages));
      const [, answer] = chat.messages;
      assert.equal(answer.role, "assistant");
      const types = answer.parts.map((p) => p.type);
      // two steps (two requests) in one message: reasoning and the call, then reasoning and the answer
      assert.deepEqual(types, ["step-start", "reasoning", "tool-get_weather", "step-start", "reasoning", "text"]);
      assert.match(answer.parts[1].text, /^The question is/);
      const tool = answer.parts[2];
      assert.equal(tool.state, "output-available");
      assert.deepEqual(tool.input, { city: "Paris" });
      assert.equal(tool.output, "18 C, light rain");
      assert.equal(calls.length, 1);
      assert.equal(calls[0].toolName, "get_weather");
      assert.deepEqual(calls[0].input, { city: "Paris" });
      assert.match(textOf(answer), /18 C, light rain/);
      assert.equal(finishes.length, 2); // one per request: the tool call, then the answer
      if (entry.says) {
        assert.deepEqual(finishes.map((f) => f.finishReason), ["tool-calls", "stop"]);
      }
    });

    test("reconnectToStream mid-answer replays it from its start and yields the complete message", async () => {
      const t = transport(sdk, entry, { resume_grace_s: 10 });
      const chatId = randomUUID();
      const parts = [{ reasoning: "Plan." }, ...Array.from({ length: 40 }, (_, i) => `w${i} `)];
      const abort = new AbortController();
      const first = await t.sendMessages({
        chatId, trigger: "submit-message", messageId: undefined, abortSignal: abort.signal,
        messages: [user(script({ parts, delay: 0.03 }))],
      });
      // read the first few chunks, then drop the connection (a reload; the stream's grace keeps it generating)
      const reader = first.getReader();
      const seen = [];
      while (seen.filter((c) => c.type === "text-delta").length < 3) seen.push((await reader.read()).value);
      abort.abort();
      await reader.cancel().catch(() => {});
      const again = await t.reconnectToStream({ chatId });
      assert.ok(again, "a running answer resumes (not 204)");
      const { message, errors } = await assemble(sdk, again);
      assert.deepEqual(errors, []);
      assert.equal(message.id, seen[0].messageId, "the replay names the same message");
      assert.deepEqual(message.parts.map((p) => p.type), ["step-start", "reasoning", "text"]);
      assert.equal(message.parts[1].text, "Plan.");
      assert.equal(textOf(message), parts.slice(1).join(""));
      // the answer is complete now: nothing is running for this chat any more
      assert.equal(await t.reconnectToStream({ chatId }), null);
    });

    test("an upstream failure mid-answer puts the chat in the SDK's error state", async () => {
      const chat = makeChat(sdk, { transport: transport(sdk, entry) });
      await chat.sendMessage({ text: script({ parts: ["a", "b", "c"], fail_at: 2, error: "upstream_error",
        message: "the upstream reset the connection" }) });
      assert.equal(chat.status, "error");
      assert.equal(chat.error.message, "upstream_error: the upstream reset the connection");
      assert.equal(textOf(chat.messages.at(-1)), "ab"); // what arrived before the failure stays
    });

    test("a failure before the stream starts is the error's text in the SDK's error state", async () => {
      const chat = makeChat(sdk, { transport: transport(sdk, entry, { model: "ssegate-demo", temperature: 9 }) });
      await chat.sendMessage({ text: "hello" });
      assert.equal(chat.status, "error");
      assert.match(chat.error.message, /^invalid_request: temperature: /);
      const failing = makeChat(sdk, { transport: transport(sdk, entry) });
      await failing.sendMessage({ text: script({ fail_at: 0, error: "invalid_request", message: "no such tool" }) });
      assert.equal(failing.status, "error");
      assert.equal(failing.error.message, "invalid_request: no such tool");
    });

    test("Chat.resumeStream after a dropped request rebuilds the answer (useChat's resume on reload)", async () => {
      const t = transport(sdk, entry, { resume_grace_s: 10 });
      const id = randomUUID();
      const parts = Array.from({ length: 30 }, (_, i) => `r${i} `);
      const abort = new AbortController();
      const dropped = await t.sendMessages({
        chatId: id, trigger: "submit-message", messageId: undefined, abortSignal: abort.signal,
        messages: [user(script({ parts, delay: 0.03 }))],
      });
      const reader = dropped.getReader();
      await reader.read();
      abort.abort(); // the page went away
      await reader.cancel().catch(() => {});
      // the reloaded page: the app restored the user message; useChat({resume: true}) calls resumeStream
      const chat = makeChat(sdk, { id, transport: t });
      chat.messages = [user(script({ parts, delay: 0.03 }))];
      await chat.resumeStream();
      assert.equal(chat.status, "ready", String(chat.error));
      assert.equal(chat.messages.length, 2);
      assert.equal(textOf(chat.messages[1]), parts.join(""));
    });
  });
}

test("ai@5.0.0's strict parser rejects the newer fields: they are sent only to a client that says its version",
  async () => {
    const chat = makeChat(ai5, { transport: transport(ai5, { version: "6.0.0", says: true }) });
    await chat.sendMessage({ text: script({ parts: ["hi"] }) });
    assert.equal(chat.status, "error");
    assert.match(chat.error.message, /finishReason|Unrecognized key/);
  });

test("POST /api/chat/{id}/cancel stops a chat's answer: the stream ends with an abort chunk", async () => {
  const t = transport(ai6, SDKS[2], { resume_grace_s: 10 });
  const chatId = randomUUID();
  const stream = await t.sendMessages({
    chatId, trigger: "submit-message", messageId: undefined, abortSignal: undefined,
    messages: [user(script({ parts: Array.from({ length: 200 }, (_, i) => `c${i} `), delay: 0.02 }))],
  });
  const reader = stream.getReader();
  const chunks = [];
  while (chunks.at(-1)?.type !== "text-delta") chunks.push((await reader.read()).value);
  const cancelled = await fetch(`${API}/${encodeURIComponent(chatId)}/cancel`, { method: "POST" });
  assert.equal(cancelled.status, 202);
  assert.equal((await cancelled.json()).status, "cancelling");
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
  }
  const types = chunks.map((c) => c.type);
  assert.deepEqual(types.slice(-3), ["text-end", "finish-step", "abort"]);
  assert.ok(chunks.filter((c) => c.type === "text-delta").length < 200);
  const again = await fetch(`${API}/${encodeURIComponent(chatId)}/cancel`, { method: "POST" });
  assert.equal(again.status, 204);
});
