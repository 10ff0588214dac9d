// The chat page's messages as data, and how they go upstream. No DOM: the page renders these objects, the
// node tests drive them with event sequences.
//
// A conversation is a list of messages:
//   user:       {id, role: "user", content}
//   assistant:  {id, role: "assistant", content, state, model?, reasoning?, reasoningStart?, reasoningMs?,
//                tool_calls?, provider_data?, finishReason?, usage?, error?, resumable?, streamId?, lastSeq?}
// An assistant message's state is one of
//   streaming    being generated (streamId/lastSeq say where to resume it after a reload or a drop)
//   done         finished normally
//   cancelled    the person pressed Stop (what arrived is kept)
//   error        failed before anything arrived: shown as the error in place of the answer, never sent upstream
//   interrupted  failed after some output: the partial answer is kept (and sent upstream with the next turn)
//
// Going upstream (CONTRACT §3.1) an assistant message carries back exactly what it received: its text,
// `reasoning`, `tool_calls` (OpenAI shape, as `done` repeated them whole) and `provider_data` (opaque,
// unchanged). Tools are never run by the page: a tool call is shown, not executed.

/** What "Continue" asks for after an interrupted or stopped answer (sent upstream, not shown). */
export const CONTINUE_PROMPT =
  "Continue your previous answer exactly where it stopped. Do not repeat anything you already wrote.";

/** A short random id (base36), for messages and chats; not a secret. */
export function newId() {
  const bytes = new Uint8Array(10);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => (b % 36).toString(36)).join("");
}

export function userMessage(content) {
  return { id: newId(), role: "user", content };
}

export function assistantMessage() {
  return { id: newId(), role: "assistant", content: "", state: "streaming", streamId: null, lastSeq: 0 };
}

/** Did any part of the answer arrive (text, reasoning or a tool call)? */
export function hasOutput(msg) {
  return Boolean(msg.content || msg.reasoning || (msg.tool_calls && msg.tool_calls.length));
}

/** Reasoning ends with the first output of another kind, or with the answer. */
function endReasoning(msg, now) {
  if (msg.reasoningStart !== undefined && msg.reasoningMs === undefined) {
    msg.reasoningMs = Math.max(0, now - msg.reasoningStart);
  }
}

export function addText(msg, text, now = Date.now()) {
  if (text) endReasoning(msg, now);
  msg.content += text;
}

export function addReasoning(msg, text, now = Date.now()) {
  if (msg.reasoningStart === undefined) msg.reasoningStart = now;
  msg.reasoning = (msg.reasoning || "") + text;
}

function blankCall(id = "", name = "") {
  return { id, type: "function", function: { name, arguments: "" } };
}

export function openToolCall(msg, { index, id, name }, now = Date.now()) {
  endReasoning(msg, now);
  msg.tool_calls = msg.tool_calls || [];
  while (msg.tool_calls.length < index) msg.tool_calls.push(blankCall());
  const existing = msg.tool_calls[index];
  if (existing) {
    existing.id = id || existing.id;
    existing.function.name = name || existing.function.name;
  } else {
    msg.tool_calls[index] = blankCall(id, name);
  }
}

export function addToolArguments(msg, { index, arguments: piece }) {
  msg.tool_calls = msg.tool_calls || [];
  while (msg.tool_calls.length <= index) msg.tool_calls.push(blankCall());
  msg.tool_calls[index].function.arguments += piece;
}

/**
 * streamChat() handlers that write the parts of an answer into `msg` as they arrive: text, reasoning, tool
 * calls and their argument pieces. `skip()` true drops a part (the answer was stopped); `after(kind)` runs
 * after each part that was applied (the page redraws).
 */
export function partHandlers(msg, { skip = () => false, after = () => {}, now = () => Date.now() } = {}) {
  const apply = (kind, fn) => (value) => {
    if (skip()) return;
    fn(value);
    after(kind);
  };
  return {
    onDelta: apply("text", (text) => addText(msg, text, now())),
    onReasoning: apply("reasoning", (text) => addReasoning(msg, text, now())),
    onToolCall: apply("tool_call", (call) => openToolCall(msg, call, now())),
    onToolCallDelta: apply("tool_call_delta", (piece) => addToolArguments(msg, piece)),
  };
}

/** Whole tool calls as `done` repeats them, checked for shape; null when the list is not usable. */
export function wholeToolCalls(list) {
  if (!Array.isArray(list)) return null;
  const out = [];
  for (const c of list) {
    if (!c || typeof c !== "object" || !c.function || typeof c.function !== "object") return null;
    const name = c.function.name;
    const args = c.function.arguments;
    if (typeof name !== "string") return null;
    out.push({
      id: typeof c.id === "string" ? c.id : "",
      type: "function",
      function: { name, arguments: typeof args === "string" ? args : JSON.stringify(args ?? {}) },
    });
  }
  return out;
}

/** The `done` event: the answer is complete (or was cancelled on the server). */
export function finishAnswer(msg, result, now = Date.now()) {
  endReasoning(msg, now);
  const calls = wholeToolCalls(result.tool_calls);
  if (calls) msg.tool_calls = calls; // `done` is the authority: it repeats every call whole
  if (result.provider_data !== undefined) msg.provider_data = result.provider_data;
  msg.finishReason = result.finish_reason;
  if (result.usage) msg.usage = result.usage;
  msg.state = result.finish_reason === "cancelled" ? "cancelled" : "done";
  delete msg.error;
  delete msg.resumable;
}

/** The person stopped it. */
export function stopAnswer(msg, now = Date.now()) {
  endReasoning(msg, now);
  msg.finishReason = "cancelled";
  msg.state = "cancelled";
  delete msg.error;
  delete msg.resumable;
}

/** It failed: an error in place of the answer when nothing arrived, else a kept, interrupted answer. */
export function failAnswer(msg, error, { resumable = false } = {}, now = Date.now()) {
  endReasoning(msg, now);
  msg.error = { code: String(error.code || "unknown"), message: String(error.message || ""), retryable: Boolean(error.retryable) };
  msg.state = hasOutput(msg) ? "interrupted" : "error";
  if (resumable) msg.resumable = true;
  else delete msg.resumable;
}

/** One message as sent upstream. */
export function apiMessage(msg) {
  if (msg.role !== "assistant") return { role: msg.role, content: msg.content };
  const out = { role: "assistant", content: msg.content || "" };
  if (msg.reasoning) out.reasoning = msg.reasoning;
  if (msg.tool_calls && msg.tool_calls.length) out.tool_calls = msg.tool_calls;
  if (msg.provider_data !== undefined) out.provider_data = msg.provider_data;
  return out;
}

/**
 * The conversation as sent upstream. Answers that failed before any output, that are still streaming, or that
 * hold neither text nor tool calls are left out. Two user messages in a row (a question whose answer failed,
 * then another) go as one, so the upstream never sees two consecutive user turns.
 */
export function conversationForApi(messages) {
  const out = [];
  for (const m of messages) {
    if (m.role === "assistant") {
      if (m.state === "streaming" || m.state === "error") continue;
      if (!m.content && !(m.tool_calls && m.tool_calls.length)) continue;
      out.push(apiMessage(m));
    } else if (m.role === "user") {
      const prev = out[out.length - 1];
      if (prev && prev.role === "user") prev.content = `${prev.content}\n\n${m.content}`;
      else out.push({ role: "user", content: m.content });
    }
  }
  return out;
}

/** "Thinking…" while reasoning streams, then "Thought for 4 s". */
export function reasoningLabel(msg) {
  if (msg.reasoningMs === undefined) return msg.state === "streaming" ? "Thinking…" : "Reasoning";
  const s = Math.round(msg.reasoningMs / 1000);
  return s < 1 ? "Thought for a moment" : `Thought for ${s} s`;
}

/** A tool call's arguments for reading: pretty JSON when they parse, else the raw text so far. */
export function formatArguments(text) {
  if (!text) return "";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** A chat's title from its first question: one line, at most `max` characters. */
export function titleFrom(text, max = 48) {
  const line = text.replace(/\s+/g, " ").trim();
  if (!line) return "New chat";
  return line.length > max ? `${line.slice(0, max - 1).trimEnd()}…` : line;
}
